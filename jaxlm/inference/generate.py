"""Text generation with a trained GPT (KV cache, greedy or sampled decoding), or with an
encoder-decoder (beam search, `jaxlm.inference.beam_search`).

    python -m jaxlm.generate --checkpoint runs/gpt_tiny --prompt "to be or not" \
        --max-new-tokens 40 --temperature 0.8 --top-k 40 --top-p 0.95 --seed 0
    python -m jaxlm.generate --checkpoint runs/reverse --prompt "my lord" --beam-size 4

Prompts of different lengths are left-padded into one batch. The prompt goes through the
model once (prefill) and fills a fixed-size key/value cache of prompt + max-new-tokens
slots; each new token is then one call of a single compiled step that reads and extends
the cache, so nothing is recompiled per token and each step costs O(S), not O(S^2).
"""

from __future__ import annotations

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlm.models.gpt import GPTLanguageModel
from jaxlm.nn.attention import cache_mask
from jaxlm.nn.positions import padded_positions


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the next token is drawn from the logits (Holtzman et al. 2020 for top-p)."""

    temperature: float = 0.0  # 0 = greedy (argmax); otherwise logits / temperature
    top_k: int = 0  # keep only the k most likely tokens; 0 = all
    top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches p

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def filter_logits(logits_BV: jax.Array, top_k: int, top_p: float) -> jax.Array:
    """Logits with every token outside the top-k and outside the top-p nucleus set to -inf.

    The nucleus is the smallest set of most likely tokens whose probabilities sum to at
    least p; the most likely token is always kept.
    """
    if top_k:
        kth_B1 = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
        logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
    if top_p < 1.0:
        sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
        probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
        # A token is kept if the tokens before it have not yet reached p.
        before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
        kept_B = jnp.sum(before_BV < top_p, axis=-1)
        cutoff_B1 = jnp.take_along_axis(sorted_BV, kept_B[:, None] - 1, axis=-1)
        logits_BV = jnp.where(logits_BV < cutoff_B1, -jnp.inf, logits_BV)
    return logits_BV


def sample_token(logits_BV: jax.Array, key: jax.Array, sampling: Sampling) -> jax.Array:
    """The next token id per row: argmax when greedy, else a draw from the filtered softmax."""
    if sampling.temperature == 0.0:
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    logits_BV = filter_logits(logits_BV / sampling.temperature, sampling.top_k, sampling.top_p)
    return jax.random.categorical(key, logits_BV, axis=-1).astype(jnp.int32)


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids_BT, attention_mask_BT) with every prompt right-aligned."""
    T = max(len(p) for p in prompts)
    ids = np.full((len(prompts), T), pad_id, np.int32)
    mask = np.zeros((len(prompts), T), np.int32)
    for b, p in enumerate(prompts):
        ids[b, T - len(p):] = p
        mask[b, T - len(p):] = 1
    return ids, mask


@functools.cache
def _decode_step(graphdef, sampling: Sampling):
    """`step(state, ids_BT, positions_BT, valid_BS, cache, index, key) -> (token_B, cache)`,
    compiled once per model graph, sampling and shape (prefill, then one shape per token).
    The cache is donated: XLA writes the new keys and values in place instead of copying
    every layer's buffers each token."""

    @functools.partial(jax.jit, donate_argnums=4)
    def step(state, ids_BT, positions_BT, valid_BS, cache, index, key):
        module = nnx.merge(graphdef, state)
        mask_BTS = cache_mask(valid_BS, index, ids_BT.shape[1])
        logits_B1V, cache = module.decode(ids_BT, positions_BT, mask_BTS, cache, index,
                                          last_only=True)
        return sample_token(logits_B1V[:, 0], key, sampling), cache

    return step


