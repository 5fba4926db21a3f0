"""Fill-mask inference: the most likely tokens at each [MASK] of a text (BERT 3.1, Task #1).

    python -m jaxlm.fill_mask --checkpoint runs/bert_tiny "to be or not to [MASK] ."
    python -m jaxlm.fill_mask --checkpoint path/to/hf-bert --top-k 3 "the [MASK] of france ."

The checkpoint is a jaxlm run directory (its `tokenizer.json` next to the checkpoints) or a
Hugging Face BERT directory (config.json, weights, vocab.txt or tokenizer.json). Texts are
batched and padded to a bucket of lengths (16, 32, 64, ...), so many inputs compile the
model only once per bucket.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlm.data.tokenizer import SpecialIds, special_ids
from jaxlm.models.bert import BertForPreTraining

log = logging.getLogger(__name__)
MASK = "[MASK]"


def bucket(n: int, limit: int, smallest: int = 16) -> int:
    """The smallest power of two >= n (and >= `smallest`), capped at `limit`."""
    size = smallest
    while size < n:
        size *= 2
    return min(size, limit)


def encode_with_masks(tokenizer, text: str, ids: SpecialIds) -> list[int]:
    """[CLS] text [SEP] with every literal "[MASK]" as the mask token, whatever the
    tokenizer's own handling of that string."""
    row = [ids.cls]
    for i, piece in enumerate(text.split(MASK)):
        if i:
            row.append(ids.mask)
        row.extend(tokenizer.encode(piece, add_special_tokens=False).ids)
    return row + [ids.sep]


@functools.cache
def _forward(graphdef):
    @jax.jit
    def forward(state, ids_BT, mask_BT, positions_BP):
        model = nnx.merge(graphdef, state)
        logits_BPV, _ = model(ids_BT, jnp.zeros_like(ids_BT), mask_BT, positions_BP)
        return jax.nn.softmax(logits_BPV, axis=-1)

    return forward


def fill_mask(model: BertForPreTraining, tokenizer, texts: list[str],
              top_k: int = 5) -> list[list[list[tuple[str, float]]]]:
    """For each text, for each [MASK] in it, the `top_k` (token, probability) pairs.

    Raises:
      ValueError: a text without [MASK], or with a [MASK] cut off by the model's length, or
        a `top_k` beyond the vocabulary.
    """
    V = model.config.vocab_size
    if not 1 <= top_k <= V:
        raise ValueError(f"top_k={top_k} is not in [1, {V}], the vocabulary")
    ids = special_ids(tokenizer)
    limit = model.config.max_position_embeddings
    rows = [encode_with_masks(tokenizer, t, ids) for t in texts]
    for text, row in zip(texts, rows, strict=True):
        if ids.mask not in row:
            raise ValueError(f"no {MASK} in {text!r}")
        if len(row) > limit:
            log.warning("truncated %d tokens of %r to the model's %d positions",
                        len(row) - limit, text[:40], limit)
            if ids.mask not in row[:limit - 1]:
                raise ValueError(f"every {MASK} of {text[:40]!r} is past the model's {limit} "
                                 "positions")
    rows = [row if len(row) <= limit else row[:limit - 1] + [ids.sep] for row in rows]
    T = bucket(max(len(r) for r in rows), limit)
    P = bucket(max(r.count(ids.mask) for r in rows), limit, smallest=1)
    ids_BT = np.full((len(rows), T), ids.pad, np.int32)
    mask_BT = np.zeros((len(rows), T), np.int32)
    positions_BP = np.zeros((len(rows), P), np.int32)
    for b, row in enumerate(rows):
        ids_BT[b, :len(row)], mask_BT[b, :len(row)] = row, 1
        where = [t for t, i in enumerate(row) if i == ids.mask]
        positions_BP[b, :len(where)] = where
    graphdef, state = nnx.split(model)
    probs_BPV = np.asarray(_forward(graphdef)(state, ids_BT, mask_BT, positions_BP))
    results = []
    for b, row in enumerate(rows):
        per_mask = []
        for p in range(row.count(ids.mask)):
            best = np.argsort(-probs_BPV[b, p])[:top_k]
            per_mask.append([(tokenizer.id_to_token(int(i)), float(probs_BPV[b, p, i]))
                             for i in best])
        results.append(per_mask)
    return results
