"""Answer questions about passages with a fine-tuned QA model: the span, its score and its
character offsets.

    python -m jaxlm.answer --checkpoint runs/qa --question "Who wrote it?" --context "..."
    python -m jaxlm.answer --checkpoint runs/qa --file questions.jsonl

A JSONL file holds one {"question": ..., "context": ...} object per line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from jaxlm.data import DataError, load_tokenizer
from jaxlm.inference.answer import answer
from jaxlm.inference.load import load_finetuned
from jaxlm.training.host import cache_compilations


def read_questions(question: str | None, context: str | None, file: str | None
                   ) -> list[tuple[str, str]]:
    """(question, passage) pairs from the arguments and then from a JSONL file.

    Raises:
      FileNotFoundError: `file` does not exist.
      ValueError: a malformed line (naming file and line), a question without a passage,
        or nothing to answer.
    """
    pairs = []
    if (question is None) != (context is None):
        raise ValueError("--question and --context go together")
    if question is not None:
        pairs.append((question, context))
    if file:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                pairs.append((str(record["question"]), str(record["context"])))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{number}: expected a JSON object with \"question\" "
                                 f"and \"context\" ({type(e).__name__}: {e})") from None
    if not pairs:
        raise ValueError("nothing to answer: pass --question and --context, or --file")
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxlm.answer", description=(
        "Print the answer span a fine-tuned QA model finds in each passage."))
    parser.add_argument("--checkpoint", required=True,
                        help="a jaxlm.finetune run of finetune.task=question_answering")
    parser.add_argument("--question", help="the question")
    parser.add_argument("--context", help="the passage that holds the answer")
    parser.add_argument("--file", help='a JSONL file of {"question": ..., "context": ...}')
    args = parser.parse_args(argv)
    cache_compilations()
    logging.basicConfig(level=logging.WARNING)
    try:
        pairs = read_questions(args.question, args.context, args.file)
        model, _, tokenizer_path, cfg = load_finetuned(args.checkpoint,
                                                       task="question_answering")
        answers = answer(model, load_tokenizer(tokenizer_path), pairs, cfg.data)
    except (ValueError, FileNotFoundError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for (question, _), found in zip(pairs, answers, strict=True):
        print(f"{found.text}\t{found.score:.3f}\t[{found.start_char}:{found.end_char}]\t"
              f"{question}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
