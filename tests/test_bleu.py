"""BLEU and exact match against hand-computed examples."""

import math

import pytest

from jaxlm.objectives.bleu import corpus_bleu, exact_match, ngrams


def test_identical_corpus_scores_one():
    refs = [["the", "cat", "sat", "on", "the", "mat"], ["a", "b", "c", "d"]]
    assert corpus_bleu(refs, refs) == pytest.approx(1.0)


def test_modified_precision_clips_repeated_words():
    # Papineni et al. 2.1: "the the the the the the the" against "the cat is on the mat":
    # unigram precision is 2/7, not 7/7 (and no bigram matches, so BLEU is 0).
    hyp = ["the"] * 7
    ref = ["the", "cat", "is", "on", "the", "mat"]
    assert sum(min(c, ngrams(ref, 1)[g]) for g, c in ngrams(hyp, 1).items()) == 2
    assert corpus_bleu([hyp], [ref]) == 0.0


def test_hand_computed_score_with_brevity_penalty():
    hyp = ["the", "cat", "sat", "on", "mat"]          # 5 tokens
    ref = ["the", "cat", "sat", "on", "the", "mat"]   # 6 tokens
    # matches / totals: 1-grams 5/5, 2-grams 3/4 (the cat, cat sat, sat on),
    # 3-grams 2/3, 4-grams 1/2; BP = exp(1 - 6/5).
    expected = math.exp(1 - 6 / 5) * (1 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert corpus_bleu([hyp], [ref]) == pytest.approx(expected)


def test_corpus_level_pools_counts_before_the_mean():
    a = (["a", "b", "c", "d"], ["a", "b", "c", "d"])            # 4/4 3/3 2/2 1/1
    b = (["x", "b", "c", "d", "e"], ["a", "b", "c", "d", "e"])  # 4/5 3/4 2/3 1/2
    expected = (8 / 9 * 6 / 7 * 4 / 5 * 2 / 3) ** 0.25  # c = r = 9: no brevity penalty
    assert corpus_bleu([a[0], b[0]], [a[1], b[1]]) == pytest.approx(expected)


def test_exact_match_and_errors():
    assert exact_match([[1, 2], [3]], [[1, 2], [4]]) == 0.5
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        corpus_bleu([[1], [2]], [[1]])


def _corpus(seed: int, n: int = 60) -> tuple[list[list[str]], list[list[str]]]:
    """Random hypothesis/reference pairs over a 12-word vocabulary (many partial overlaps)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(12)]
    refs = [list(rng.choice(words, rng.integers(4, 15))) for _ in range(n)]
    hyps = [[w if rng.random() < 0.7 else str(rng.choice(words)) for w in r][
        :max(1, len(r) + int(rng.integers(-3, 3)))] for r in refs]
    return hyps, refs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corpus_bleu_equals_sacrebleu(seed):
    """On pre-split tokens, without smoothing or sacrebleu's own tokenizer, the two agree."""
    sacrebleu = pytest.importorskip("sacrebleu")
    hyps, refs = _corpus(seed)
    theirs = sacrebleu.corpus_bleu([" ".join(h) for h in hyps], [[" ".join(r) for r in refs]],
                                   tokenize="none", smooth_method="none", force=True)
    assert 100 * corpus_bleu(hyps, refs) == pytest.approx(theirs.score, abs=1e-9)
