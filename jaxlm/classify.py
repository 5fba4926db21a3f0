"""Classify texts with a fine-tuned model: labels and probabilities.

    python -m jaxlm.classify --checkpoint runs/classify "a gorgeous , witty film" "dull ."
    python -m jaxlm.classify --checkpoint runs/classify --file reviews.txt

A file holds one text per line ("text_a<TAB>text_b" for sentence-pair models). Texts are
batched and padded to a bucket of lengths (16, 32, 64, ...), so that many inputs compile
the model once per bucket.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxlm.bert import BertForSequenceClassification
from jaxlm.data import DataError, load_tokenizer
from jaxlm.data.tokenizer import special_ids
from jaxlm.fill_mask import bucket

log = logging.getLogger(__name__)


@functools.cache
def _forward(graphdef):
    @jax.jit
    def forward(state, ids_BT, types_BT, mask_BT):
        return jax.nn.softmax(nnx.merge(graphdef, state)(ids_BT, types_BT, mask_BT), axis=-1)

    return forward


def classify(model: BertForSequenceClassification, tokenizer, labels: tuple[str, ...],
             texts: list[str], max_seq_length: int,
             batch_size: int = 64) -> list[list[tuple[str, float]]]:
    """For each text ("a" or "a\\tb"), every label with its probability, most likely first.

    Texts longer than `max_seq_length` tokens are truncated, with a warning that counts them.

    Raises:
      ValueError: an empty text.
    """
    for i, text in enumerate(texts):
        if not text.strip():
            raise ValueError(f"text {i + 1} is empty")
    pad = special_ids(tokenizer).pad
    tokenizer.enable_truncation(max_seq_length, strategy="longest_first")
    try:
        encodings = tokenizer.encode_batch([tuple(t.split("\t", 1)) if "\t" in t else t
                                            for t in texts])
    finally:
        tokenizer.no_truncation()
    truncated = sum(bool(e.overflowing) for e in encodings)
    if truncated:
        log.warning("%d of %d texts truncated to %d tokens", truncated, len(texts),
                    max_seq_length)
    graphdef, state = nnx.split(model)
    results = []
    for start in range(0, len(encodings), batch_size):
        chunk = encodings[start:start + batch_size]
        T = bucket(max(len(e.ids) for e in chunk), max_seq_length)
        ids_BT = np.full((len(chunk), T), pad, np.int32)
        types_BT = np.zeros((len(chunk), T), np.int32)
        mask_BT = np.zeros((len(chunk), T), np.int32)
        for b, e in enumerate(chunk):
            ids_BT[b, :len(e.ids)], types_BT[b, :len(e.ids)] = e.ids, e.type_ids
            mask_BT[b, :len(e.ids)] = 1
        probs_BK = np.asarray(_forward(graphdef)(state, ids_BT, types_BT, mask_BT))
        for p_K in probs_BK:
            results.append([(labels[k], float(p_K[k])) for k in np.argsort(-p_K)])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxlm.classify", description=(
        "Print the label probabilities of each text under a fine-tuned classifier."))
    parser.add_argument("--checkpoint", required=True, help="a jaxlm.finetune run directory")
    parser.add_argument("--file", help="a file of texts, one per line (a<TAB>b for pairs)")
    parser.add_argument("texts", nargs="*", help='e.g. "a gorgeous , witty film"')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        texts = list(args.texts)
        if args.file:
            path = Path(args.file)
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found")
            texts += [line for line in path.read_text(encoding="utf-8").splitlines()
                      if line.strip()]
        if not texts:
            raise ValueError("no texts given: pass them as arguments or with --file")
        from jaxlm.finetune import load_classifier

        model, labels, tokenizer_path, max_seq_length = load_classifier(args.checkpoint)
        results = classify(model, load_tokenizer(tokenizer_path), labels, texts,
                           max_seq_length)
    except (ValueError, FileNotFoundError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for text, ranked in zip(texts, results, strict=True):
        shown = "  ".join(f"{label} {p:.3f}" for label, p in ranked)
        print(f"{ranked[0][0]}\t{shown}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
