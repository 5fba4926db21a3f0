"""Multi-head scaled dot-product attention ("Attention Is All You Need", 3.2).

Masks are boolean arrays where True means "may attend"; they broadcast against
`scores_BNTS`, so a padding mask is [B, 1, 1, S] and a causal mask [1, 1, T, S].
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlm.config import ModelConfig
from jaxlm.layers import Linear


def padding_mask(attention_mask_BS: jax.Array) -> jax.Array:
    """[B, 1, 1, S] bool: every query may attend to every real (non-padding) key."""
    return attention_mask_BS.astype(bool)[:, None, None, :]


def causal_mask(T: int) -> jax.Array:
    """[1, 1, T, T] bool: position t attends to positions <= t (Vaswani et al. 3.2.3)."""
    return jnp.tril(jnp.ones((T, T), dtype=bool))[None, None]


def dot_product_attention(q_BTNH: jax.Array, k_BSNH: jax.Array, v_BSNH: jax.Array,
                          mask: jax.Array, dropout: nnx.Dropout) -> jax.Array:
    """softmax(q k^T / sqrt(H)) v with masked keys removed (Vaswani et al. eq. 1).

    Scores and softmax are float32 whatever the compute dtype: they are where low
    precision hurts. Masked scores become the most negative float, so they get exactly
    zero probability, as in BERT's additive mask.

    Returns:
      out_BTNH in the dtype of `v_BSNH`.
    """
    scores_BNTS = jnp.einsum("BTNH,BSNH->BNTS", q_BTNH, k_BSNH,
                             preferred_element_type=jnp.float32)
    scores_BNTS = scores_BNTS / math.sqrt(q_BTNH.shape[-1])
    scores_BNTS = jnp.where(mask, scores_BNTS, jnp.finfo(jnp.float32).min)
    probs_BNTS = dropout(jax.nn.softmax(scores_BNTS, axis=-1))
    return jnp.einsum("BNTS,BSNH->BTNH", probs_BNTS.astype(v_BSNH.dtype), v_BSNH)


class MultiHeadAttention(nnx.Module):
    """Projects to N heads of width H, attends, and projects back to D (Vaswani et al. 3.2.2).

    Self-attention when `context_BSD` is None; cross-attention over it otherwise.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        D, N, H = config.hidden_size, config.num_heads, config.head_dim
        kw = dict(init_std=config.initializer_range, dtype=jnp.dtype(config.dtype),
                  param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        in_axes = ("embed", "heads", "kv")
        self.query = Linear("BTD,DNH->BTNH", (D, N, H), in_axes, **kw)
        self.key = Linear("BSD,DNH->BSNH", (D, N, H), in_axes, **kw)
        self.value = Linear("BSD,DNH->BSNH", (D, N, H), in_axes, **kw)
        self.output = Linear("BTNH,NHD->BTD", (N, H, D), ("heads", "kv", "embed"), **kw)
        self.dropout = nnx.Dropout(config.attention_dropout, rngs=rngs)

    def __call__(self, x_BTD: jax.Array, mask: jax.Array,
                 context_BSD: jax.Array | None = None) -> jax.Array:
        context_BSD = x_BTD if context_BSD is None else context_BSD
        q_BTNH = self.query(x_BTD)
        k_BSNH = self.key(context_BSD)
        v_BSNH = self.value(context_BSD)
        out_BTNH = dot_product_attention(q_BTNH, k_BSNH, v_BSNH, mask, self.dropout)
        return self.output(out_BTNH)
