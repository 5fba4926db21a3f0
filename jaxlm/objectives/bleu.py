"""Corpus BLEU (Papineni et al. 2002) and exact match, for scoring generated sequences.

BLEU = BP * exp(mean over n = 1..4 of log p_n), where p_n is the modified n-gram
precision over the whole corpus (each hypothesis n-gram counts at most as often as it
occurs in its reference, 2.1) and BP = exp(1 - r / c) when the hypotheses' total length c
is below the references' total length r, else 1 (2.2.2). One reference per hypothesis;
tokens are whatever the caller splits on (words, or token ids). No smoothing: a corpus
with no matching 4-gram scores 0, as in the paper.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence


def ngrams(tokens: Sequence, n: int) -> Counter:
    """Counts of the n-grams (as tuples) of `tokens`."""
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(hypotheses: Sequence[Sequence], references: Sequence[Sequence],
                max_n: int = 4) -> float:
    """BLEU in [0, 1] of `hypotheses` against one reference each."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    matches, totals = [0] * max_n, [0] * max_n
    hyp_length = ref_length = 0
    for hyp, ref in zip(hypotheses, references, strict=True):
        hyp_length += len(hyp)
        ref_length += len(ref)
        for n in range(1, max_n + 1):
            hyp_counts, ref_counts = ngrams(hyp, n), ngrams(ref, n)
            matches[n - 1] += sum(min(c, ref_counts[g]) for g, c in hyp_counts.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    if hyp_length == 0 or min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals, strict=True)) / max_n
    brevity = 1.0 if hyp_length >= ref_length else math.exp(1 - ref_length / hyp_length)
    return brevity * math.exp(log_precision)


def exact_match(hypotheses: Sequence[Sequence], references: Sequence[Sequence]) -> float:
    """Fraction of hypotheses identical to their reference."""
    if not references:
        return 0.0
    return sum(list(h) == list(r) for h, r in zip(hypotheses, references, strict=True)) / len(
        references)
