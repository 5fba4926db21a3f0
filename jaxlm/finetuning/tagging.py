"""Token classification (BERT 5.3): tagged words (NER, part-of-speech); scored by entity
precision/recall/F1 as seqeval computes them and by word accuracy."""

from __future__ import annotations

import functools

import numpy as np
from tokenizers import Tokenizer

from jaxlm.config import FinetuneConfig
from jaxlm.data import tagging
from jaxlm.finetuning.common import SPLITS, TaskData, read_splits
from jaxlm.objectives.entities import entity_scores, token_accuracy

# Built-in data sets: (fetch, file format).
DATASETS = {"wnut16": (tagging.fetch_wnut16, "conll"),
            "wsj_pos": (tagging.fetch_wsj_pos, "word_tag")}


def read(cfg: FinetuneConfig, tokenizer: Tokenizer) -> TaskData:
    """The splits of the tagged files (WNUT-16 by default, `data.dataset=wsj_pos` for POS),
    encoded; the tag set comes from the training file.

    Raises:
      DataError: unreadable files, a tag that training lacks (naming file and line), no
        validation sentences.
    """
    data = cfg.data
    fmt, train_file = data.format, data.train_file
    if not train_file:
        fetch, fmt = DATASETS[cfg.dataset]
        train_file = fetch(data.cache_dir)
    splits, whole_file = read_splits(
        data, lambda path: tagging.read_tagged(path, fmt, data.tag_column), train_file,
        cfg.train.seed)
    tags = tagging.tag_set(whole_file)
    arrays, word_index, truncated = {}, {}, {}
    for name in SPLITS:
        tagging.check_tags(splits[name], tags, getattr(data, f"{name}_file") or train_file)
        arrays[name], truncated[name] = tagging.encode(tokenizer, splits[name], tags,
                                                       data.max_seq_length)
        word_index[name] = arrays[name].pop("word_index")  # for scoring, not for the model
    examples = {k: (splits[k], word_index[k]) for k in SPLITS}
    return TaskData(arrays=arrays, examples=examples, labels=tags,
                    sizes={k: len(v) for k, v in splits.items()},
                    notes={"truncated": truncated},
                    score=functools.partial(score, examples, tags))


def score(examples: dict, tags: tuple[str, ...], split: str, logits_NTK: np.ndarray) -> dict:
    """Entity precision, recall and F1 (micro, BIO chunks as seqeval reads them; per type too)
    and the fraction of words tagged right, every word counted (cut-off ones included)."""
    sentences, word_index_NT = examples[split]
    gold = [list(s.tags) for s in sentences]
    predicted = tagging.word_predictions(np.argmax(logits_NTK, -1), word_index_NT, sentences,
                                         tags)
    return {**entity_scores(gold, predicted), "accuracy": token_accuracy(gold, predicted)}
