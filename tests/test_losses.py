import jax.numpy as jnp
import numpy as np

from jaxlm import losses


def _np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_masked_lm_loss_and_accuracy_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 11)).astype(np.float32)
    labels = rng.integers(0, 11, (3, 4))
    labels[0, 0] = logits[0, 0].argmax()
    weights = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], np.float32)
    logp = _np_log_softmax(logits.astype(np.float64))
    nll = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    expected = (nll * weights).sum() / weights.sum()
    got = losses.masked_lm_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    correct = (logits.argmax(-1) == labels) * weights
    acc = losses.masked_lm_accuracy(jnp.asarray(logits), jnp.asarray(labels),
                                    jnp.asarray(weights))
    np.testing.assert_allclose(acc, correct.sum() / weights.sum(), rtol=1e-6)


def test_padding_predictions_do_not_count():
    logits = np.zeros((1, 3, 5), np.float32)
    logits[0, 2, 4] = 100.0  # a confident, wrong padding prediction
    labels = np.array([[1, 2, 0]])
    weights = np.array([[1.0, 1.0, 0.0]], np.float32)
    loss = losses.masked_lm_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights))
    np.testing.assert_allclose(loss, np.log(5.0), rtol=1e-6)


def test_no_predictions_gives_zero_not_nan():
    loss = losses.masked_lm_loss(jnp.zeros((2, 3, 5)), jnp.zeros((2, 3), jnp.int32),
                                 jnp.zeros((2, 3)))
    assert float(loss) == 0.0


def test_next_sentence_loss_and_accuracy_match_numpy():
    logits = np.array([[2.0, -1.0], [0.5, 0.7], [-3.0, 1.0], [0.0, 0.0]], np.float32)
    labels = np.array([0, 0, 1, 1])
    nll = -_np_log_softmax(logits.astype(np.float64))[np.arange(4), labels]
    got = losses.next_sentence_loss(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(got, nll.mean(), rtol=1e-6)
    acc = losses.next_sentence_accuracy(jnp.asarray(logits), jnp.asarray(labels))
    assert float(acc) == 0.5  # argmax ties go to class 0


def test_bf16_logits_are_reduced_in_float32():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 50)), jnp.bfloat16)
    labels = jnp.zeros((2, 3), jnp.int32)
    loss = losses.masked_lm_loss(logits, labels, jnp.ones((2, 3)))
    assert loss.dtype == jnp.float32
