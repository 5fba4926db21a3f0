"""Fine-tuning benchmark, jaxlm against the references in the same run, for every task.

    python -m benchmarks.finetune --task classify --init-from path/to/all-MiniLM-L6
    python -m benchmarks.finetune --task ner --init-from ... --epochs 3
    python -m benchmarks.finetune --task qa --init-from ... data.max_train_examples=2000

Each task runs its config (configs/finetune_{classify,ner,pos,qa}.yaml, overridable) on the
same seeded splits:

- a baseline without a model: for classification TF-IDF features (raw counts x smoothed
  IDF, rows L2-normalised, as scikit-learn's defaults) and L2-regularised logistic
  regression fitted with scipy's L-BFGS, C in {0.1, 1, 10, 100} chosen on validation; for
  tagging each word's most frequent training tag (the overall most frequent one for unseen
  words); for question answering the first sentence of the passage;
- `jaxlm`: `jaxlm.finetune` from `--init-from` for `--epochs` (in a temporary run
  directory); seconds per epoch and the test scores of the best epoch by validation;
- `torch`: the Hugging Face head (`BertForSequenceClassification`, `...TokenClassification`,
  `...QuestionAnswering`) fine-tuned from the same checkpoint with torch's AdamW and the
  same recipe on jaxlm's encoded splits and batches, the same per-epoch validation, best
  epoch and early stopping, scored by the same code (`benchmarks.peers.torch.finetune`);
  seconds per epoch and test scores.

Seconds per epoch include the epoch's validation, on both sides; they are reported over all
epochs, for the first, and over the later ones, since jaxlm's first epoch also compiles its
steps (once per padded batch length; a persistent cache spares later seeds and reruns most
of it). `--seeds 0,1,2` repeats all of it for each `train.seed` (split, head initialisation,
dropout and batch order; the test splits are small, so one seed's scores are noisy). The
last line printed is one JSON object with every figure, the means over the seeds and the
ratios of mean epoch times.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from benchmarks.peers import torch as torch_peer
from jaxlm import finetune
from jaxlm.config import FinetuneConfig, load
from jaxlm.data import load_tokenizer
from jaxlm.data.classification import label_set
from jaxlm.finetuning import TASK_MODULES
from jaxlm.finetuning.common import TaskData
from jaxlm.inference.load import Pretrained, load_pretrained
from jaxlm.objectives.entities import entity_scores, token_accuracy
from jaxlm.objectives.registry import finetuning_task
from jaxlm.objectives.squad import squad_scores
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
    return {"C": best, "validation": {"accuracy": accuracy(fits[best], F_val, validation)},
            "test": {"accuracy": accuracy(fits[best], F_test, test)}}


def most_frequent_tag_baseline(train, test) -> dict:
    """Entity scores and word accuracy on `test` of tagging every word with its most frequent
    tag in `train` (sentences), or the most frequent tag overall for a word never seen."""
    by_word: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for sentence in train:
        for word, tag in zip(sentence.words, sentence.tags, strict=True):
            by_word[word][tag] += 1
    overall = collections.Counter(t for s in train for t in s.tags).most_common(1)[0][0]
    predicted = [[by_word[w].most_common(1)[0][0] if w in by_word else overall
                  for w in s.words] for s in test]
    gold = [list(s.tags) for s in test]
    scores = entity_scores(gold, predicted)
    return {"f1": scores["f1"], "accuracy": token_accuracy(gold, predicted)}


def first_sentence_baseline(questions) -> dict:
    """SQuAD exact match and F1 of answering every question with its passage's first
    sentence (up to the first ". ", "? " or "! ")."""
    answers = {q.id: re.split(r"(?<=[.?!])\s", q.context.strip(), maxsplit=1)[0]
               for q in questions}
    return squad_scores(answers, questions)


def initial_head(cfg: FinetuneConfig, pretrained: Pretrained, num_labels: int) -> dict:
    """The head's linear layer as `jaxlm.finetune` draws it for `cfg` ({"kernel", "bias"}):
    the PyTorch side starts from the same numbers, so that the sides differ by their dropout
    masks alone (the head's draw moved NER's entity F1 by up to 6 points)."""
    task = finetuning_task(cfg.finetune.task, num_labels, cfg.finetune.classifier_dropout)
    model_cfg = dataclasses.replace(pretrained.config, lora_rank=cfg.finetune.lora_rank,
                                    lora_alpha=cfg.finetune.lora_alpha)
    seed = cfg.train.seed

    @jax.jit
    def draw():  # jitted as `setup_state`'s initializer is, so the draw is the same
        module = task.build(model_cfg, nnx.Rngs(params=seed, dropout=seed))
        head = module.qa_outputs if cfg.finetune.task == "question_answering" else (
            module.classifier)
        return nnx.to_pure_dict(nnx.state(head, nnx.Param))

    return {k: np.asarray(v) for k, v in draw().items()}


def epoch_times(epochs_s: list[float]) -> dict:
    """{"epoch_s": the mean over all epochs, "first_epoch_s", "later_epoch_s": the mean over
    the epochs after the first (None after one epoch)}: jaxlm's first epoch also compiles
    its steps, once per padded batch length, which later epochs and rerun seeds do not."""
    later = epochs_s[1:]
    return {"epoch_s": statistics.mean(epochs_s), "first_epoch_s": epochs_s[0],
            "later_epoch_s": statistics.mean(later) if later else None}


TASKS = {"classify": "finetune_classify", "ner": "finetune_ner", "pos": "finetune_pos",
         "qa": "finetune_qa"}


def baseline(task: str, data: TaskData) -> dict:
    """The task's model-free baseline: {"test": scores} (module docstring)."""
    if task == "sequence_classification":
        fit = tfidf_baseline(*(data.examples[k] for k in ("train", "validation", "test")))
        return {"C": fit["C"], "test": fit["test"]}
    if task == "token_classification":
        scores = most_frequent_tag_baseline(data.examples["train"][0], data.examples["test"][0])
    else:
        scores = first_sentence_baseline(data.examples["test"][0])
    return {"test": _floats(scores)}


