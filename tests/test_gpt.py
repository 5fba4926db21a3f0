"""The causal decoder LM: masks, padding, KV-cache decoding, initialization."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlm.config import ModelConfig
from jaxlm.models.gpt import GPTLanguageModel
from jaxlm.nn.attention import cache_mask
from jaxlm.nn.positions import padded_positions


@pytest.fixture
def gpt_config(tiny_config) -> ModelConfig:
    return dataclasses.replace(tiny_config, kind="gpt", activation="gelu_tanh",
                               layer_norm_eps=1e-5, hidden_dropout=0.0, attention_dropout=0.0)


def _model(config, seed=0):
    return GPTLanguageModel(config, rngs=nnx.Rngs(params=seed, dropout=seed))


def test_future_tokens_never_change_the_past(gpt_config):
    model = _model(gpt_config)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, gpt_config.vocab_size, (2, 10))
    base = np.asarray(model(jnp.asarray(ids)))
    for t in range(9):
        changed = ids.copy()
        changed[:, t + 1] = (changed[:, t + 1] + 1 + rng.integers(0, 50)) % gpt_config.vocab_size
        out = np.asarray(model(jnp.asarray(changed)))
        np.testing.assert_array_equal(out[:, :t + 1], base[:, :t + 1])
        assert np.abs(out[:, t + 1:] - base[:, t + 1:]).max() > 1e-4  # and the future does


def test_left_padding_gives_the_unpadded_logits(gpt_config):
    model = _model(gpt_config)
    ids = np.random.default_rng(1).integers(0, gpt_config.vocab_size, (1, 6))
    alone = np.asarray(model(jnp.asarray(ids)))
    padded = np.concatenate([np.zeros((1, 3), int), ids], axis=1)
    mask = np.concatenate([np.zeros((1, 3), int), np.ones((1, 6), int)], axis=1)
    out = np.asarray(model(jnp.asarray(padded), jnp.asarray(mask)))
    np.testing.assert_allclose(out[:, 3:], alone, atol=1e-5)


def test_padded_positions_count_real_tokens_only():
    mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(padded_positions(mask), [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])


def test_cache_mask_is_the_causal_mask_shifted_by_the_index():
    valid = jnp.array([[False, True, True, True, True, False]])
    m = np.asarray(cache_mask(valid, jnp.int32(3), 2).dense)[0, 0]
    np.testing.assert_array_equal(m, [[0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0]])


@pytest.mark.parametrize("qk_norm", [False, True])
def test_cached_decoding_equals_full_recompute(gpt_config, qk_norm):
    """Prefill a left-padded batch, then decode token by token: every step's logits equal
    those of running the whole sequence so far without a cache (with QK-norm the cache
    holds the normalized keys)."""
    gpt_config = dataclasses.replace(gpt_config, qk_norm=qk_norm)
    model = _model(gpt_config)
    rng = np.random.default_rng(2)
    B, prompt, steps, S = 2, 5, 4, 12
    ids = rng.integers(0, gpt_config.vocab_size, (B, prompt + steps))
    mask = np.ones((B, prompt + steps), int)
    mask[1, :2] = 0  # the second prompt is 3 tokens, left-padded
    full = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))

    valid = np.zeros((B, S), bool)
    valid[:, :prompt] = mask[:, :prompt]
    cache = model.init_cache(B, S)
    positions = padded_positions(jnp.asarray(mask))
    logits, cache = model.decode(jnp.asarray(ids[:, :prompt]), positions[:, :prompt],
                                 cache_mask(jnp.asarray(valid), jnp.int32(0), prompt), cache,
                                 jnp.int32(0))
    np.testing.assert_allclose(logits[1, 2:], full[1, 2:prompt], atol=1e-5)
    np.testing.assert_allclose(logits[0], full[0, :prompt], atol=1e-5)
    step = jax.jit(model.decode)
    for t in range(prompt, prompt + steps):
        valid[:, t] = True
        logits, cache = step(jnp.asarray(ids[:, t:t + 1]), positions[:, t:t + 1],
                             cache_mask(jnp.asarray(valid), jnp.int32(t), 1), cache,
                             jnp.int32(t))
        np.testing.assert_allclose(logits[:, 0], full[:, t], atol=1e-5)


def test_residual_projections_start_scaled_down(gpt_config):
    config = dataclasses.replace(gpt_config, hidden_size=64, intermediate_size=256,
                                 num_layers=8, initializer_range=0.02)
    model = _model(config)
    block = model.layers[0]
    expected = 0.02 / np.sqrt(2 * 8)
    # A truncated normal at 2 sigma has std 0.88 sigma.
    for kernel in (block.attention.output.kernel, block.mlp.output.kernel):
        assert np.std(kernel[...]) == pytest.approx(0.88 * expected, rel=0.1)
    assert np.std(block.attention.query.kernel[...]) == pytest.approx(0.88 * 0.02, rel=0.1)


def test_too_long_input_is_a_clear_error(gpt_config):
    model = _model(gpt_config)
    with pytest.raises(ValueError, match="exceeds the model's max_position_embeddings=64"):
        model(jnp.zeros((1, 65), jnp.int32))
