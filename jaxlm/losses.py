"""BERT's pretraining objectives (BERT 3.1): masked LM and next-sentence prediction.

All math is float32 whatever dtype the logits arrive in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits_BXV: jax.Array, labels_BX: jax.Array) -> jax.Array:
    """-log softmax(logits)[label] at every position: [B, X, V], [B, X] -> [B, X]."""
    logp_BXV = jax.nn.log_softmax(logits_BXV.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp_BXV, labels_BX[..., None], axis=-1)[..., 0]


def weighted_mean(values_BX: jax.Array, weights_BX: jax.Array) -> jax.Array:
    """sum(w * v) / sum(w); 0 when every weight is 0 (a batch with no predictions)."""
    weights_BX = weights_BX.astype(jnp.float32)
    return jnp.sum(values_BX * weights_BX) / jnp.maximum(jnp.sum(weights_BX), 1e-8)


def masked_lm_loss(logits_BPV: jax.Array, labels_BP: jax.Array,
                   weights_BP: jax.Array) -> jax.Array:
    """Mean cross entropy over the real predictions; padding predictions weigh 0 (BERT 3.1, #1)."""
    return weighted_mean(cross_entropy(logits_BPV, labels_BP), weights_BP)


def masked_lm_accuracy(logits_BPV: jax.Array, labels_BP: jax.Array,
                       weights_BP: jax.Array) -> jax.Array:
    """Fraction of real predictions whose argmax is the original token."""
    correct_BP = (jnp.argmax(logits_BPV, axis=-1) == labels_BP).astype(jnp.float32)
    return weighted_mean(correct_BP, weights_BP)


def next_sentence_loss(logits_B2: jax.Array, labels_B: jax.Array) -> jax.Array:
    """Mean cross entropy of "B follows A" (label 0) vs "B is random" (label 1) (BERT 3.1, #2)."""
    return jnp.mean(cross_entropy(logits_B2[:, None], labels_B[:, None]))


def next_sentence_accuracy(logits_B2: jax.Array, labels_B: jax.Array) -> jax.Array:
    """Fraction of sequences whose next-sentence label is predicted correctly."""
    return jnp.mean((jnp.argmax(logits_B2, axis=-1) == labels_B).astype(jnp.float32))
