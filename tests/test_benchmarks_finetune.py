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
