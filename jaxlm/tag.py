"""Tag the words of texts with a fine-tuned tagger: every word's tag, entities as spans.

    python -m jaxlm.tag --checkpoint runs/ner "Barack Obama visited Paris on Monday ."
    python -m jaxlm.tag --checkpoint runs/pos --file sentences.txt

A file holds one text per line.
"""

from __future__ import annotations

import argparse
import logging
import sys

from jaxlm.data import DataError, load_tokenizer
from jaxlm.inference.load import load_finetuned
from jaxlm.inference.tag import tag
from jaxlm.inference.texts import read_texts
from jaxlm.training.host import cache_compilations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxlm.tag", description=(
        "Print each word's tag under a fine-tuned tagger, and the entities it finds."))
    parser.add_argument("--checkpoint", required=True,
                        help="a jaxlm.finetune run of finetune.task=token_classification")
    parser.add_argument("--file", help="a file of texts, one per line")
    parser.add_argument("texts", nargs="*", help='e.g. "Barack Obama visited Paris ."')
    args = parser.parse_args(argv)
    cache_compilations()
    logging.basicConfig(level=logging.WARNING)
    try:
        texts = read_texts(args.texts, args.file)
        model, tags, tokenizer_path, cfg = load_finetuned(args.checkpoint,
                                                          task="token_classification")
        results = tag(model, load_tokenizer(tokenizer_path), tags, texts,
                      cfg.data.max_seq_length)
    except (ValueError, FileNotFoundError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for result in results:
        print(" ".join(f"{word}/{t}" for word, t, _, _ in result["words"]))
        for kind, text, start, end in result["entities"]:
            print(f"  {kind}\t{text}\t[{start}:{end}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