def generate(model: GPTLanguageModel, prompts: list[list[int]], max_new_tokens: int, *,
             sampling: Sampling = Sampling(), seed: int = 0, pad_id: int = 0,
             stop_id: int | None = None) -> list[list[int]]:
    """Continues each prompt by up to `max_new_tokens` tokens (fewer after `stop_id`).

    Raises:
      ValueError: an empty prompt, prompt + max_new_tokens beyond the model's context, or a
        top-k beyond the vocabulary.
    """
    context = model.config.max_position_embeddings
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    longest = max(len(p) for p in prompts)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if sampling.top_k > model.config.vocab_size:
        raise ValueError(f"top_k={sampling.top_k} exceeds the vocabulary of "
                         f"{model.config.vocab_size} tokens")
    if longest + max_new_tokens > context:
        raise ValueError(
            f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} needs "
            f"{longest + max_new_tokens} positions, more than the model's context of {context} "
            f"(max_position_embeddings); shorten the prompt or generate fewer tokens")
    ids_BT, mask_BT = left_pad(prompts, pad_id)
    B, T = ids_BT.shape
    S = T + max_new_tokens
    graphdef, state = nnx.split(model)
    forward = _decode_step(graphdef, sampling)
    valid_BS = jnp.zeros((B, S), bool).at[:, :T].set(mask_BT.astype(bool))
    positions_BT = padded_positions(jnp.asarray(mask_BT))
    key = jax.random.key(seed)
    cache = model.init_cache(B, S)
    token_B, cache = forward(state, jnp.asarray(ids_BT), positions_BT, valid_BS, cache,
                             jnp.int32(0), jax.random.fold_in(key, 0))
    position_B = positions_BT[:, -1] + 1
    # Tokens stay on the device unless a stop id must be checked, so that the host queues
    # the next step while the device runs this one.
    out = [token_B]
    done = np.asarray(token_B) == stop_id if stop_id is not None else np.zeros(B, bool)
    for i in range(1, max_new_tokens):
        if done.all():
            break
        index = T + i - 1
        valid_BS = valid_BS.at[:, index].set(True)
        token_B, cache = forward(state, token_B[:, None], position_B[:, None], valid_BS, cache,
                                 jnp.int32(index), jax.random.fold_in(key, i))
        position_B = position_B + 1
        out.append(token_B)
        if stop_id is not None:
            done |= np.asarray(token_B) == stop_id
    tokens_BN = np.asarray(jnp.stack(out, axis=1))
    results = []
    for row in tokens_BN.tolist():
        if stop_id is not None and stop_id in row:
            row = row[:row.index(stop_id)]
        results.append(row)
    return results


def decode_text(tokenizer, ids: list[int]) -> str:
    """Token ids to text; ids past the tokenizer's vocabulary are T5 sentinels <extra_id_i>."""
    V = tokenizer.get_vocab_size()
    parts, run = [], []
    for t in ids + [V]:
        if t < V:
            run.append(t)
            continue
        if run:
            parts.append(tokenizer.decode(run))
        run = []
        parts.append(f"<extra_id_{t - V}>")
    return " ".join(parts[:-1])


def encode_text(tokenizer, text: str) -> list[int]:
    """Text to token ids, with each "<extra_id_i>" as the T5 sentinel V + i."""
    V, ids = tokenizer.get_vocab_size(), []
    for i, piece in enumerate(re.split(r"<extra_id_(\d+)>", text)):
        if i % 2:
            ids.append(V + int(piece))
        elif piece.strip():
            ids.extend(tokenizer.encode(piece, add_special_tokens=False).ids)
    return ids


def encode_sources(tokenizer, texts: list[str], cfg) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded source ids and mask for the encoder, cut to the run's source length."""
    ids = [encode_text(tokenizer, t)[:cfg.data.max_seq_length] for t in texts]
    pad = tokenizer.token_to_id("[PAD]")
    S = max(len(i) for i in ids)
    source = np.full((len(ids), S), pad, np.int32)
    mask = np.zeros((len(ids), S), np.int32)
    for b, row in enumerate(ids):
        source[b, :len(row)], mask[b, :len(row)] = row, 1
    return source, mask