def _floats(scores: dict) -> dict:
    return {k: v for k, v in scores.items() if isinstance(v, float)}


def one_seed(args, cfg: FinetuneConfig) -> dict:
    """Every figure of the run with `cfg` (its `train.seed` fixes the split, the head's
    initialisation, the dropout masks and the batch order, for jaxlm and torch alike)."""
    task = cfg.finetune.task
    pretrained = load_pretrained(args.init_from)
    data = TASK_MODULES[task].read(cfg, load_tokenizer(pretrained.tokenizer_path))
    report: dict = {"seed": cfg.train.seed, "sizes": data.sizes,
                    "rows": {k: len(a["example_weights"]) for k, a in data.arrays.items()}}
    compare = args.compare.split(",")
    if "baseline" in compare:
        report["baseline"] = baseline(task, data)
        print(f"baseline: {report['baseline']}")
    if "jaxlm" in compare:
        with tempfile.TemporaryDirectory() as run_dir:
            cfg = dataclasses.replace(cfg, run_dir=run_dir)
            results = finetune.run(cfg)
            report["jaxlm"] = {**epoch_times(results["epochs_s"]),
                               "best_epoch": results["best_step"] // (
                                   len(data.arrays["train"]["example_weights"])
                                   // cfg.train.batch_size),
                               "test": _floats(results["test"])}
        print(f"jaxlm: {described(report['jaxlm'])}, test {report['jaxlm']['test']}")
    if "torch" in compare:
        theirs = torch_peer.finetune(args.init_from, data, args.epochs, cfg,
                                     initial_head(cfg, pretrained, len(data.labels)))
        report["torch"] = {**epoch_times(theirs["epochs_s"]), "best_epoch": theirs["epoch"],
                           "test": _floats(theirs["test"])}
        print(f"torch: {described(report['torch'])}, test {report['torch']['test']}")
    return report


def mean_over_seeds(reports: list[dict]) -> dict:
    """Each side's mean test scores and seconds per epoch over the seeds."""
    means = {}
    for side in ("baseline", "jaxlm", "torch"):
        if side not in reports[0]:
            continue
        test = [r[side]["test"] for r in reports]
        means[side] = {"test": {k: statistics.mean(t[k] for t in test) for k in test[0]}}
        for key in ("epoch_s", "first_epoch_s", "later_epoch_s"):
            values = [r[side].get(key) for r in reports]
            if None not in values:
                means[side][key] = statistics.mean(values)
    return means


def described(times: dict) -> str:
    """"X s/epoch (first Y, later Z)" for `epoch_times`' figures."""
    later = times["later_epoch_s"]
    return (f"{times['epoch_s']:.1f} s/epoch (first {times['first_epoch_s']:.1f}"
            + (f", later {later:.1f})" if later is not None else ")"))


def main(argv: list[str] | None = None) -> int:
    host.keep_freed_memory()  # before JAX starts its CPU client
    host.cache_compilations()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.finetune")
    parser.add_argument("--task", choices=sorted(TASKS), default="classify")
    parser.add_argument("--init-from", required=True, help="a Hugging Face BERT directory")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", default="0", help="comma-separated train.seed values")
    parser.add_argument("--compare", default="baseline,jaxlm,torch")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="finetune config overrides, e.g. train.learning_rate=5e-5")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    config = Path(finetune.DEFAULT_CONFIG).with_name(f"{TASKS[args.task]}.yaml")
    setup_logging()
    reports = []
    for seed in args.seeds.split(","):
        cfg = load(config, [f"init_from={args.init_from}", f"finetune.epochs={args.epochs}",
                            "train.progress_bar=false", *args.overrides, f"train.seed={seed}"],
                   cls=FinetuneConfig)
        reports.append(one_seed(args, cfg))
    report = {"task": cfg.finetune.task, "epochs": args.epochs, "overrides": args.overrides,
              "seeds": reports, "mean": mean_over_seeds(reports)}
    mean = report["mean"]
    if "jaxlm" in mean and "torch" in mean:
        for key in ("epoch_s", "later_epoch_s"):
            if key in mean["jaxlm"] and key in mean["torch"]:
                report[f"torch_over_jaxlm_{key.removesuffix('_s')}_time"] = (
                    mean["torch"][key] / mean["jaxlm"][key])
        later = report.get("torch_over_jaxlm_later_epoch_time")
        print(f"over {len(reports)} seeds: jaxlm {mean['jaxlm']['test']}, torch "
              f"{mean['torch']['test']}; jaxlm is {report['torch_over_jaxlm_epoch_time']:.2f}x "
              f"the speed of torch per epoch"
              + (f", {later:.2f}x after the first epoch" if later is not None else ""))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
