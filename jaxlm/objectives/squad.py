"""The SQuAD v1.1 metrics: exact match and token F1 (Rajpurkar et al. 2016, "SQuAD: 100,000+
Questions for Machine Comprehension of Text", 6.1 "Model Evaluation").

Both compare answers after normalization: the paper ignores punctuation and the articles a,
an, the, and the official v1.1 evaluation also lower-cases and collapses whitespace. A
question scores the best value over its reference answers, and a set scores the mean over
its questions, as a percentage.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence

from jaxlm.data.squad import QAExample

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lower-case, delete ASCII punctuation, delete whole-word articles, single spaces.

    Punctuation is deleted rather than spaced, so "don't" becomes "dont", and before the
    articles, so "the-end" becomes "theend" and keeps no article.
    """
    s = s.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, truth: str) -> float:
    """1.0 when the normalized strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1(prediction: str, truth: str) -> float:
    """The harmonic mean of precision and recall of the normalized tokens, counted as bags.

    A token shared k times counts min(k in prediction, k in truth) times. When either side
    normalizes to no tokens the score is 0.0, even when both do, as in the v1.1 evaluation
    (v2.0 changed that case to 1.0); exact match then still gives 1.0.
    """
    predicted, true = normalize_answer(prediction).split(), normalize_answer(truth).split()
    shared = sum((Counter(predicted) & Counter(true)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(true)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Mapping[str, str],
                 examples: Sequence[QAExample]) -> dict[str, float]:
    """Exact match and F1 in percent over the examples, each the max over its references.

    A question without a prediction, or without any reference answer left, scores 0.
    Predictions for ids that are not among the examples are ignored.

    Returns:
      {"exact_match": percent, "f1": percent, "count": number of questions}.
    """
    if not examples:
        raise ValueError("no examples to score")
    em = f = 0.0
    for example in examples:
        if example.id in predictions and example.answers:
            prediction = predictions[example.id]
            em += max(exact_match(prediction, text) for text, _ in example.answers)
            f += max(f1(prediction, text) for text, _ in example.answers)
    return {"exact_match": 100 * em / len(examples), "f1": 100 * f / len(examples),
            "count": len(examples)}
