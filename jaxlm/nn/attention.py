"""Multi-head scaled dot-product attention ("Attention Is All You Need", 3.2).

Masks are boolean arrays where True means "may attend"; they broadcast against
`scores_BNTS`, so a padding mask is [B, 1, 1, S] and a causal mask [1, 1, T, S].
"""

from __future__ import annotations

import math
import typing

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlm.config import ModelConfig
from jaxlm.nn.layers import Dropout, Linear, layer_norm


def padding_mask(attention_mask_BS: jax.Array) -> jax.Array:
    """[B, 1, 1, S] bool: every query may attend to every real (non-padding) key."""
    return attention_mask_BS.astype(bool)[:, None, None, :]


def causal_mask(T: int) -> jax.Array:
    """[1, 1, T, T] bool: position t attends to positions <= t (Vaswani et al. 3.2.3)."""
    return jnp.tril(jnp.ones((T, T), dtype=bool))[None, None]


def decoder_mask(attention_mask_BT: jax.Array | None, T: int) -> jax.Array:
    """[B or 1, 1, T, T] bool: causal, and never towards a padding key."""
    mask_11TT = causal_mask(T)
    if attention_mask_BT is None:
        return mask_11TT
    return mask_11TT & padding_mask(attention_mask_BT)


def cache_mask(valid_BS: jax.Array, index: jax.Array, T: int) -> jax.Array:
    """[B, 1, T, S] bool for T new tokens written at cache slots [index, index + T).

    New token t may read slot s when s holds a real token (`valid_BS`, which already marks
    the new tokens) and s <= index + t: the causal mask, shifted by what the cache holds.
    """
    S = valid_BS.shape[1]
    query_slot_T = index + jnp.arange(T)
    causal_TS = jnp.arange(S)[None, :] <= query_slot_T[:, None]
    return causal_TS[None, None] & valid_BS[:, None, None, :]


class KVCache(typing.NamedTuple):
    """Keys and values of S positions, already projected into heads.

    Self-attention decoding keeps a fixed-size one per layer and writes each new token's
    keys/values into it; cross-attention computes one from the encoder output once.
    """

    k_BSNH: jax.Array
    v_BSNH: jax.Array

    def write(self, new: KVCache, index: jax.Array) -> KVCache:
        """This cache with `new`'s T positions stored at [index, index + T)."""
        def put(buf, x):
            return jax.lax.dynamic_update_slice_in_dim(buf, x.astype(buf.dtype), index, axis=1)
        return KVCache(put(self.k_BSNH, new.k_BSNH), put(self.v_BSNH, new.v_BSNH))


def dot_product_attention(q_BTNH: jax.Array, k_BSNH: jax.Array, v_BSNH: jax.Array,
                          mask: jax.Array, dropout: Dropout) -> jax.Array:
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


def normalize_heads(x_BTNH: jax.Array) -> jax.Array:
    """Each head's vector scaled to zero mean and unit variance over H, no learned gain:
    the QK-layernorm of ViT-22B (Dehghani et al. 2023) without parameters. Applied to
    queries and keys it bounds every attention logit by sqrt(H), against attention logit
    growth (Wortsman et al. 2023, "Small-scale proxies for large-scale Transformer training
    instabilities")."""
    return layer_norm(x_BTNH, 1.0, 0.0, eps=1e-6).astype(x_BTNH.dtype)


class MultiHeadAttention(nnx.Module):
    """Projects to N heads of width H, attends, and projects back to D (Vaswani et al. 3.2.2).

    With `config.lora_rank` > 0 the four projections carry LoRA adapters (Hu et al. 2021
    apply them to the attention weights). With `config.qk_norm` queries and keys go through
    `normalize_heads` before the dot product. Self-attention when `context_BSD` is None;
    cross-attention over it otherwise.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        D, N, H = config.hidden_size, config.num_heads, config.head_dim
        kw = dict(init_std=config.initializer_range, dtype=jnp.dtype(config.dtype),
                  param_dtype=jnp.dtype(config.param_dtype), rngs=rngs,
                  lora_rank=config.lora_rank, lora_alpha=config.lora_alpha)
        in_axes = ("embed", "heads", "kv")
        self.query = Linear("BTD,DNH->BTNH", (D, N, H), in_axes, **kw)
        self.key = Linear("BSD,DNH->BSNH", (D, N, H), in_axes, **kw)
        self.value = Linear("BSD,DNH->BSNH", (D, N, H), in_axes, **kw)
        self.output = Linear("BTNH,NHD->BTD", (N, H, D), ("heads", "kv", "embed"), **kw)
        self.dropout = Dropout(config.attention_dropout, rngs=rngs)
        self.qk_norm = config.qk_norm

    def __call__(self, x_BTD: jax.Array, mask: jax.Array,
                 context_BSD: jax.Array | None = None) -> jax.Array:
        kv = self.key_values(x_BTD if context_BSD is None else context_BSD)
        return self.attend(x_BTD, mask, kv)

    def key_values(self, context_BSD: jax.Array) -> KVCache:
        """The keys and values the queries will read: [B, S, D] -> two [B, S, N, H]."""
        k_BSNH = self.key(context_BSD)
        if self.qk_norm:
            k_BSNH = normalize_heads(k_BSNH)
        return KVCache(k_BSNH, self.value(context_BSD))

    def attend(self, x_BTD: jax.Array, mask: jax.Array, kv: KVCache) -> jax.Array:
        """Queries from `x_BTD` attend over `kv`; `mask` broadcasts to [B, N, T, S]."""
        q_BTNH = self.query(x_BTD)
        if self.qk_norm:
            q_BTNH = normalize_heads(q_BTNH)
        out_BTNH = dot_product_attention(q_BTNH, kv.k_BSNH, kv.v_BSNH, mask, self.dropout)
        return self.output(out_BTNH)

    def decode(self, x_BTD: jax.Array, mask: jax.Array, cache: KVCache,
               index: jax.Array) -> tuple[jax.Array, KVCache]:
        """Self-attention for T new tokens at cache slots [index, index + T).

        Their keys/values are written into `cache` first, so they attend to everything
        before them plus themselves; `mask` ([B, 1, T, S]) says which slots they may read.
        """
        cache = cache.write(self.key_values(x_BTD), index)
        return self.attend(x_BTD, mask, cache), cache
