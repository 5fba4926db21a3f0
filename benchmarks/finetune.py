"""Fine-tuning benchmark, jaxlm against the references in the same run.

    python -m benchmarks.finetune --init-from path/to/all-MiniLM-L6 --epochs 1

On the seeded 80/10/10 split of the Pang & Lee polarity data that `jaxlm.finetune` uses:

- `tfidf`: a bag-of-words baseline, TF-IDF features (raw counts x smoothed IDF, rows
  L2-normalised, as scikit-learn's defaults) and L2-regularised logistic regression
  fitted with scipy's L-BFGS, C in {0.1, 1, 10, 100} chosen on validation; test accuracy.
- `jaxlm`: `jaxlm.finetune` from `--init-from` for `--epochs` (train.py's recipe otherwise:
  configs/finetune_classify.yaml); seconds per epoch and test accuracy.
- `torch`: Hugging Face `BertForSequenceClassification` fine-tuned from the same
  checkpoint with torch's AdamW, the same batch size, learning rate, warmup and linear
  decay, each batch padded to its longest sentence (max length 128, as a plain
  `transformers` script does; `benchmarks.peers.torch.finetune`); seconds per epoch and
  test accuracy.

The last line printed is one JSON object with every figure and the ratio of epoch times.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys

import numpy as np

from benchmarks.peers import torch as torch_peer
from jaxlm import finetune
from jaxlm.config import FinetuneConfig, load
from jaxlm.data.classification import label_set
from jaxlm.training import host
from jaxlm.training.metrics import setup_logging


def _words(text: str) -> list[str]:
    return re.findall(r"\b\w\w+\b", text.lower())


def tfidf_features(train, *others) -> list[np.ndarray]:
    """TF-IDF rows for `train` and each list in `others`, with the vocabulary and IDF of
    `train`: counts of lowercased words of 2+ characters x (ln((1 + n) / (1 + df)) + 1),
    each row scaled to unit L2 norm (scikit-learn's `TfidfVectorizer` defaults)."""
    vocab = {w: i for i, w in enumerate(sorted({w for e in train for w in _words(e.text)}))}

    def counts(examples):
        X = np.zeros((len(examples), len(vocab)))
        for r, e in enumerate(examples):
            for w, c in collections.Counter(_words(e.text)).items():
                if w in vocab:
                    X[r, vocab[w]] = c
        return X

    matrices = [counts(train), *(counts(o) for o in others)]
    idf = np.log((1 + len(train)) / (1 + (matrices[0] > 0).sum(0))) + 1
    rows = [X * idf for X in matrices]
    return [X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12) for X in rows]


def logistic_regression(X: np.ndarray, y: np.ndarray, C: float) -> np.ndarray:
    """Weights and bias (last) minimizing sum log(1 + exp(-y' (X w + b))) + |w|^2 / (2C),
    y' = 2y - 1, with scipy's L-BFGS (the bias is not penalized)."""
    from scipy.optimize import minimize

    y_pm = 2.0 * y - 1.0

    def loss_and_grad(wb):
        w, b = wb[:-1], wb[-1]
        margin = y_pm * (X @ w + b)
        g = -y_pm / (1 + np.exp(margin))
        return (np.logaddexp(0, -margin).sum() + 0.5 / C * w @ w,
                np.append(X.T @ g + w / C, g.sum()))

    return minimize(loss_and_grad, np.zeros(X.shape[1] + 1), jac=True, method="L-BFGS-B",
                    options={"maxiter": 1000}).x


def tfidf_baseline(train, validation, test, Cs=(0.1, 1.0, 10.0, 100.0)) -> dict:
    """TF-IDF + logistic regression for two labels, C picked by validation accuracy."""
    labels = list(label_set(train))
    F_train, F_val, F_test = tfidf_features(train, validation, test)

    def accuracy(wb, F, examples):
        truth = np.array([labels.index(e.label) for e in examples])
        return float(np.mean((F @ wb[:-1] + wb[-1] > 0) == truth))

    y = np.array([labels.index(e.label) for e in train], np.float64)
    fits = {C: logistic_regression(F_train, y, C) for C in Cs}
    best = max(Cs, key=lambda C: accuracy(fits[C], F_val, validation))
    return {"C": best, "validation_accuracy": accuracy(fits[best], F_val, validation),
            "test_accuracy": accuracy(fits[best], F_test, test)}


def main(argv: list[str] | None = None) -> int:
    host.keep_freed_memory()  # before JAX starts its CPU client
    parser = argparse.ArgumentParser(prog="python -m benchmarks.finetune")
    parser.add_argument("--init-from", required=True, help="a Hugging Face BERT directory")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--compare", default="tfidf,jaxlm,torch")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="finetune config overrides, e.g. train.learning_rate=5e-5")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    cfg = load(finetune.DEFAULT_CONFIG, [f"init_from={args.init_from}",
                                         f"finetune.epochs={args.epochs}",
                                         "train.progress_bar=false", *args.overrides],
               cls=FinetuneConfig)
    splits = finetune.read_splits(cfg, cfg.train.seed)
    report: dict = {"epochs": args.epochs, "train": len(splits["train"]),
                    "test": len(splits["test"])}
    compare = args.compare.split(",")
    if "tfidf" in compare:
        report["tfidf"] = tfidf_baseline(splits["train"], splits["validation"], splits["test"])
        print(f"tfidf + logistic regression (C={report['tfidf']['C']} by validation): test "
              f"accuracy {report['tfidf']['test_accuracy']:.4f}")
    if "jaxlm" in compare:
        setup_logging()
        results = finetune.run(cfg)
        report["jaxlm"] = {"epoch_s": results["epoch_s"],
                           "test_accuracy": results["test"]["accuracy"]}
        print(f"jaxlm: {results['epoch_s']:.1f} s/epoch, test accuracy "
              f"{results['test']['accuracy']:.4f}")
    if "torch" in compare:
        report["torch"] = torch_peer.finetune(args.init_from, splits, args.epochs, cfg)
        print(f"torch: {report['torch']['epoch_s']:.1f} s/epoch, test accuracy "
              f"{report['torch']['test_accuracy']:.4f}")
    if "jaxlm" in report and "torch" in report:
        report["torch_over_jaxlm_epoch_time"] = (report["torch"]["epoch_s"]
                                                 / report["jaxlm"]["epoch_s"])
        print(f"jaxlm is {report['torch_over_jaxlm_epoch_time']:.2f}x the speed of torch")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
