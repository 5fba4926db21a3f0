"""`python -m jaxlm.fill_mask --checkpoint RUN_OR_HF_DIR "to be or not to [MASK] ."`: the
most likely tokens at each [MASK] (`jaxlm.inference.fill_mask`)."""

from __future__ import annotations

import argparse
import logging
import sys

from jaxlm.data import DataError
from jaxlm.inference.fill_mask import fill_mask
from jaxlm.inference.load import load_masked_lm
from jaxlm.training.host import cache_compilations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxlm.fill_mask", description=(
        "Print the most likely tokens at each [MASK] of the given texts."))
    parser.add_argument("--checkpoint", required=True,
                        help="a jaxlm run directory or a Hugging Face BERT directory")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("texts", nargs="+", help='e.g. "to be or not to [MASK] ."')
    args = parser.parse_args(argv)
    cache_compilations()
    logging.basicConfig(level=logging.WARNING)
    try:
        model, tokenizer = load_masked_lm(args.checkpoint)
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
