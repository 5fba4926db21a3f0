"""Cross entropy and top-1 hits over a class axis, shared by every task's loss (BERT's masked
LM and next-sentence prediction, BERT 3.1; GPT's next token; fine-tuning labels).

The loss is float32 whatever dtype the logits arrive in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits_BXV: jax.Array, labels_BX: jax.Array) -> jax.Array:
    """-log softmax(logits)[label] at every position: [B, X, V], [B, X] -> [B, X]."""
    logp_BXV = jax.nn.log_softmax(logits_BXV.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp_BXV, labels_BX[..., None], axis=-1)[..., 0]


def top1_correct(logits_BXV: jax.Array, labels_BX: jax.Array) -> jax.Array:
    """True where the label's logit is above every other class's: [B, X, V], [B, X] -> [B, X].

    The same as argmax == label except on exact ties, which count as wrong. One max over V
    instead of argmax's (value, index) reduction: on the CPU, 0.19 s less per BERT-mini step
    with logits at every position (2.37 -> 2.18 s).
    """
    label_logit_BX = jnp.take_along_axis(logits_BXV, labels_BX[..., None], axis=-1)[..., 0]
    is_label_BXV = jnp.arange(logits_BXV.shape[-1]) == labels_BX[..., None]
    best_other_BX = jnp.max(jnp.where(is_label_BXV, -jnp.inf, logits_BXV), axis=-1)
    return label_logit_BX > best_other_BX
