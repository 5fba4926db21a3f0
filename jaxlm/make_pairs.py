"""`python -m jaxlm.make_pairs reverse OUT.tsv`: the synthetic word-reversal task (source: a
few of Shakespeare's most frequent words; target: the same words reversed) as tab-separated
pairs for `data.format=pairs`."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from jaxlm.data.corpus import fetch_shakespeare
from jaxlm.data.pairs import reversal_pairs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jaxlm.make_pairs", description=(
        "Write the synthetic word-reversal task as tab-separated pairs."))
    parser.add_argument("task", choices=["reverse"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--vocabulary", type=int, default=200,
                        help="distinct words, the most frequent of Shakespeare")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    text = fetch_shakespeare("~/.cache/jaxlm").read_text(encoding="utf-8").lower()
    words = [w for w, _ in Counter(w for w in text.split() if w.isalpha()).most_common(
        args.vocabulary)]
    pairs = reversal_pairs(words, args.pairs, args.seed)
    args.out.write_text("".join(f"{s}\t{t}\n" for s, t in pairs))
    print(f"wrote {len(pairs)} pairs over {len(words)} words to {args.out}")


if __name__ == "__main__":
    main()
