"""Entity-level scores: the conlleval chunk rules, by hand and against seqeval."""

import warnings

import numpy as np
import pytest
from seqeval.metrics import (
    accuracy_score,
    classification_report,
    f1_score,
    precision_score,
    recall_score,
)

from jaxlm.objectives.entities import chunks, entity_groups, entity_scores, token_accuracy


@pytest.mark.parametrize("tags, expected", [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
    (["O", "I-PER", "I-PER", "O"], [("PER", 1, 3)]),  # an I- after O starts a chunk
    (["I-MISC"], [("MISC", 0, 1)]),
    (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),  # the type changes
    (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),  # B- always starts one
    (["B-geo-loc", "I-geo-loc"], [("geo-loc", 0, 2)]),  # the type is all after the first "-"
    (["PER", "PER", "O", "LOC"], [("ER", 0, 2), ("OC", 3, 4)]),  # no prefix: seqeval's reading
    (["B", "I", "O", "I", "I"], [("_", 0, 2), ("_", 3, 5)]),  # untyped BIO: type "_"
    (["O", "O"], []),
    ([], []),
])
def test_chunks_by_hand(tags, expected):
    assert chunks(tags) == expected


def test_entity_scores_by_hand():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "O"]]
    # Gold PER, LOC, ORG; predicted PER, ORG (at LOC's span), ORG (an I- starts it): 2 correct.
    scores = entity_scores(true, pred)
    assert scores["precision"] == pytest.approx(2 / 3, abs=1e-15)
    assert scores["recall"] == pytest.approx(2 / 3, abs=1e-15)
    assert scores["f1"] == pytest.approx(2 / 3, abs=1e-15)
    assert scores["per_type"] == {
        "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "ORG": {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3, abs=1e-15),
                "support": 1},
        "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}}
    assert token_accuracy(true, pred) == pytest.approx(4 / 6, abs=1e-15)
    # A span that is one token short is wrong, and nothing predicted scores 0, not NaN.
    assert entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])["f1"] == 0.0
    assert entity_scores([["B-PER"]], [["O"]]) == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0,
        "per_type": {"PER": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}}}


def test_mismatched_lengths_are_errors():
    with pytest.raises(ValueError, match="2 true sequences but 1 predicted"):
        entity_scores([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sequence 0: 2 true tags but 1 predicted"):
        token_accuracy([["O", "O"]], [["O"]])


def test_entity_groups():
    words = ["Empire", "State", "Building", "in", "New", "York"]
    tags = ["B-facility", "I-facility", "I-facility", "O", "B-geo-loc", "I-geo-loc"]
    assert entity_groups(words, tags) == [("facility", 0, 3, "Empire State Building"),
                                          ("geo-loc", 4, 6, "New York")]


def seqeval_scores(true, pred) -> dict:
    """entity_scores' figures as seqeval computes them (default mode, micro average)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero divisions, tags without a B-/I- prefix
        report = classification_report(true, pred, output_dict=True)
        return {"precision": precision_score(true, pred), "recall": recall_score(true, pred),
                "f1": f1_score(true, pred), "accuracy": accuracy_score(true, pred),
                "per_type": {t: {"precision": r["precision"], "recall": r["recall"],
                                 "f1": r["f1-score"], "support": int(r["support"])}
                             for t, r in report.items() if not t.endswith(" avg")}}


def assert_agrees(true, pred):
    ours, theirs = entity_scores(true, pred), seqeval_scores(true, pred)
    for key in ("precision", "recall", "f1"):
        assert abs(ours[key] - theirs[key]) <= 1e-12, (key, true, pred)
    assert abs(token_accuracy(true, pred) - theirs["accuracy"]) <= 1e-12
    assert list(ours["per_type"]) == list(theirs["per_type"]), (true, pred)
    for name, row in ours["per_type"].items():
        assert row["support"] == theirs["per_type"][name]["support"]
        for key in ("precision", "recall", "f1"):
            assert abs(row[key] - theirs["per_type"][name][key]) <= 1e-12, (name, key, true)


@pytest.mark.parametrize("true, pred", [
    ([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-LOC"]]),
    ([["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]),  # I- without B- matches B-
    ([["O", "I-PER", "I-LOC", "I-LOC"]], [["O", "B-PER", "B-LOC", "I-LOC"]]),
    ([["B-PER", "I-LOC", "O"]], [["B-PER", "I-PER", "O"]]),  # the type changes mid-entity
    ([["B-ORG", "I-ORG"], ["I-ORG", "O"]], [["B-ORG", "O"], ["B-ORG", "I-ORG"]]),
    ([["I-PER"], ["I-PER"]], [["I-PER"], ["B-PER"]]),  # sentences do not join
    ([["PER", "PER", "O", "B-ER"]], [["B-ER", "I-ER", "O", "PER"]]),  # no prefix
    ([["B-PER", "O"]], [["O", "O"]]),
    ([["O", "O"]], [["B-MISC", "I-MISC"]]),
    ([["B", "I", "O", "I"]], [["B", "I", "O", "B"]]),
    ([["O"]], [["O"]]),
])
def test_agrees_with_seqeval_by_hand(true, pred):
    assert_agrees(true, pred)


def test_agrees_with_seqeval_on_random_sequences():
    rng = np.random.default_rng(2003)
    alphabet = ["O"] * 6 + [f"{p}-{t}" for p in "BIES" for t in ("PER", "LOC", "geo-loc")]
    alphabet += ["MISC", "B", "I"]  # a tag without a prefix; untyped BIO
    for _ in range(300):
        true = [[str(t) for t in rng.choice(alphabet, size=rng.integers(1, 9))]
                for _ in range(rng.integers(1, 5))]
        # Mostly right, so that many entities match: each tag changes with probability 0.3.
        pred = [[str(rng.choice(alphabet)) if rng.random() < 0.3 else t for t in s]
                for s in true]
        assert_agrees(true, pred)
