"""Multi-head scaled dot-product attention ("Attention Is All You Need", 3.2).

A `Mask` says which keys each query may attend to. Its `dense` form is a boolean array where
True means "may attend", broadcasting against `scores_BNTS`: a padding mask is [B, 1, 1, S],
a causal one [1, 1, T, S]. Fused kernels that never build the [T, S] scores take the same
mask as the real keys per row and a causal flag.

Three implementations compute the same attention (`ModelConfig.attention_impl`): "xla",
the einsums below, the reference; "dot_product_attention", `jax.nn.dot_product_attention`,
which runs cuDNN's flash attention on a GPU; "pallas_tpu", the Pallas flash-attention kernel
for TPUs (Dao et al. 2022), which also runs, slowly, in Pallas' interpreter on a CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlm.config import ModelConfig
from jaxlm.nn.layers import Dropout, Linear, layer_norm


@functools.partial(jax.tree_util.register_dataclass, data_fields=["dense", "keys_BS"],
                   meta_fields=["causal", "blockwise"])
@dataclasses.dataclass(frozen=True)
class Mask:
    """Which keys each query may attend to.

    `dense` broadcasts to [B, N, T, S]. When `blockwise`, the same mask is also "query t
    attends to the real keys `keys_BS` (None: all real), and only to s <= t if `causal`",
    the form fused kernels take.
    """

    dense: jax.Array
    keys_BS: jax.Array | None = None
    causal: bool = False
    blockwise: bool = True


def padding_mask(attention_mask_BS: jax.Array) -> Mask:
    """[B, 1, 1, S]: every query may attend to every real (non-padding) key."""
    keys_BS = attention_mask_BS.astype(bool)
    return Mask(keys_BS[:, None, None, :], keys_BS)


def causal_mask(T: int) -> jax.Array:
    """[1, 1, T, T] bool: position t attends to positions <= t (Vaswani et al. 3.2.3)."""
    return jnp.tril(jnp.ones((T, T), dtype=bool))[None, None]


def decoder_mask(attention_mask_BT: jax.Array | None, T: int) -> Mask:
    """[B or 1, 1, T, T]: causal, and never towards a padding key."""
    if attention_mask_BT is None:
        return Mask(causal_mask(T), causal=True)
    padding = padding_mask(attention_mask_BT)
    return Mask(causal_mask(T) & padding.dense, padding.keys_BS, causal=True)


def cache_mask(valid_BS: jax.Array, index: jax.Array, T: int) -> Mask:
    """[B, 1, T, S] for T new tokens written at cache slots [index, index + T).

    New token t may read slot s when s holds a real token (`valid_BS`, which already marks
    the new tokens) and s <= index + t: the causal mask, shifted by what the cache holds,
    which the Pallas kernel does not take (with "pallas_tpu", decoding uses the einsums).
    """
    S = valid_BS.shape[1]
    query_slot_T = index + jnp.arange(T)
    causal_TS = jnp.arange(S)[None, :] <= query_slot_T[:, None]
    return Mask(causal_TS[None, None] & valid_BS[:, None, None, :], blockwise=False)


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


def heads_first(x_BTNH: jax.Array) -> jax.Array:
    """[B, T, N, H] -> [B, N, T, H]. The products over heads take their operands heads first,
    as plain batched matrix products: written straight on [B, T, N, H], XLA:CPU ran
    MiniLM's forward pass 1.5x slower (docs/benchmarks.md)."""
    return jnp.swapaxes(x_BTNH, 1, 2)


