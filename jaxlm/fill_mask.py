"""Fill-mask inference: the most likely tokens at each [MASK] of a text (BERT 3.1, Task #1).

    python -m jaxlm.fill_mask --checkpoint runs/bert_tiny "to be or not to [MASK] ."
    python -m jaxlm.fill_mask --checkpoint path/to/hf-bert --top-k 3 "the [MASK] of france ."

The checkpoint is a jaxlm run directory (its `tokenizer.json` next to the checkpoints) or a
Hugging Face BERT directory (config.json, weights, vocab.txt or tokenizer.json). Texts are
batched and padded to a bucket of lengths (16, 32, 64, ...), so many inputs compile the
model only once per bucket.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlm.bert import BertForPreTraining
from jaxlm.data import DataError, load_tokenizer
from jaxlm.data.tokenizer import SpecialIds, special_ids

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
      ValueError: a text without [MASK], or with a [MASK] cut off by the model's length.
    """
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


def load(path: str | Path):
    """(model, tokenizer) from a jaxlm run directory or a Hugging Face BERT directory."""
    directory = Path(path)
    if (directory / "config.json").is_file():  # Hugging Face
        from jaxlm.hf import from_pretrained

        model, _ = from_pretrained(directory)
        model.eval()
        for name in ("tokenizer.json", "vocab.txt"):
            if (directory / name).is_file():
                return model, load_tokenizer(directory / name)
        raise FileNotFoundError(f"{directory}: no tokenizer.json or vocab.txt next to the model")
    from jaxlm.checkpoint import load_run

    model, _, tokenizer_path = load_run(directory, ("bert",), "fill-mask")
    return model, load_tokenizer(tokenizer_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxlm.fill_mask", description=(
        "Print the most likely tokens at each [MASK] of the given texts."))
    parser.add_argument("--checkpoint", required=True,
                        help="a jaxlm run directory or a Hugging Face BERT directory")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("texts", nargs="+", help='e.g. "to be or not to [MASK] ."')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        model, tokenizer = load(args.checkpoint)
        results = fill_mask(model, tokenizer, args.texts, args.top_k)
    except (ValueError, FileNotFoundError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for text, per_mask in zip(args.texts, results, strict=True):
        print(text)
        for i, candidates in enumerate(per_mask):
            shown = "  ".join(f"{token} {p:.3f}" for token, p in candidates)
            print(f"  [MASK] {i + 1}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
