"""Extractive question answering (BERT 4.2): SQuAD questions on passages; scored by the
official SQuAD v1.1 exact match and F1 (percent), each question's best span over its
context windows."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from tokenizers import Tokenizer

from jaxlm.config import FinetuneConfig
from jaxlm.data import squad
from jaxlm.finetuning.common import SPLITS, TaskData, read_splits
from jaxlm.objectives.squad import squad_scores

# The built-in data: trained on the four SQuADShifts sets (with a split-off validation
# part), tested on SQuAD v1.1 dev, so the test passages are from articles never trained on.
SHIFTS = ("new_wiki", "nyt", "reddit", "amazon")


def read(cfg: FinetuneConfig, tokenizer: Tokenizer) -> TaskData:
    """The splits of the SQuAD files (SQuADShifts and SQuAD v1.1 dev by default), cut into
    windows. Training questions without a locatable answer are left out (counted in the
    notes, with the answers found at another offset than the file's).

    Raises:
      DataError: unreadable files, no validation questions, no room for the context.
    """
    data = cfg.data
    notes: dict = {"answers_moved": {}, "answers_dropped": {}, "questions_dropped": {}}

    def read_file(path, training: bool) -> list[squad.QAExample]:
        result = squad.read_squad(path, training)
        for key, count in (("answers_moved", result.moved), ("answers_dropped", result.dropped),
                           ("questions_dropped", result.dropped_questions)):
            notes[key][str(path)] = count
        return result.examples

    def read_any(path) -> list[squad.QAExample]:  # a tuple: the training files
        if isinstance(path, tuple):
            return [e for one in path for e in read_file(one, training=True)]
        return read_file(path, training=False)

    if data.train_file:
        train_paths = (data.train_file,)
    else:
        files = squad.fetch_squad_shifts(data.cache_dir)
        train_paths = tuple(str(files[name]) for name in SHIFTS)
        data = dataclasses.replace(data, test_file=str(files["squad_dev"]))
    splits, _ = read_splits(data, read_any, train_paths, cfg.train.seed)
    arrays, windows = {}, {}
    notes["windows_without_answer"] = {}
    for name in SPLITS:
        arrays[name], windows[name] = squad.make_windows(
            tokenizer, splits[name], data.max_seq_length, data.max_query_length,
            data.doc_stride)
        del arrays[name]["example_index"]  # in `windows`, for scoring
        notes["windows_without_answer"][name] = windows[name].no_answer
    examples = {k: (splits[k], windows[k]) for k in SPLITS}
    return TaskData(arrays=arrays, examples=examples, labels=(),
                    sizes={k: len(v) for k, v in splits.items()}, notes=notes,
                    score=functools.partial(score, examples, data.n_best,
                                            data.max_answer_length))


def score(examples: dict, n_best: int, max_answer_length: int, split: str,
          outputs: tuple[np.ndarray, np.ndarray]) -> dict:
    """SQuAD v1.1 exact match and F1 in percent (max over each question's answers) of the
    best span of every question of `split` (`squad.best_answers`)."""
    questions, windows = examples[split]
    start_NT, end_NT = outputs
    answers = squad.best_answers(start_NT, end_NT, windows, questions, n_best,
                                 max_answer_length)
    scores = squad_scores({k: a.text for k, a in answers.items()}, questions)
    return {"exact_match": scores["exact_match"], "f1": scores["f1"]}
