"""BERT's optimizer: AdamW with warmup and decay, global-norm clipping (BERT A.2).

As in google-research/bert `optimization.py`: Adam with decoupled weight decay (Loshchilov
& Hutter 2019), β = (0.9, 0.999), ε = 1e-6, decay 0.01 skipped for biases and layer-norm
parameters, the learning rate warmed up linearly and then decayed linearly to zero, and
gradients clipped to global norm 1.0.
"""

from __future__ import annotations

import jax
import optax

from jaxlm.config import TrainConfig

# Parameter names (last path element) that get no weight decay: BERT excludes "bias" and
# "LayerNorm"; our layer norms name their gain "scale".
NO_DECAY_NAMES = ("bias", "scale")


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
    """0 -> learning_rate linearly over warmup_steps, then linear or cosine decay to the end."""
    warmup = min(cfg.warmup_steps, cfg.steps)
    decay_steps = max(cfg.steps - warmup, 1)
    if cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(cfg.learning_rate, decay_steps,
                                            alpha=cfg.end_learning_rate / max(cfg.learning_rate,
                                                                              1e-30))
    else:
        decay = optax.linear_schedule(cfg.learning_rate, cfg.end_learning_rate, decay_steps)
    if warmup == 0:
        return decay
    ramp = optax.linear_schedule(0.0, cfg.learning_rate, warmup)
    return optax.join_schedules([ramp, decay], boundaries=[warmup])


def decay_mask(params: dict) -> dict:
    """True for the parameters weight decay applies to: everything but biases and LN scales."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: _name(path[-1]) not in NO_DECAY_NAMES, params)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW with the schedule and the decay mask."""
    adamw = optax.adamw(learning_rate_schedule(cfg), b1=cfg.adam_b1, b2=cfg.adam_b2,
                        eps=cfg.adam_eps, weight_decay=cfg.weight_decay, mask=decay_mask)
    if cfg.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), adamw)
    return adamw


def _name(key) -> str:
    return str(getattr(key, "key", getattr(key, "name", key)))
