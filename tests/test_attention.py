import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlm.config import ModelConfig
from jaxlm.nn.attention import (
    MultiHeadAttention,
    causal_mask,
    dot_product_attention,
    normalize_heads,
    padding_mask,
)

CFG = ModelConfig(vocab_size=10, hidden_size=16, num_layers=1, num_heads=2,
                  intermediate_size=8, attention_dropout=0.0)


def _np_attention(q, k, v, keep):
    """Reference: softmax over the kept keys of q.k / sqrt(H), per batch and head."""
    scores = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    scores = np.where(keep, scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", p, v)


def test_attention_matches_numpy_with_padding():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(2, 5, 3, 4)).astype(np.float32) for _ in range(3))
    attention_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    mask = padding_mask(jnp.asarray(attention_mask))
    assert mask.shape == (2, 1, 1, 5)
    out = dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), mask,
                                nnx.Dropout(0.0))
    expected = _np_attention(q, k, v, attention_mask[:, None, None, :].astype(bool))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_padded_keys_have_no_influence():
    rng = np.random.default_rng(1)
    mha = MultiHeadAttention(CFG, rngs=nnx.Rngs(0))
    x = rng.normal(size=(1, 6, 16)).astype(np.float32)
    mask = padding_mask(jnp.array([[1, 1, 1, 1, 0, 0]]))
    y = mha(jnp.asarray(x), mask)
    x[0, 4:] = rng.normal(size=(2, 16)) * 100
    y2 = mha(jnp.asarray(x), mask)
    np.testing.assert_allclose(y[:, :4], y2[:, :4], atol=1e-5)


def test_causal_mask_is_lower_triangular():
    m = np.asarray(causal_mask(4))[0, 0]
    expected = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(m, expected)


def test_cross_attention_reads_the_context_length():
    mha = MultiHeadAttention(CFG, rngs=nnx.Rngs(0))
    y = mha(jnp.ones((2, 3, 16)), jnp.ones((2, 1, 1, 7), bool), context_BSD=jnp.ones((2, 7, 16)))
    assert y.shape == (2, 3, 16)


def _np_normalize(x):
    """Reference QK-norm: zero mean, unit variance over the last axis."""
    x = x - x.mean(-1, keepdims=True)
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6)


def test_normalize_heads_bounds_the_attention_logits():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(2, 5, 3, 8)) * 50 + 7).astype(np.float32)
    y = np.asarray(normalize_heads(jnp.asarray(x)))
    np.testing.assert_allclose(y, _np_normalize(x), atol=1e-5)
    logits = np.einsum("btnh,bsnh->bnts", y, y) / np.sqrt(8)
    assert np.abs(logits).max() <= np.sqrt(8) + 1e-4


def test_qk_norm_attention_matches_numpy():
    """With model.qk_norm, the projected queries and keys are normalized per head before
    the scores; values are not."""
    mha = MultiHeadAttention(dataclasses.replace(CFG, qk_norm=True), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 5, 16)).astype(np.float32)
    attention_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    y = mha(jnp.asarray(x), padding_mask(jnp.asarray(attention_mask)))

    def project(linear):
        return (np.einsum("btd,dnh->btnh", x, np.asarray(linear.kernel[...]))
                + np.asarray(linear.bias[...]))

    q, k, v = _np_normalize(project(mha.query)), _np_normalize(project(mha.key)), project(
        mha.value)
    heads = _np_attention(q, k, v, attention_mask[:, None, None, :].astype(bool))
    expected = (np.einsum("btnh,nhd->btd", heads, np.asarray(mha.output.kernel[...]))
                + np.asarray(mha.output.bias[...]))
    np.testing.assert_allclose(y, expected, atol=1e-4)
