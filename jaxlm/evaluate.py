"""Score a trained encoder-decoder on its held-out pairs: corpus BLEU, ROUGE-1/2/L and exact
match.

    python -m jaxlm.evaluate --checkpoint runs/reverse_tiny --beam-size 4

Each held-out source is decoded with beam search (`jaxlm.inference.beam_search`); the decoded text
and the reference text are split into words and scored with `jaxlm.objectives.bleu` and
`jaxlm.objectives.rouge` (tests check both against sacrebleu and rouge-score).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import numpy as np

from jaxlm.data import load_tokenizer, prepare
from jaxlm.inference.beam_search import beam_search
from jaxlm.inference.generate import decode_text
from jaxlm.inference.load import load_run
from jaxlm.objectives import bleu, rouge
from jaxlm.objectives.registry import pretraining_task
from jaxlm.training.host import cache_compilations


def score_held_out(run_dir: str, *, beam_size: int = 4, length_penalty: float = 0.6,
             limit: int = 0, batch_size: int = 64) -> dict:
    """BLEU, ROUGE and exact match of beam-search outputs on the run's held-out split."""
    model, cfg, tokenizer_path = load_run(run_dir, ("encoder_decoder",), "evaluation")
    prepared = prepare(cfg.data, seed=cfg.train.seed,
                       recipe=pretraining_task(cfg.model.kind).recipe)
    tokenizer = load_tokenizer(tokenizer_path)
    split = {k: np.load(prepared.directory / "eval" / f"{k}.npy")
             for k in ("source_ids", "source_mask", "target_ids", "target_weights")}
    n = len(split["source_ids"]) if not limit else min(limit, len(split["source_ids"]))
    if n == 0:
        raise ValueError(f"{prepared.directory} has no held-out pairs (data.eval_fraction)")
    ids = prepared.special_ids
    hypotheses, references = [], []
    for start in range(0, n, batch_size):
        rows = slice(start, min(start + batch_size, n))
        outputs = beam_search(model, split["source_ids"][rows], split["source_mask"][rows],
                              split["target_ids"].shape[1], beam_size=beam_size,
                              length_penalty=length_penalty, start_id=ids.cls, end_id=ids.sep)
        for (out, _), target, weights in zip(outputs, split["target_ids"][rows],
                                             split["target_weights"][rows], strict=True):
            reference = [t for t, w in zip(target.tolist(), weights, strict=True)
                         if w and t != ids.sep]
            hypotheses.append(decode_text(tokenizer, out).split())
            references.append(decode_text(tokenizer, reference).split())
    return {"pairs": n, "bleu": bleu.corpus_bleu(hypotheses, references),
            **rouge.corpus_rouge(hypotheses, references),
            "exact_match": bleu.exact_match(hypotheses, references),
            "examples": [" ".join(h) for h in hypotheses[:3]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxlm.evaluate", description=(
        "BLEU, ROUGE and exact match of a trained encoder-decoder on its held-out pairs."))
    parser.add_argument("--checkpoint", required=True, help="the run directory")
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--length-penalty", type=float, default=0.6)
    parser.add_argument("--limit", type=int, default=0, help="score the first N pairs; 0 = all")
    args = parser.parse_args(argv)
    cache_compilations()
    logging.basicConfig(level=logging.WARNING)
    try:
        report = score_held_out(args.checkpoint, beam_size=args.beam_size,
                          length_penalty=args.length_penalty, limit=args.limit)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
