"""ROUGE-1/2/L against hand-computed pairs and against Google's rouge-score."""

import pytest
from test_bleu import _corpus

from jaxlm.objectives.rouge import corpus_rouge, lcs_length, rouge_l, rouge_n


def test_hand_computed_pair():
    hyp = "the cat was found under the bed".split()
    ref = "the cat was under the bed".split()
    # Unigrams: 6 of 7 hypothesis words in the reference: P 6/7, R 6/6.
    assert rouge_n(hyp, ref, 1) == pytest.approx(2 * (6 / 7) / (6 / 7 + 1))
    # Bigrams: the cat, cat was, under the, the bed match: P 4/6, R 4/5.
    assert rouge_n(hyp, ref, 2) == pytest.approx(2 * (4 / 6) * (4 / 5) / (4 / 6 + 4 / 5))
    assert lcs_length(hyp, ref) == 6  # the reference is a subsequence
    assert rouge_l(hyp, ref) == pytest.approx(rouge_n(hyp, ref, 1))
    assert corpus_rouge([], []) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


@pytest.mark.parametrize("seed", [0, 1])
def test_corpus_rouge_equals_rouge_score(seed):
    """Lower-case alphanumeric tokens, so that rouge-score's tokenizer keeps them as they
    are; its per-pair F-measures averaged."""
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    hyps, refs = _corpus(seed)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    pairs = [scorer.score(" ".join(r), " ".join(h)) for h, r in zip(hyps, refs, strict=True)]
    ours = corpus_rouge(hyps, refs)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert ours[key] == pytest.approx(sum(p[key].fmeasure for p in pairs) / len(pairs),
                                          abs=1e-12)