def attention_probabilities(q_BTNH: jax.Array, k_BSNH: jax.Array,
                            mask: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(H)) over the keys, masked keys at exactly zero: [B, N, T, S].

    Scores and softmax are float32 whatever the compute dtype: they are where low
    precision hurts. Masked scores become the most negative float, so they get exactly
    zero probability, as in BERT's additive mask.
    """
    scores_BNTS = jnp.einsum("BNTH,BNSH->BNTS", heads_first(q_BTNH), heads_first(k_BSNH),
                             preferred_element_type=jnp.float32)
    scores_BNTS = scores_BNTS / math.sqrt(q_BTNH.shape[-1])
    scores_BNTS = jnp.where(mask, scores_BNTS, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores_BNTS, axis=-1)


def dot_product_attention(q_BTNH: jax.Array, k_BSNH: jax.Array, v_BSNH: jax.Array,
                          mask: jax.Array, dropout: Dropout) -> jax.Array:
    """softmax(q k^T / sqrt(H)) v with masked keys removed (Vaswani et al. eq. 1).

    Returns:
      out_BTNH in the dtype of `v_BSNH`.
    """
    probs_BNTS = dropout(attention_probabilities(q_BTNH, k_BSNH, mask))
    out_BNTH = jnp.einsum("BNTS,BNSH->BNTH", probs_BNTS.astype(v_BSNH.dtype),
                          heads_first(v_BSNH))
    return jnp.swapaxes(out_BNTH, 1, 2)


def attention(impl: str, q_BTNH: jax.Array, k_BSNH: jax.Array, v_BSNH: jax.Array,
              mask: Mask, dropout: Dropout) -> jax.Array:
    """`dot_product_attention` by implementation `impl` (module docstring).

    Raises:
      ValueError: a kernel asked for dropout on the attention probabilities, which it lacks.
    """
    if impl == "xla" or (impl == "pallas_tpu" and not mask.blockwise):
        return dot_product_attention(q_BTNH, k_BSNH, v_BSNH, mask.dense, dropout)
    if not dropout.deterministic and dropout.rate > 0:
        raise ValueError(f"model.attention_impl={impl} has no dropout on the attention "
                         f"probabilities: set model.attention_dropout=0.0 to train with it, "
                         f"or use model.attention_impl=xla")
    if impl == "dot_product_attention":
        fused = jax.default_backend() == "gpu" and q_BTNH.dtype in (jnp.bfloat16, jnp.float16)
        return jax.nn.dot_product_attention(q_BTNH, k_BSNH, v_BSNH, mask=mask.dense,
                                            implementation="cudnn" if fused else "xla")
    return pallas_flash_attention(q_BTNH, k_BSNH, v_BSNH, mask)


def pallas_flash_attention(q_BTNH: jax.Array, k_BSNH: jax.Array, v_BSNH: jax.Array,
                           mask: Mask) -> jax.Array:
    """The Pallas TPU flash-attention kernel. Its blocks are 128 positions and it takes
    padding as segment ids, so queries and keys are padded to a multiple of 128 and a real
    key is segment 1, a padding key 0. On a CPU it runs in Pallas' TPU interpreter (for
    tests; its backward kernels are traced later, so the mode is set for the process).

    Raises:
      ValueError: on a GPU.
    """
    from jax.experimental.pallas import tpu as pltpu
    from jax.experimental.pallas.ops.tpu import flash_attention as fa

    if jax.default_backend() == "gpu":
        raise ValueError("model.attention_impl=pallas_tpu is a TPU kernel: on a GPU use "
                         "model.attention_impl=dot_product_attention")
    if jax.default_backend() == "cpu":
        pltpu.set_tpu_interpret_mode()

    B, T, _, H = q_BTNH.shape
    S = k_BSNH.shape[1]
    T_pad, S_pad = -(-T // 128) * 128, -(-S // 128) * 128
    keys_BS = (jnp.ones((B, S), jnp.int32) if mask.keys_BS is None
               else mask.keys_BS.astype(jnp.int32))
    keys_BS = jnp.pad(keys_BS, ((0, 0), (0, S_pad - S)))
    # Causal rows of padding queries read padding keys, so that no row is empty.
    queries_BT = keys_BS if mask.causal else jnp.ones((B, T_pad), jnp.int32)

    def padded_heads_first(x_BTNH, length):
        return jnp.pad(heads_first(x_BTNH),
                       ((0, 0), (0, 0), (0, length - x_BTNH.shape[1]), (0, 0)))

    blocks = fa.BlockSizes(**{f.name: 1 if f.name == "block_b" else 128
                              for f in dataclasses.fields(fa.BlockSizes)})
    out_BNTH = fa.flash_attention(
        padded_heads_first(q_BTNH, T_pad), padded_heads_first(k_BSNH, S_pad),
        padded_heads_first(v_BSNH, S_pad),
        segment_ids=fa.SegmentIds(queries_BT, keys_BS), causal=mask.causal,
        sm_scale=1 / math.sqrt(H), block_sizes=blocks)
    return jnp.swapaxes(out_BNTH, 1, 2)[:, :T]


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
    cross-attention over it otherwise. `num_heads` < config.num_heads keeps the width H of
    config's heads (a pruned layer, `compression.prune`).
    """

    def __init__(self, config: ModelConfig, *, num_heads: int = 0, rngs: nnx.Rngs):
        D, N, H = config.hidden_size, num_heads or config.num_heads, config.head_dim
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
        self.impl = config.attention_impl

    def __call__(self, x_BTD: jax.Array, mask: Mask,
                 context_BSD: jax.Array | None = None) -> jax.Array:
        kv = self.key_values(x_BTD if context_BSD is None else context_BSD)
        return self.attend(x_BTD, mask, kv)

    def key_values(self, context_BSD: jax.Array) -> KVCache:
        """The keys and values the queries will read: [B, S, D] -> two [B, S, N, H]."""
        k_BSNH = self.key(context_BSD)
        if self.qk_norm:
            k_BSNH = normalize_heads(k_BSNH)
        return KVCache(k_BSNH, self.value(context_BSD))

    def queries(self, x_BTD: jax.Array) -> jax.Array:
        """[B, T, D] -> [B, T, N, H]."""
        q_BTNH = self.query(x_BTD)
        return normalize_heads(q_BTNH) if self.qk_norm else q_BTNH

    def attend(self, x_BTD: jax.Array, mask: Mask, kv: KVCache) -> jax.Array:
        """Queries from `x_BTD` attend over `kv`."""
        out_BTNH = attention(self.impl, self.queries(x_BTD), kv.k_BSNH, kv.v_BSNH, mask,
                             self.dropout)
        return self.output(out_BTNH)

    def probabilities(self, x_BTD: jax.Array, mask: Mask) -> jax.Array:
        """[B, N, T, T] float32: how much each query of self-attention over `x_BTD` attends
        to each key (what `attend` mixes the values with, before dropout); for attention
        transfer in distillation."""
        return attention_probabilities(self.queries(x_BTD), self.key_values(x_BTD).k_BSNH,
                                       mask.dense)

    def decode(self, x_BTD: jax.Array, mask: Mask, cache: KVCache,
               index: jax.Array) -> tuple[jax.Array, KVCache]:
        """Self-attention for T new tokens at cache slots [index, index + T).

        Their keys/values are written into `cache` first, so they attend to everything
        before them plus themselves; `mask` (`cache_mask`) says which slots they may read.
        """
        cache = cache.write(self.key_values(x_BTD), index)
        return self.attend(x_BTD, mask, cache), cache
