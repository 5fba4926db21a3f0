"""Sequence classification (BERT 4.1): labelled sentences or sentence pairs; scored by
accuracy, macro-F1 and the confusion matrix."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from tokenizers import Tokenizer

from jaxlm.config import FinetuneConfig
from jaxlm.data import classification as cls_data
from jaxlm.finetuning.common import SPLITS, TaskData, read_splits
from jaxlm.objectives.tasks import confusion_metrics


def read(cfg: FinetuneConfig, tokenizer: Tokenizer) -> TaskData:
    """The splits of the labelled files (the Pang & Lee polarity data by default), encoded;
    the label set comes from the training file.

    Raises:
      DataError: unreadable files, a label that training lacks, no validation examples.
    """
    data = cfg.data
    if not data.train_file and not data.column_names:
        data = dataclasses.replace(data, column_names=cls_data.POLARITY_COLUMNS)
    train_file = data.train_file or cls_data.fetch_polarity(data.cache_dir)
    splits, whole_file = read_splits(data, lambda path: cls_data.read_examples(path, data),
                                     train_file, cfg.train.seed)
    labels = cls_data.label_set(whole_file)
    arrays, truncated = {}, {}
    for name in SPLITS:
        arrays[name], truncated[name] = cls_data.encode(
            tokenizer, splits[name], labels, data.max_seq_length, name)
    return TaskData(arrays=arrays, examples=splits, labels=labels,
                    sizes={k: len(v) for k, v in splits.items()},
                    notes={"truncated": truncated},
                    score=functools.partial(score, {k: a["label"] for k, a in arrays.items()},
                                            len(labels)))


def score(labels: dict[str, np.ndarray], K: int, split: str, logits_NK: np.ndarray) -> dict:
    """Accuracy, macro-F1 and the confusion matrix (rows: true label) of one split."""
    confusion_KK = np.zeros((K, K), np.int64)
    np.add.at(confusion_KK, (labels[split], np.argmax(logits_NK, -1)), 1)
    return {**confusion_metrics(confusion_KK), "confusion": confusion_KK.tolist()}
