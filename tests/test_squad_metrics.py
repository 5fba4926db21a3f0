"""SQuAD v1.1 exact match and F1, against cases worked out by hand from the definition."""

import pytest

from jaxlm.data.squad import QAExample
from jaxlm.objectives.squad import exact_match, f1, normalize_answer, squad_scores


@pytest.mark.parametrize("text, normalized", [
    ("The  Quick, brown\tfox!", "quick brown fox"),  # case, punctuation, an article, spaces
    # Articles go only as whole words: "anna" and "theatre" keep their letters.
    ("Anna ate an apple at the theatre", "anna ate apple at theatre"),
    ("A", ""),
    # Punctuation is deleted, not replaced by a space, and before the articles go, so
    # "the-end" becomes the single word "theend".
    ("don't stop", "dont stop"),
    ("U.S.A.", "usa"),
    ("the-end", "theend"),
    ("Zürich–Bern", "zürich–bern"),  # the en dash is not in string.punctuation
    ("  (the)  ", ""),
])
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match():
    assert exact_match("The Eiffel Tower", "eiffel tower.") == 1.0  # both "eiffel tower"
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    assert exact_match("the", "a") == 1.0  # both normalize to ""


def test_f1_partial_overlap():
    # "cat sat on mat" (4 tokens) vs "cat on mat" (3): 3 shared; P = 3/4, R = 3/3,
    # F1 = 2 * 3/4 * 1 / (3/4 + 1) = 6/7.
    assert f1("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
    # "eiffel" vs "eiffel tower": 1 shared; P = 1, R = 1/2, F1 = 2 * 1/2 / (3/2) = 2/3.
    assert f1("Eiffel", "Eiffel Tower") == pytest.approx(2 / 3)
    assert f1("Paris", "Lyon") == 0.0
    assert f1("Tower, Eiffel", "the eiffel tower") == 1.0  # a bag: order does not matter


def test_f1_counts_repeated_tokens_once_per_match():
    # "red red red" vs "red blue": "red" matches min(3, 1) = 1 time; P = 1/3, R = 1/2,
    # F1 = 2 * 1/6 / (1/3 + 1/2) = (1/3) / (5/6) = 2/5. (Counting each predicted "red" that
    # occurs in the truth would give P = 1 and F1 = 2/3.)
    assert f1("red red red", "red blue") == pytest.approx(2 / 5)
    # "new new york" vs "new york new new": "new" min(2, 3) = 2, "york" 1, so 3 shared;
    # P = 3/3, R = 3/4, F1 = 2 * 3/4 / (7/4) = 6/7.
    assert f1("new new york", "new york new new") == pytest.approx(6 / 7)


def test_f1_of_empty_answers():
    assert f1("", "Paris") == 0.0  # no predicted tokens: precision is undefined, F1 is 0
    assert f1("Paris", "...") == 0.0  # a reference with no tokens after normalization
    assert f1("the", "a") == 0.0  # both empty: 0 in v1.1, although exact match gives 1


def example(qid: str, *answers: str) -> QAExample:
    return QAExample(qid, "?", " ".join(answers), tuple((a, 0) for a in answers), "t")


def test_squad_scores_max_over_references_and_mean_over_questions():
    examples = [example("broncos", "Denver Broncos", "the Denver Broncos"),
                example("year", "1911", "in 1911"),
                example("missing", "Paris"),
                example("red", "red blue"),
                example("whale", "blue whale", "whale")]
    predictions = {"broncos": "Broncos", "year": "in 1911", "red": "red red red",
                   "whale": "the whale", "extra": "ignored"}
    # broncos: EM 0; F1 "broncos" vs "denver broncos": P = 1, R = 1/2 -> 2/3 for both refs.
    # year: EM 1 and F1 1 against "in 1911" (against "1911": F1 2 * 1/2 * 1 / (3/2) = 2/3).
    # missing: no prediction, 0 and 0.
    # red: EM 0, F1 2/5 (see above).
    # whale: "the whale" normalizes to "whale": EM 1 and F1 1 against "whale" (2/3 against
    # "blue whale").
    # EM = (0 + 1 + 0 + 0 + 1) / 5 = 40%; F1 = (2/3 + 1 + 0 + 2/5 + 1) / 5 = (46/15) / 5
    # = 46/75 = 61.333...%.
    scores = squad_scores(predictions, examples)
    assert scores == {"exact_match": pytest.approx(40.0), "f1": pytest.approx(4600 / 75),
                      "count": 5}


def test_squad_scores_edge_cases():
    # A question whose every reference was dropped scores 0 (there is nothing to match).
    assert squad_scores({"q": "x"}, [example("q")]) == {"exact_match": 0.0, "f1": 0.0,
                                                         "count": 1}
    with pytest.raises(ValueError, match="no examples"):
        squad_scores({}, [])
