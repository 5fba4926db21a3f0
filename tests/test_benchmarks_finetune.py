"""The fine-tuning benchmark's bag-of-words baseline against scikit-learn."""

import numpy as np
import pytest

from benchmarks import finetune
from jaxlm.data.classification import Example

sklearn = pytest.importorskip("sklearn")


def _examples(seed, n):
    rng = np.random.default_rng(seed)
    good, bad, filler = ["great", "moving", "funny"], ["dull", "flat", "tedious"], [
        "the", "film", "plot", "is", "a", "story", "of", "cast", "and", "an"]
    out = []
    for i in range(n):
        label = i % 2
        words = list(rng.choice(filler, 6)) + list(rng.choice(good if label else bad, 1))
        if rng.random() < 0.2:  # noise: a word of the other side
            words.append(rng.choice(bad if label else good))
        rng.shuffle(words)
        out.append(Example(" ".join(words), "", str(label), i))
    return out


def test_tfidf_and_logistic_regression_match_scikit_learn():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train, test = _examples(0, 80), _examples(1, 40)
    ours_train, ours_test = finetune.tfidf_features(train, test)
    vectorizer = TfidfVectorizer()
    theirs_train = vectorizer.fit_transform([e.text for e in train]).toarray()
    theirs_test = vectorizer.transform([e.text for e in test]).toarray()
    np.testing.assert_allclose(ours_train, theirs_train, atol=1e-12)
    np.testing.assert_allclose(ours_test, theirs_test, atol=1e-12)

    y = np.array([int(e.label) for e in train])
    wb = finetune.logistic_regression(ours_train, y.astype(float), C=3.0)
    model = LogisticRegression(C=3.0, tol=1e-8, max_iter=10_000).fit(theirs_train, y)
    np.testing.assert_allclose(wb[:-1], model.coef_[0], atol=1e-3)  # solver tolerance
    np.testing.assert_allclose(wb[-1], model.intercept_[0], atol=1e-3)
    report = finetune.tfidf_baseline(train, test, test)
    assert report["test_accuracy"] == report["validation_accuracy"] > 0.8


def test_most_frequent_tag_baseline_by_hand():
    from jaxlm.data.tagging import TaggedSentence

    train = [TaggedSentence(("Paris", "is", "big"), ("B-loc", "O", "O"), 1),
             TaggedSentence(("Paris", "Hilton"), ("B-per", "I-per"), 2),
             TaggedSentence(("Paris", "again"), ("B-loc", "O"), 3)]
    test = [TaggedSentence(("Paris", "Hilton", "is", "new"), ("B-per", "I-per", "O", "O"), 4)]
    # Paris -> B-loc (2 of 3), Hilton -> I-per, is -> O, new (unseen) -> O (the most
    # frequent tag overall, 4 of 7): B-loc I-per O O. Gold entity per[0:2]; predicted
    # loc[0:1] and per[1:2] (an I- after another type starts a chunk): no entity right.
    report = finetune.most_frequent_tag_baseline(train, test)
    assert report == {"f1": 0.0, "accuracy": 0.75}


def test_first_sentence_baseline_by_hand():
    from jaxlm.data.squad import QAExample

    questions = [QAExample("a", "who?", "Ann Lee wrote it. Then she left.", (("Ann Lee", 0),),
                           "t"),
                 QAExample("b", "what?", "A cat sat. On a mat.", (("mat", 15),), "t")]
    # "Ann Lee wrote it." vs "Ann Lee": no exact match, F1 = 2 * (2/4 * 2/2) / (2/4 + 1)
    # = 2/3; "A cat sat." vs "mat": 0 and 0.
    report = finetune.first_sentence_baseline(questions)
    assert report["exact_match"] == 0.0
    np.testing.assert_allclose(report["f1"], 100 * (2 / 3) / 2)
