"""The classify command line on a fine-tuned run (trained once, tiny)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlm import classify as classify_cli
from jaxlm.data import load_tokenizer
from jaxlm.inference import classify
from jaxlm.models.bert import BertForSequenceClassification


def test_command_line_errors_are_named(tmp_path, capsys):
    assert classify_cli.main(["--checkpoint", str(tmp_path / "none"), "good"]) == 1
    assert "no checkpoint found" in capsys.readouterr().err
    assert classify_cli.main(["--checkpoint", str(tmp_path), "--file",
                          str(tmp_path / "missing.txt")]) == 1
    assert "missing.txt not found" in capsys.readouterr().err
    assert classify_cli.main(["--checkpoint", str(tmp_path)]) == 1
    assert "no texts given" in capsys.readouterr().err


WORDS = ["fine", "film", "dull", "witty", "a", "the", "and", "mess"]


@pytest.fixture
def tiny_classifier_parts(tiny_config, tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    model = BertForSequenceClassification(tiny_config, 3, classifier_dropout=0.1,
                                          rngs=nnx.Rngs(0))
    model.eval()
    return model, load_tokenizer(vocab), ("a", "b", "c")


def test_sorted_padded_batches_equal_each_text_alone(tiny_classifier_parts):
    """Texts of 1 to 20 words and a pair, in batches of 4 (rows padded to a power of two,
    lengths to a multiple of 8, the last layer at [CLS] only), against each text alone."""
    model, tokenizer, labels = tiny_classifier_parts
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, n)) for n in (3, 20, 1, 9, 14)] + ["fine\tdull film"]
    got = classify.Classifier(model, tokenizer, labels, 64)(texts, batch_size=4)
    for text, ranked in zip(texts, got, strict=True):
        e = tokenizer.encode(*text.split("\t"))
        logits_1K = model(jnp.array([e.ids]), jnp.array([e.type_ids]),
                          jnp.ones((1, len(e.ids)), jnp.int32))
        expected = np.asarray(jax.nn.softmax(logits_1K, -1))[0]
        assert [label for label, _ in ranked] == [labels[k] for k in np.argsort(-expected)]
        np.testing.assert_allclose([p for _, p in sorted(ranked)], expected, atol=1e-5)


def test_empty_text_is_an_error(tiny_classifier_parts):
    with pytest.raises(ValueError, match="text 2 is empty"):
        classify.classify(*tiny_classifier_parts, ["fine", "  "], 16)
