"""Beam search against exhaustive search and greedy decoding."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlm.inference.beam_search import beam_search, length_penalty_factor
from jaxlm.models.encoder_decoder import EncoderDecoderTransformer

START, END = 1, 4


@pytest.fixture(scope="module")
def model():
    from jaxlm.config import ModelConfig
    config = ModelConfig(kind="encoder_decoder", vocab_size=6, hidden_size=16, num_layers=1,
                         num_heads=2, intermediate_size=32, max_position_embeddings=16,
                         hidden_dropout=0.0, attention_dropout=0.0, initializer_range=0.5)
    m = EncoderDecoderTransformer(config, rngs=nnx.Rngs(params=7, dropout=7))
    m.eval()
    return m


def _sequence_logp(model, src, mask, seq):
    """log p(seq | src) by teacher forcing, stopping after the first END."""
    logits = model(src, mask, jnp.asarray([[START, *seq[:-1]]]))
    logp = np.asarray(jax.nn.log_softmax(logits[0], -1))
    total = 0.0
    for t, tok in enumerate(seq):
        total += logp[t, tok]
        if tok == END:
            break
    return total


def test_wide_beam_finds_the_exhaustive_optimum(model):
    """With K = V^(L-1) beams nothing is ever pruned, so the beam's best 3-token sequence is
    the most likely of all 6^3 (no length penalty)."""
    src, mask = jnp.asarray([[2, 3, 5, 2]]), jnp.ones((1, 4), jnp.int32)
    best = max(itertools.product(range(6), repeat=3),
               key=lambda s: _sequence_logp(model, src, mask, list(s)))
    best = list(best)[:best.index(END) + 1] if END in best else list(best)
    (tokens, score), = beam_search(model, src, mask, 3, beam_size=36, length_penalty=0.0,
                                   start_id=START, end_id=END)
    assert tokens == [t for t in best if t != END]
    np.testing.assert_allclose(score, _sequence_logp(model, src, mask, best),
                               atol=1e-4)


def test_beam_of_one_is_greedy(model):
    src = jnp.asarray([[2, 3, 5, 2], [5, 5, 0, 0]])
    mask = jnp.asarray([[1, 1, 1, 1], [1, 1, 0, 0]])
    out = beam_search(model, src, mask, 6, beam_size=1, start_id=START, end_id=END)
    for b in range(2):
        seq = [START]
        for _ in range(6):
            seq.append(int(jnp.argmax(model(src[b:b + 1], mask[b:b + 1],
                                            jnp.asarray([seq]))[0, -1])))
            if seq[-1] == END:
                break
        assert out[b][0] == [t for t in seq[1:] if t != END]


def test_length_penalty_is_gnmt():
    np.testing.assert_allclose(length_penalty_factor(np.array(7), 0.6), 2.0 ** 0.6)
    assert length_penalty_factor(np.array(3), 0.0) == 1.0


def test_bad_settings_are_clear_errors(model):
    src, mask = jnp.asarray([[2, 3]]), jnp.ones((1, 2), jnp.int32)
    with pytest.raises(ValueError, match="beam_size must be >= 1"):
        beam_search(model, src, mask, 3, beam_size=0, start_id=START, end_id=END)
    with pytest.raises(ValueError, match=r"max_new_tokens must be in \[1, 16\]"):
        beam_search(model, src, mask, 17, start_id=START, end_id=END)


