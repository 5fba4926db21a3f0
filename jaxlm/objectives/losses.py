"""Cross entropy and top-1 hits over a class axis, shared by every task's loss (BERT's masked
LM and next-sentence prediction, BERT 3.1; GPT's next token; fine-tuning labels).

The loss is float32 whatever dtype the logits arrive in. Both read the label's logit through
a one-hot mask rather than an indexed gather, so that its gradient is a select XLA fuses into
the softmax's instead of a separate scatter over [B, X, V] (docs/benchmarks.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def logsumexp(x_BXV: jax.Array) -> jax.Array:
    """log sum_v exp(x_v) over the last axis, computed from x - max(x) so no exp overflows.

    The max is a constant for differentiation: the result does not depend on it."""
    max_BX = jax.lax.stop_gradient(jnp.max(x_BXV, axis=-1))
    return jnp.log(jnp.sum(jnp.exp(x_BXV - max_BX[..., None]), axis=-1)) + max_BX


def _is_label(logits_BXV: jax.Array, labels_BX: jax.Array) -> jax.Array:
    """[B, X, V] bool, True in each position's label column."""
    return jnp.arange(logits_BXV.shape[-1]) == labels_BX[..., None]


def label_logit(logits_BXV: jax.Array, labels_BX: jax.Array) -> jax.Array:
    """logits_BXV[b, x, labels_BX[b, x]]: [B, X, V], [B, X] -> [B, X]."""
    return jnp.sum(jnp.where(_is_label(logits_BXV, labels_BX), logits_BXV, 0.0), axis=-1)


def cross_entropy(logits_BXV: jax.Array, labels_BX: jax.Array) -> jax.Array:
    """-log softmax(logits)[label] = logsumexp(logits) - logits[label] at every position:
    [B, X, V], [B, X] -> [B, X]."""
    logits_BXV = logits_BXV.astype(jnp.float32)
    return logsumexp(logits_BXV) - label_logit(logits_BXV, labels_BX)


def top1_correct(logits_BXV: jax.Array, labels_BX: jax.Array) -> jax.Array:
    """True where the label's logit is above every other class's: [B, X, V], [B, X] -> [B, X].

    The same as argmax == label except on exact ties, which count as wrong (a model whose
    logits are all equal scores zero, not 100%). One max over V, since argmax's (value,
    index) reduction is slower on the CPU.
    """
    is_label_BXV = _is_label(logits_BXV, labels_BX)
    best_other_BX = jnp.max(jnp.where(is_label_BXV, -jnp.inf, logits_BXV), axis=-1)
    return label_logit(logits_BXV, labels_BX) > best_other_BX


def log_softmax(x_BXV: jax.Array) -> jax.Array:
    """log softmax over the last axis, in float32."""
    x_BXV = x_BXV.astype(jnp.float32)
    return x_BXV - logsumexp(x_BXV)[..., None]


def distillation_kl(student_BXV: jax.Array, teacher_BXV: jax.Array,
                    temperature: float) -> jax.Array:
    """T^2 KL(softmax(teacher / T) || softmax(student / T)) at every position (Hinton et al.
    2015, 2: the T^2 keeps the soft targets' gradients on the scale of the hard labels'):
    [B, X, V], [B, X, V] -> [B, X]."""
    log_p_BXV = log_softmax(teacher_BXV / temperature)
    log_q_BXV = log_softmax(student_BXV / temperature)
    return temperature ** 2 * jnp.sum(jnp.exp(log_p_BXV) * (log_p_BXV - log_q_BXV), axis=-1)
