"""What every fine-tuning task hands to the shared run."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import numpy as np

from jaxlm.config import FinetuneDataConfig
from jaxlm.data import DataError
from jaxlm.data.classification import split

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class TaskData:
    """A task's labelled data, encoded.

    `arrays[split]` holds the model's inputs and targets, one row per example (per context
    window for question answering), with `example_weights`; `examples[split]` what scoring
    needs besides the outputs (the sentences, the questions and their windows); `score`
    scores a split from the head's outputs for its rows, in order.
    """

    arrays: dict[str, dict[str, np.ndarray]]
    examples: dict[str, typing.Any]
    labels: tuple[str, ...]  # saved with the model; () for question answering
    sizes: dict[str, int]  # examples (questions) per split
    notes: dict  # what preprocessing cut or dropped, for results.json
    score: typing.Callable[[str, typing.Any], dict]  # (split, the head's outputs) -> scores


def sample(items: list, limit: int, seed: int) -> list:
    """A seeded sample of `limit` items in their original order (all of them if `limit` is
    0 or not smaller)."""
    if not limit or limit >= len(items):
        return items
    keep = np.sort(np.random.default_rng(seed).permutation(len(items))[:limit])
    return [items[i] for i in keep]


def read_splits(cfg: FinetuneDataConfig, read: typing.Callable[[str | Path], list],
                train_file: str | Path, seed: int) -> tuple[dict[str, list], list]:
    """train / validation / test items (`read` of each file), splitting the training file
    by the fractions where no validation or test file is given, and sampling
    `max_train_examples` / `max_eval_examples`; and every item of the training file, where
    labels and tags come from (so that a rare one split off or left out is still known).

    Raises:
      DataError: no validation examples.
    """
    items = read(train_file)
    val_frac = 0.0 if cfg.validation_file else cfg.validation_fraction
    test_frac = 0.0 if cfg.test_file else cfg.test_fraction
    train, val, test = split(items, val_frac, test_frac, seed)
    if cfg.validation_file:
        val = read(cfg.validation_file)
    if cfg.test_file:
        test = read(cfg.test_file)
    if not val:
        raise DataError("no validation examples: set data.validation_file or "
                        "data.validation_fraction > 0")
    return {"train": sample(train, cfg.max_train_examples, seed),
            "validation": sample(val, cfg.max_eval_examples, seed),
            "test": sample(test, cfg.max_eval_examples, seed)}, items

