"""Decoding an encoder-decoder: beam search with cached self- and cross-attention.

    outputs = beam_search(model, source_ids_BS, source_mask_BS, max_new_tokens=20,
                          beam_size=4, length_penalty=0.6, start_id=cls, end_id=sep)

The source is encoded once and every decoder layer's cross-attention keys/values are
computed once (`cross_memories`); each new token is one call of a compiled step that
extends the decoder's self-attention cache. Beam size 1 is greedy decoding.

Beams are ranked by their summed log-probability while searching; a finished beam (one that
produced `end_id`) keeps its score and is carried along. The returned sequence is the beam
with the best length-normalized score, log p / lp(length) with GNMT's
lp = ((5 + length) / 6) ** length_penalty (Wu et al. 2016, 7); 0 means no normalization.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlm.models.encoder_decoder import EncoderDecoderTransformer
from jaxlm.nn.attention import cache_mask


def length_penalty_factor(length: np.ndarray, alpha: float) -> np.ndarray:
    """GNMT's lp(Y) = ((5 + |Y|) / 6) ** alpha."""
    return ((5.0 + length) / 6.0) ** alpha


@functools.cache
def _step(graphdef, beam_size: int, end_id: int):
    """The compiled beam step: decode one token for all B*K beams, keep the K best
    continuations per source, reorder the cache to follow their parents."""

    @jax.jit
    def step(state, tokens_N1, cache, index, memories, source_mask_NS, scores_BK, done_BK):
        module = nnx.merge(graphdef, state)
        N, K = tokens_N1.shape[0], beam_size
        B, S = N // K, cache[0].k_BSNH.shape[1]
        valid_NS = jnp.broadcast_to(jnp.arange(S) <= index, (N, S))
        logits_N1V, cache = module.decode(tokens_N1, jnp.full((N, 1), index), cache_mask(
            valid_NS, index, 1), cache, index, memories, source_mask_NS)
        V = logits_N1V.shape[-1]
        logp_BKV = jax.nn.log_softmax(logits_N1V[:, 0], axis=-1).reshape(B, K, V)
        only_end_V = jnp.full((V,), -jnp.inf).at[end_id].set(0.0)  # finished beams stay
        logp_BKV = jnp.where(done_BK[..., None], only_end_V, logp_BKV)
        scores_BK, best_BK = jax.lax.top_k((scores_BK[..., None] + logp_BKV).reshape(B, K * V),
                                           K)
        parent_BK, token_BK = best_BK // V, (best_BK % V).astype(jnp.int32)
        rows_N = (jnp.arange(B)[:, None] * K + parent_BK).reshape(N)
        cache = jax.tree.map(lambda c: c[rows_N], cache)
        done_BK = jnp.take_along_axis(done_BK, parent_BK, axis=1) | (token_BK == end_id)
        return token_BK, parent_BK, scores_BK, done_BK, cache

    return step


def beam_search(model: EncoderDecoderTransformer, source_ids_BS, source_mask_BS,
                max_new_tokens: int, *, beam_size: int = 4, length_penalty: float = 0.6,
                start_id: int, end_id: int) -> list[tuple[list[int], float]]:
    """The best continuation of each source, without `end_id`, and its normalized score.

    Raises:
      ValueError: beam_size < 1, or max_new_tokens beyond the model's positions.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if not 1 <= max_new_tokens <= model.config.max_position_embeddings:
        raise ValueError(f"max_new_tokens must be in [1, {model.config.max_position_embeddings}"
                         f"] (max_position_embeddings), got {max_new_tokens}")
    source_ids_BS, source_mask_BS = jnp.asarray(source_ids_BS), jnp.asarray(source_mask_BS)
    B, K = source_ids_BS.shape[0], beam_size
    source_mask_NS = jnp.repeat(source_mask_BS, K, axis=0)
    memory_NSD = jnp.repeat(model.encode(source_ids_BS, source_mask_BS), K, axis=0)
    memories = model.cross_memories(memory_NSD)
    cache = model.init_cache(B * K, max_new_tokens)
    graphdef, state = nnx.split(model)
    step = _step(graphdef, K, end_id)

    tokens_N1 = jnp.full((B * K, 1), start_id, jnp.int32)
    scores_BK = jnp.full((B, K), -jnp.inf).at[:, 0].set(0.0)  # one live beam to start
    done_BK = jnp.zeros((B, K), bool)
    history_BKT = np.zeros((B, K, 0), np.int64)
    for t in range(max_new_tokens):
        token_BK, parent_BK, scores_BK, done_BK, cache = step(
            state, tokens_N1, cache, jnp.int32(t), memories, source_mask_NS, scores_BK, done_BK)
        parents = np.asarray(parent_BK)
        history_BKT = np.concatenate([np.take_along_axis(history_BKT, parents[..., None], 1),
                                      np.asarray(token_BK)[..., None]], axis=2)
        tokens_N1 = token_BK.reshape(B * K, 1)
        if bool(jnp.all(done_BK)):
            break
    results = []
    scores = np.asarray(scores_BK)
    for b in range(B):
        best, best_score = None, -np.inf
        for k in range(K):
            seq = history_BKT[b, k].tolist()
            seq = seq[:seq.index(end_id) + 1] if end_id in seq else seq
            normalized = scores[b, k] / length_penalty_factor(len(seq), length_penalty)
            if normalized > best_score:
                best, best_score = [t for t in seq if t != end_id], normalized
        results.append((best, float(best_score)))
    return results
