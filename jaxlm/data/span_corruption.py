"""T5's span corruption (Raffel et al. 2020, 3.1.4): the encoder-decoder's pretraining data.

A window of n tokens of the packed corpus (see `packing`) loses about 15% of its tokens in
spans of mean length 3. Each dropped span becomes one sentinel in the source; the target
lists every sentinel followed by the span it replaced, then [SEP]:

    window   the quick brown fox jumps over the lazy dog
    source   the quick <S0> jumps over <S1> dog
    target   <S0> brown fox <S1> the lazy [SEP]

Sentinel i is token id `V + i` (V = the tokenizer's vocabulary; the model's table grows by
`num_sentinels` rows), as T5 appends its sentinels after the vocabulary. With a fixed n the
source and target lengths are fixed too, so no batch has padding.
"""

from __future__ import annotations

import numpy as np

KEYS = ("source_ids", "source_mask", "decoder_input_ids", "target_ids", "target_weights")
NUM_SENTINELS = 100  # as T5; a window may have at most this many noise spans


def span_counts(n: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) for a window of n tokens, at least one of each and at
    least one kept token per span."""
    noise = min(max(int(round(n * noise_density)), 1), n - 1)
    spans = max(int(round(noise / mean_span_length)), 1)
    return noise, min(spans, noise, n - noise)


def random_partition(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """`parts` positive integers summing to `total`, uniformly over such compositions."""
    cuts = np.sort(rng.choice(np.arange(1, total), parts - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [total]]))


def noise_mask(n: int, noise_density: float, mean_span_length: float,
               rng: np.random.Generator) -> np.ndarray:
    """Bool[n]: the dropped tokens, in spans, never at position 0 (a kept run comes first)."""
    noise, spans = span_counts(n, noise_density, mean_span_length)
    noise_lengths = random_partition(noise, spans, rng)
    kept_lengths = random_partition(n - noise, spans, rng)
    runs = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)
    return np.repeat(np.tile([False, True], spans), runs)


def corrupt(tokens: np.ndarray, mask: np.ndarray, sentinel_base: int,
            end_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) of one window given its noise mask (see the module docstring)."""
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    span_id = np.cumsum(starts) - 1  # index of the span each noise token belongs to
    sentinel = sentinel_base + span_id
    source = np.where(starts, sentinel, tokens)[~mask | starts]
    target = np.where(starts, sentinel, -1)
    target = np.stack([target, np.where(mask, tokens, -1)], axis=1).reshape(-1)
    target = np.concatenate([target[target >= 0], [end_id]])
    return source, target


def build(windows_NW: np.ndarray, vocab_size: int, start_id: int, end_id: int, seed: int,
          first: int = 0, noise_density: float = 0.15,
          mean_span_length: float = 3.0) -> dict[str, np.ndarray]:
    """Encoder-decoder instances (the `KEYS`, int32 [N, ...]) from raw windows [N, W], the
    windows `first`, `first + 1`, ... of their split.

    The decoder reads [start] + target[:-1] and predicts target (teacher forcing). Window i
    draws its spans from a generator of its own, seeded by (seed, i), so that any run of
    windows can be corrupted apart from the others (a Beam work item) with the same result.
    """
    spans = span_counts(windows_NW.shape[1], noise_density, mean_span_length)[1]
    if spans > NUM_SENTINELS:
        raise ValueError(f"windows of {windows_NW.shape[1]} tokens get {spans} noise spans, "
                         f"more than the {NUM_SENTINELS} sentinels; use shorter windows")
    sources, targets = [], []
    for i, window in enumerate(windows_NW, start=first):
        rng = np.random.default_rng([seed, 1, i])
        mask = noise_mask(len(window), noise_density, mean_span_length, rng)
        source, target = corrupt(np.asarray(window, np.int64), mask, vocab_size, end_id)
        sources.append(source)
        targets.append(target)
    source_NS = np.asarray(sources, np.int32).reshape(len(windows_NW), -1)
    target_NT = np.asarray(targets, np.int32).reshape(len(windows_NW), -1)
    start_N1 = np.full((len(target_NT), 1), start_id, np.int32)
    return {"source_ids": source_NS, "source_mask": np.ones_like(source_NS),
            "decoder_input_ids": np.concatenate([start_N1, target_NT[:, :-1]], axis=1),
            "target_ids": target_NT, "target_weights": np.ones(target_NT.shape, np.float32)}


def uncorrupt(source: np.ndarray, target: np.ndarray, sentinel_base: int) -> np.ndarray:
    """The original window back from (source, target): each sentinel in the source replaced
    by the tokens after the same sentinel in the target."""
    spans, current = {}, None
    for t in target[:-1].tolist():
        if t >= sentinel_base:
            current = spans.setdefault(t, [])
        else:
            current.append(t)
    out = []
    for t in source.tolist():
        out.extend(spans[t] if t >= sentinel_base else [t])
    return np.asarray(out)
