"""BERT's AdamW: schedule shape, which parameters decay, clipping."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlm.config import TrainConfig
from jaxlm.training import optim


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_warms_up_then_decays_to_the_end_rate(schedule):
    cfg = TrainConfig(steps=100, warmup_steps=10, learning_rate=1e-3, schedule=schedule,
                      end_learning_rate=1e-5)
    lr = optim.learning_rate_schedule(cfg)
    np.testing.assert_allclose([lr(0), lr(5), lr(10)], [0.0, 5e-4, 1e-3], rtol=1e-6)
    mid = 1e-5 + (1e-3 - 1e-5) * (0.5 if schedule == "linear" else 0.5 * (1 + np.cos(np.pi / 2)))
    np.testing.assert_allclose(lr(55), mid, rtol=1e-5)
    np.testing.assert_allclose(lr(100), 1e-5, rtol=1e-5)


def test_weight_decay_skips_biases_and_layer_norm_scales():
    params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
              "norm": {"scale": jnp.ones(2), "bias": jnp.ones(2)}}
    assert optim.decay_mask(params) == {"dense": {"kernel": True, "bias": False},
                                        "norm": {"scale": False, "bias": False}}


def test_update_matches_a_hand_written_adamw_step_with_clipping():
    cfg = TrainConfig(steps=10, warmup_steps=0, learning_rate=0.1, weight_decay=0.01,
                      grad_clip_norm=1.0)
    params = {"w": {"kernel": jnp.array([1.0, -2.0])}, "b": {"bias": jnp.array([0.5])}}
    grads = {"w": {"kernel": jnp.array([3.0, 0.0])}, "b": {"bias": jnp.array([4.0])}}
    tx = optim.make_optimizer(cfg)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    # clip: norm 5 -> grads * 0.2; first Adam step: m/(sqrt(v)+eps) = sign(g) (up to eps)
    lr = 0.1
    g_w, g_b = np.array([0.6, 0.0]), np.array([0.8])
    step_w = g_w / (np.abs(g_w) + 1e-6)
    step_b = g_b / (np.abs(g_b) + 1e-6)
    np.testing.assert_allclose(new["w"]["kernel"], [1.0, -2.0] - lr * (step_w + 0.01 *
                                                                       np.array([1.0, -2.0])),
                               rtol=1e-5)
    np.testing.assert_allclose(new["b"]["bias"], 0.5 - lr * step_b, rtol=1e-5)
