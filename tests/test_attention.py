"""Multi-head attention against numpy, and each attention implementation against the
einsums: forward and gradient, for BERT (padding), GPT (causal with left padding) and cached
decoding."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlm.config import ConfigError, ModelConfig
from jaxlm.models.bert import BertModel
from jaxlm.models.gpt import GPTLanguageModel
from jaxlm.nn.attention import (
    MultiHeadAttention,
    cache_mask,
    causal_mask,
    dot_product_attention,
    normalize_heads,
    padding_mask,
)
from jaxlm.nn.positions import padded_positions

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
    assert mask.dense.shape == (2, 1, 1, 5)
    out = dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), mask.dense,
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
    y = mha(jnp.ones((2, 3, 16)), padding_mask(jnp.ones((2, 7))),
            context_BSD=jnp.ones((2, 7, 16)))
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


KERNELS = ["dot_product_attention", "pallas_tpu"]  # each against "xla", the einsums


def _with_impl(module_cls, config, impl, *args):
    """A model built by `module_cls(config with attention_impl=impl)`, with the parameters
    of seed 0 (the implementation changes no parameter)."""
    return module_cls(dataclasses.replace(config, attention_impl=impl), *args,
                      rngs=nnx.Rngs(0))


def _outputs_and_grads(model, loss_and_outputs):
    """(outputs, d loss / d params) of `loss_and_outputs(model) -> (loss, outputs)`."""
    graph, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        return loss_and_outputs(nnx.merge(graph, p, rest))

    (_, outputs), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return outputs, jax.tree.leaves(grads)


def _assert_impl_equals_einsums(module_cls, config, impl, loss_and_outputs, real):
    """Outputs at the real positions and every parameter's gradient with `impl` equal
    those with "xla" (float32: 1e-5; for gradients, relative to each array's largest entry,
    since the two sum in different orders)."""
    expected, expected_grads = _outputs_and_grads(_with_impl(module_cls, config, "xla"),
                                                  loss_and_outputs)
    out, grads = _outputs_and_grads(_with_impl(module_cls, config, impl), loss_and_outputs)
    np.testing.assert_allclose(np.where(real, out, 0), np.where(real, expected, 0), atol=1e-5)
    for g, e in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(e).max()))


@pytest.mark.parametrize("impl", KERNELS)
def test_bert_with_padding_equals_the_einsums(impl, tiny_config):
    config = dataclasses.replace(tiny_config, hidden_dropout=0.0, attention_dropout=0.0)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, config.vocab_size, (2, 16)))
    attention_mask = jnp.asarray(np.arange(16)[None] < np.array([[16], [9]]))
    real = np.asarray(attention_mask)[..., None]

    def loss_and_outputs(model):
        sequence, pooled = model(ids, jnp.zeros_like(ids), attention_mask)
        return jnp.sum(jnp.where(real, sequence, 0.0) ** 2) + jnp.sum(pooled), sequence

    _assert_impl_equals_einsums(BertModel, config, impl, loss_and_outputs, real)


@pytest.mark.parametrize("impl", KERNELS)
def test_gpt_causal_with_left_padding_equals_the_einsums(impl, tiny_config):
    config = dataclasses.replace(tiny_config, kind="gpt", hidden_dropout=0.0,
                                 attention_dropout=0.0)
    rng = np.random.default_rng(1)
    ids = jnp.asarray(rng.integers(0, config.vocab_size, (2, 16)))
    attention_mask = jnp.asarray(np.arange(16)[None] >= np.array([[0], [5]]))  # left-padded
    real = np.asarray(attention_mask)[..., None]

    def loss_and_outputs(model):
        logits = model(ids, attention_mask)
        return jnp.sum(jnp.where(real, jax.nn.log_softmax(logits), 0.0)), logits

    _assert_impl_equals_einsums(GPTLanguageModel, config, impl, loss_and_outputs, real)


@pytest.mark.parametrize("impl", KERNELS)
def test_cached_decoding_equals_the_einsums(impl, tiny_config):
    """A left-padded prompt prefilled into the cache, then two tokens decoded one by one."""
    config = dataclasses.replace(tiny_config, kind="gpt", hidden_dropout=0.0,
                                 attention_dropout=0.0)
    ids = np.random.default_rng(2).integers(0, config.vocab_size, (2, 8))
    valid = np.zeros((2, 10), bool)
    valid[0, :6], valid[1, 3:6] = True, True
    positions = padded_positions(jnp.asarray(valid[:, :8]))
    logits = {}
    for name in ("xla", impl):
        model = _with_impl(GPTLanguageModel, config, name)
        cache = model.init_cache(2, 10)
        steps = [model.decode(jnp.asarray(ids[:, :6]), positions[:, :6],
                              cache_mask(jnp.asarray(valid), jnp.int32(0), 6), cache,
                              jnp.int32(0))]
        for t in (6, 7):
            valid[:, t] = True
            steps.append(model.decode(jnp.asarray(ids[:, t:t + 1]), positions[:, t:t + 1],
                                      cache_mask(jnp.asarray(valid), jnp.int32(t), 1),
                                      steps[-1][1], jnp.int32(t)))
        valid[:, 6:] = False
        logits[name] = [np.array(step[0]) for step in steps]
    logits[impl][0][1, :3] = logits["xla"][0][1, :3] = 0.0  # the padded prompt positions
    for out, expected in zip(logits[impl], logits["xla"], strict=True):
        np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("impl", KERNELS)
def test_a_kernel_refuses_attention_dropout_in_training(impl, tiny_config):
    model = _with_impl(BertModel, tiny_config, impl)  # attention_dropout 0.1
    ids = jnp.ones((1, 8), jnp.int32)
    with pytest.raises(ValueError, match=f"attention_impl={impl} has no dropout"):
        model(ids, jnp.zeros_like(ids), jnp.ones_like(ids))
    model.eval()
    assert model(ids, jnp.zeros_like(ids), jnp.ones_like(ids))[0].shape == (1, 8, 32)


def test_an_unknown_implementation_is_named():
    with pytest.raises(ConfigError, match="model.attention_impl: 'flash'"):
        ModelConfig(attention_impl="flash")
