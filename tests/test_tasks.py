"""Task losses and metrics against numpy re-derivations."""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlm.objectives import tasks
from jaxlm.objectives.registry import classify_task


def test_classifier_sums_match_numpy(tiny_config):
    """Cross entropy, hits and confusion of BertForSequenceClassification, padding rows
    (weight 0) left out; the head is pooled [CLS] @ W + b."""
    task = classify_task(num_labels=3, classifier_dropout=0.1)
    model = task.build(tiny_config, nnx.Rngs(0))
    model.eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 99, (4, 10)).astype(np.int32)
    batch = {"input_ids": ids, "token_type_ids": np.zeros_like(ids),
             "attention_mask": np.ones_like(ids), "label": np.array([0, 2, 1, 2], np.int32),
             "example_weights": np.array([1, 1, 1, 0], np.float32)}
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    _, pooled = model.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    logits = (np.asarray(pooled) @ np.asarray(model.classifier.kernel[...])
              + np.asarray(model.classifier.bias[...]))
    np.testing.assert_allclose(model(batch["input_ids"], batch["token_type_ids"],
                                     batch["attention_mask"]), logits, atol=1e-5)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    labels, w = np.array([0, 2, 1, 2]), np.array([1, 1, 1, 0])
    sums = task.sums(model, batch)
    np.testing.assert_allclose(sums["cls_loss"], -(logp[np.arange(4), labels] * w).sum(),
                               rtol=1e-5)
    predicted = logits.argmax(-1)
    assert float(sums["cls_correct"]) == ((predicted == labels) * w).sum()
    assert float(task.counts(batch)["cls"]) == 3.0


def test_confusion_metrics_by_hand():
    # true 0: 3 right, 1 called 1; true 1: 1 right, 1 called 0; class 2 never seen.
    confusion = [[3, 1, 0], [1, 1, 0], [0, 0, 0]]
    m = tasks.confusion_metrics(confusion)
    assert m["accuracy"] == 4 / 6
    f1_0 = 2 * 3 / (4 + 4)  # precision 3/4, recall 3/4
    f1_1 = 2 * 1 / (2 + 2)  # precision 1/2, recall 1/2
    assert np.isclose(m["macro_f1"], (f1_0 + f1_1 + 0.0) / 3)
