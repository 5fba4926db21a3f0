"""The encoder-decoder Transformer: positions, masks, cached decoding, learning pairs."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxlm.config import ConfigError, ModelConfig
from jaxlm.models.encoder_decoder import EncoderDecoderTransformer
from jaxlm.nn.attention import cache_mask
from jaxlm.nn.positions import sinusoidal_positions
from jaxlm.objectives import losses


@pytest.fixture
def config(tiny_config) -> ModelConfig:
    return dataclasses.replace(tiny_config, kind="encoder_decoder", layer_norm_eps=1e-6,
                               hidden_dropout=0.0, attention_dropout=0.0,
                               position_embedding="sinusoidal")


def _model(config, seed=0):
    return EncoderDecoderTransformer(config, rngs=nnx.Rngs(params=seed, dropout=seed))


def test_sinusoids_match_the_paper_formula():
    pe = np.asarray(sinusoidal_positions(jnp.arange(7)[None], 6))[0]
    for pos in range(7):
        for i in range(3):
            angle = pos / 10000 ** (2 * i / 6)
            np.testing.assert_allclose(pe[pos, 2 * i], np.sin(angle), atol=1e-6)
            np.testing.assert_allclose(pe[pos, 2 * i + 1], np.cos(angle), atol=1e-6)


def test_decoder_is_causal_and_source_padding_is_ignored(config):
    model = _model(config)
    rng = np.random.default_rng(0)
    src = rng.integers(5, config.vocab_size, (2, 7))
    src_mask = np.ones_like(src)
    src_mask[1, 4:] = 0
    tgt = rng.integers(5, config.vocab_size, (2, 6))
    base = np.asarray(model(jnp.asarray(src), jnp.asarray(src_mask), jnp.asarray(tgt)))
    changed = tgt.copy()
    changed[:, 3] = (changed[:, 3] + 1) % config.vocab_size
    out = np.asarray(model(jnp.asarray(src), jnp.asarray(src_mask), jnp.asarray(changed)))
    np.testing.assert_array_equal(out[:, :3], base[:, :3])
    noisy = src.copy()
    noisy[1, 4:] = rng.integers(5, config.vocab_size, 3)
    out = np.asarray(model(jnp.asarray(noisy), jnp.asarray(src_mask), jnp.asarray(tgt)))
    np.testing.assert_allclose(out[1], base[1], atol=1e-5)
    assert np.abs(out[0] - base[0]).max() == 0


def test_cached_decoding_equals_full_recompute(config):
    model = _model(config)
    rng = np.random.default_rng(1)
    src = jnp.asarray(rng.integers(5, config.vocab_size, (2, 5)))
    src_mask = jnp.ones_like(src)
    tgt = rng.integers(5, config.vocab_size, (2, 6))
    full = np.asarray(model(src, src_mask, jnp.asarray(tgt)))
    memories = model.cross_memories(model.encode(src, src_mask))
    cache = model.init_cache(2, 6)
    valid = np.zeros((2, 6), bool)
    for t in range(6):
        valid[:, t] = True
        logits, cache = model.decode(jnp.asarray(tgt[:, t:t + 1]), jnp.full((2, 1), t), cache_mask(
            jnp.asarray(valid), jnp.int32(t), 1), cache, jnp.int32(t), memories, src_mask)
        np.testing.assert_allclose(logits[:, 0], full[:, t], atol=1e-5)


@pytest.mark.slow  # about 25 s; test_pairs trains, decodes and scores an encoder-decoder too
def test_learns_to_reverse_a_few_pairs(config):
    """Teacher-forced training on four (sequence, reversed sequence) pairs, then greedy
    decoding without the targets gives every reversed sequence back."""
    config = dataclasses.replace(config, vocab_size=20)
    model = _model(config)
    rng = np.random.default_rng(2)
    src = rng.integers(3, 20, (4, 6))
    tgt = np.concatenate([src[:, ::-1], np.full((4, 1), 2)], axis=1)  # then an end token 2
    dec_in = np.concatenate([np.ones((4, 1), int), tgt[:, :-1]], axis=1)  # 1 = start token
    src, tgt, dec_in = map(jnp.asarray, (src, tgt, dec_in))
    mask = jnp.ones_like(src)
    tx = optax.adam(1e-2)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer):
        def loss_fn(model):
            return jnp.mean(losses.cross_entropy(model(src, mask, dec_in), tgt))
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    for _ in range(120):
        loss = train_step(model, optimizer)
    assert float(loss) < 0.01
    out = jnp.ones((4, 1), jnp.int32)
    for _ in range(7):
        logits = model(src, mask, out)
        out = jnp.concatenate([out, jnp.argmax(logits[:, -1:], -1).astype(jnp.int32)], axis=1)
    np.testing.assert_array_equal(out[:, 1:], tgt)
    jax.clear_caches()


def test_sinusoids_are_only_for_the_encoder_decoder():
    with pytest.raises(ConfigError, match="only implemented for model.kind=encoder_decoder"):
        ModelConfig(kind="gpt", position_embedding="sinusoidal")
