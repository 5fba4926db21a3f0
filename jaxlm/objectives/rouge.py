"""ROUGE-1, ROUGE-2 and ROUGE-L (Lin 2004), for scoring generated sequences.

ROUGE-N compares n-gram counts of a hypothesis and its reference (the overlap counts an
n-gram min(times in each) times, section 2); ROUGE-L their longest common subsequence
(LCS, section 3.1). Each gives precision = overlap / hypothesis count, recall = overlap /
reference count and F1 = 2 P R / (P + R), per pair; the corpus figure is the mean over
pairs, as rouge-score reports them. Tokens are whatever the caller splits on.
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxlm.objectives.bleu import ngrams


def _f1(overlap: int, hypothesis: int, reference: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / hypothesis, overlap / reference
    return 2 * precision * recall / (precision + recall)


def rouge_n(hypothesis: Sequence, reference: Sequence, n: int) -> float:
    """ROUGE-N F1 of one pair."""
    hyp, ref = ngrams(hypothesis, n), ngrams(reference, n)
    overlap = sum(min(c, ref[g]) for g, c in hyp.items())
    return _f1(overlap, sum(hyp.values()), sum(ref.values()))


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence, by dynamic programming over a's prefixes."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(hypothesis: Sequence, reference: Sequence) -> float:
    """ROUGE-L F1 of one pair."""
    return _f1(lcs_length(hypothesis, reference), len(hypothesis), len(reference))


def corpus_rouge(hypotheses: Sequence[Sequence], references: Sequence[Sequence]) -> dict:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 over the pairs, in [0, 1]."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not references:
        return {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    pairs = list(zip(hypotheses, references, strict=True))
    return {"rouge1": sum(rouge_n(h, r, 1) for h, r in pairs) / len(pairs),
            "rouge2": sum(rouge_n(h, r, 2) for h, r in pairs) / len(pairs),
            "rougeL": sum(rouge_l(h, r) for h, r in pairs) / len(pairs)}
