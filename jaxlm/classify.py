"""Classify texts with a fine-tuned model: labels and probabilities.

    python -m jaxlm.classify --checkpoint runs/classify "a gorgeous , witty film" "dull ."
    python -m jaxlm.classify --checkpoint runs/classify --file reviews.txt

A file holds one text per line ("text_a<TAB>text_b" for sentence-pair models).
"""

from __future__ import annotations

import argparse
import logging
import sys

from jaxlm.data import DataError, load_tokenizer
from jaxlm.inference.classify import classify
from jaxlm.inference.load import load_finetuned
from jaxlm.inference.texts import read_texts
from jaxlm.training.host import cache_compilations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxlm.classify", description=(
        "Print the label probabilities of each text under a fine-tuned classifier."))
    parser.add_argument("--checkpoint", required=True, help="a jaxlm.finetune run directory")
    parser.add_argument("--file", help="a file of texts, one per line (a<TAB>b for pairs)")
    parser.add_argument("texts", nargs="*", help='e.g. "a gorgeous , witty film"')
    args = parser.parse_args(argv)
    cache_compilations()
    logging.basicConfig(level=logging.WARNING)
    try:
        texts = read_texts(args.texts, args.file)
        model, labels, tokenizer_path, cfg = load_finetuned(args.checkpoint,
                                                            task="sequence_classification")
        results = classify(model, load_tokenizer(tokenizer_path), labels, texts,
                           cfg.data.max_seq_length)
    except (ValueError, FileNotFoundError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for text, ranked in zip(texts, results, strict=True):
        shown = "  ".join(f"{label} {p:.3f}" for label, p in ranked)
        print(f"{ranked[0][0]}\t{shown}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
