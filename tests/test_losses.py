import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.objectives import losses


def _np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 11)).astype(np.float32)
    labels = rng.integers(0, 11, (3, 4))
    expected = -np.take_along_axis(_np_log_softmax(logits.astype(np.float64)),
                                   labels[..., None], -1)[..., 0]
    got = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_cross_entropy_gradient_is_softmax_minus_one_hot():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 3, 5)).astype(np.float32) * 4
    labels = rng.integers(0, 5, (2, 3))
    got = jax.grad(lambda z: jnp.sum(losses.cross_entropy(z, jnp.asarray(labels))))(
        jnp.asarray(logits))
    softmax = np.exp(_np_log_softmax(logits.astype(np.float64)))
    np.testing.assert_allclose(got, softmax - np.eye(5)[labels], atol=1e-6)


def test_logsumexp_does_not_overflow():
    x = np.array([[1000.0, 1000.0, 990.0], [-5.0, 0.0, 2.0]], np.float32)
    expected = np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1)) + x.max(-1)
    np.testing.assert_allclose(losses.logsumexp(jnp.asarray(x)), expected, rtol=1e-6)


def test_label_logit_picks_the_label_column():
    logits = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    labels = np.array([[0, 3, 1], [2, 2, 0]])
    expected = np.take_along_axis(logits, labels[..., None], -1)[..., 0]
    np.testing.assert_array_equal(losses.label_logit(jnp.asarray(logits), jnp.asarray(labels)),
                                  expected)


def test_bf16_logits_are_reduced_in_float32():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 50)), jnp.bfloat16)
    loss = losses.cross_entropy(logits, jnp.zeros((2, 3), jnp.int32))
    assert loss.dtype == jnp.float32
    expected = -_np_log_softmax(np.asarray(logits, np.float64))[..., 0]
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_top1_correct_is_argmax_except_on_ties():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 6, 9)).astype(np.float32)
    labels = rng.integers(0, 9, (4, 6))
    labels[0] = logits[0].argmax(-1)  # a row of hits
    got = np.asarray(losses.top1_correct(jnp.asarray(logits), jnp.asarray(labels)))
    np.testing.assert_array_equal(got, logits.argmax(-1) == labels)
    assert got[0].all()
    tied = np.array([[[1.0, 3.0, 3.0], [0.0, 2.0, -1.0]]], np.float32)
    got = losses.top1_correct(jnp.asarray(tied), jnp.asarray([[1, 1]]))
    np.testing.assert_array_equal(got, [[False, True]])  # argmax would say True, True


def test_distillation_kl_matches_numpy():
    rng = np.random.default_rng(5)
    student, teacher = (rng.normal(size=(2, 3, 7)).astype(np.float32) * 3 for _ in range(2))
    T = 2.5
    log_p = _np_log_softmax(teacher.astype(np.float64) / T)
    log_q = _np_log_softmax(student.astype(np.float64) / T)
    expected = T ** 2 * (np.exp(log_p) * (log_p - log_q)).sum(-1)
    got = losses.distillation_kl(jnp.asarray(student), jnp.asarray(teacher), T)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.all(expected > 0)
    same = losses.distillation_kl(jnp.asarray(teacher), jnp.asarray(teacher), T)
    np.testing.assert_allclose(same, 0.0, atol=1e-6)


def test_distillation_kl_gradient_is_t_times_soft_difference():
    """d/ds T^2 KL(p || softmax(s/T)) = T (softmax(s/T) - p) (Hinton et al. 2015, 2.1)."""
    rng = np.random.default_rng(6)
    student, teacher = (rng.normal(size=(4, 1, 5)).astype(np.float32) for _ in range(2))
    T = 3.0
    got = jax.grad(lambda s: jnp.sum(losses.distillation_kl(s, jnp.asarray(teacher), T)))(
        jnp.asarray(student))
    p = np.exp(_np_log_softmax(teacher.astype(np.float64) / T))
    q = np.exp(_np_log_softmax(student.astype(np.float64) / T))
    np.testing.assert_allclose(got, T * (q - p), atol=1e-6)
