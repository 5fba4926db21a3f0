"""Answer questions about passages with a fine-tuned extractive QA model (BERT 4.2).

Each question and its passage are cut into windows as in training (`squad.make_windows`),
scored window by window, and the best span over all windows of a question is cut from
the original passage.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

from jaxlm.config import FinetuneDataConfig
from jaxlm.data.squad import Answer, QAExample, best_answers, make_windows
from jaxlm.inference.fill_mask import bucket
from jaxlm.models.bert import BertForQuestionAnswering


@functools.cache
def _forward(graphdef):
    @jax.jit
    def forward(state, ids_BT, types_BT, mask_BT):
        return nnx.merge(graphdef, state)(ids_BT, types_BT, mask_BT)

    return forward


def answer(model: BertForQuestionAnswering, tokenizer, questions: list[tuple[str, str]],
           data: FinetuneDataConfig, batch_size: int = 64) -> list[Answer]:
    """The best answer span of each (question, passage), with its score (start + end logit)
    and character offsets in the passage; windows and span limits as `data` (the run's)
    sets them.

    Raises:
      ValueError: an empty question or passage.
    """
    for i, (question, context) in enumerate(questions):
        if not question.strip() or not context.strip():
            raise ValueError(f"question {i + 1}: the question and the passage must not be "
                             f"empty")
    examples = [QAExample(str(i), q, c, (), "") for i, (q, c) in enumerate(questions)]
    arrays, windows = make_windows(tokenizer, examples, data.max_seq_length,
                                   data.max_query_length, data.doc_stride)
    graphdef, state = nnx.split(model)
    N, T_max = arrays["input_ids"].shape
    start_NT = np.full((N, T_max), -np.inf, np.float32)
    end_NT = np.full((N, T_max), -np.inf, np.float32)
    for first in range(0, N, batch_size):
        rows = slice(first, first + batch_size)
        T = bucket(int(arrays["attention_mask"][rows].sum(1).max()), T_max)
        start, end = _forward(graphdef)(state, arrays["input_ids"][rows, :T],
                                        arrays["token_type_ids"][rows, :T],
                                        arrays["attention_mask"][rows, :T])
        start_NT[rows, :T], end_NT[rows, :T] = np.asarray(start), np.asarray(end)
    best = best_answers(start_NT, end_NT, windows, examples, data.n_best,
                        data.max_answer_length)
    return [best[e.id] for e in examples]
