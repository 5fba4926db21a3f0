"""Transformer blocks built from attention and a position-wise MLP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlm.config import ModelConfig
from jaxlm.nn.attention import KVCache, MultiHeadAttention
from jaxlm.nn.layers import Dropout, LayerNorm, Linear, with_logical_axes

ACTIVATION_AXES = ("batch", "length", "embed")  # of x_BTD between blocks


def rematerialized(block_call, policy: str):
    """`block_call` recomputing its activations in the backward pass (Chen et al. 2016).

    "full" keeps only the block's inputs; "dots" also keeps matmul outputs, recomputing
    only the cheap elementwise work; "none" keeps everything.
    """
    if policy == "none":
        return block_call
    saveable = {"full": None, "dots": jax.checkpoint_policies.checkpoint_dots}[policy]
    return nnx.remat(block_call, policy=saveable)


def apply_stack(layers, x_BTD: jax.Array, *args, remat: str, name: str = "layer",
                last_queries: int = 0) -> jax.Array:
    """x through every block of `layers` in order (each called as `layer(x, *args)`),
    rematerialized per `remat`, each under its own named scope so profiles read like the
    code ("layer_0/attention/..."). The activations between blocks are tagged
    [batch, length, embed] for the mesh's layout rules. With `last_queries` the last block
    computes only the first `last_queries` positions (`EncoderBlock`), without remat."""
    # The block's own defaults (`queries`) stay out of remat, which would trace them.
    block = rematerialized(lambda layer, x, *block_args: layer(x, *block_args), remat)
    x_BTD = with_logical_axes(x_BTD, ACTIVATION_AXES)
    for i, layer in enumerate(layers):
        with jax.named_scope(f"{name}_{i}"):
            if last_queries and i == len(layers) - 1:
                x_BTD = layer(x_BTD, *args, queries=last_queries)
            else:
                x_BTD = block(layer, x_BTD, *args)
            x_BTD = with_logical_axes(x_BTD, ACTIVATION_AXES)
    return x_BTD


class FeedForward(nnx.Module):
    """Position-wise MLP: D -> F -> D with GELU (Vaswani et al. 3.3; BERT uses GELU, 3.1).

    GELU is the exact erf form of BERT, or GPT-2's tanh approximation when
    `config.activation` is "gelu_tanh".
    """

    def __init__(self, config: ModelConfig, *, intermediate_size: int = 0, rngs: nnx.Rngs):
        D, F = config.hidden_size, intermediate_size or config.intermediate_size
        kw = dict(init_std=config.initializer_range, dtype=jnp.dtype(config.dtype),
                  param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        self.intermediate = Linear("BTD,DF->BTF", (D, F), ("embed", "mlp"), **kw)
        self.output = Linear("BTF,FD->BTD", (F, D), ("mlp", "embed"), **kw)
        self.approximate = config.activation == "gelu_tanh"

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        h_BTF = jax.nn.gelu(self.intermediate(x_BTD), approximate=self.approximate)
        return self.output(h_BTF)


class EncoderBlock(nnx.Module):
    """Encoder layer: self-attention then MLP, each a residual sublayer with dropout on its
    output (Vaswani et al. 5.4).

    post-LN, as BERT and Vaswani et al. 3.1:  x = LN(x + Drop(Sublayer(x)))
    pre-LN (`pre_norm`), as GPT-2 and T5:     x = x + Drop(Sublayer(LN(x)))
    """

    def __init__(self, config: ModelConfig, *, pre_norm: bool = False, layer: int = 0,
                 rngs: nnx.Rngs):
        self.pre_norm = pre_norm
        norm = dict(eps=config.layer_norm_eps, dtype=jnp.dtype(config.dtype),
                    param_dtype=jnp.dtype(config.param_dtype))
        self.attention = MultiHeadAttention(config, num_heads=config.heads(layer), rngs=rngs)
        self.attention_norm = LayerNorm(config.hidden_size, **norm)
        self.mlp = FeedForward(config, intermediate_size=config.intermediate(layer), rngs=rngs)
        self.mlp_norm = LayerNorm(config.hidden_size, **norm)
        self.dropout = Dropout(config.hidden_dropout, rngs=rngs)

    def __call__(self, x_BTD: jax.Array, mask_B11S: jax.Array, queries: int = 0) -> jax.Array:
        """[B, T, D] -> [B, T, D]; with `queries`, [B, queries, D]: only the first positions,
        attending over all T (a last layer whose other outputs nothing reads)."""
        x_BQD = x_BTD[:, :queries] if queries else x_BTD
        with jax.named_scope("attention"):
            context_BTD = self.attention_norm(x_BTD) if self.pre_norm else x_BTD
            x_BQD = self._residual(x_BQD, lambda h: self.attention(h, mask_B11S, context_BTD),
                                   self.attention_norm)
        with jax.named_scope("mlp"):
            return self._residual(x_BQD, self.mlp, self.mlp_norm)

    def _residual(self, x_BTD, sublayer, norm):
        if self.pre_norm:
            return x_BTD + self.dropout(sublayer(norm(x_BTD)))
        return norm(x_BTD + self.dropout(sublayer(x_BTD)))


class DecoderBlock(nnx.Module):
    """Pre-LN decoder layer as in GPT-2 (Radford et al. 2019, 2.3):

        x = x + Drop(SelfAttn(LN(x)))            masked: a position sees only its past
        x = x + Drop(CrossAttn(LN(x), memory))   encoder-decoder only (Vaswani et al. 3.1)
        x = x + Drop(MLP(LN(x)))

    Normalizing the input of each sublayer instead of the residual sum keeps gradients
    well scaled at initialization (Xiong et al. 2020), so no long warmup is needed.
    """

    def __init__(self, config: ModelConfig, *, cross_attention: bool = False,
                 rngs: nnx.Rngs):
        norm = dict(eps=config.layer_norm_eps, dtype=jnp.dtype(config.dtype),
                    param_dtype=jnp.dtype(config.param_dtype))
        self.attention_norm = LayerNorm(config.hidden_size, **norm)
        self.attention = MultiHeadAttention(config, rngs=rngs)
        if cross_attention:
            self.cross_attention_norm = LayerNorm(config.hidden_size, **norm)
            self.cross_attention = MultiHeadAttention(config, rngs=rngs)
        self.mlp_norm = LayerNorm(config.hidden_size, **norm)
        self.mlp = FeedForward(config, rngs=rngs)
        self.dropout = Dropout(config.hidden_dropout, rngs=rngs)

    def __call__(self, x_BTD: jax.Array, mask_BTS: jax.Array, memory: KVCache | None = None,
                 memory_mask_B11S: jax.Array | None = None) -> jax.Array:
        """`mask_BTS` ([B or 1, 1, T, T]) is causal (and padding); `memory` holds the encoder
        output's keys/values for cross-attention (`cross_attention_memory`)."""
        with jax.named_scope("attention"):
            x_BTD = x_BTD + self.dropout(self.attention(self.attention_norm(x_BTD), mask_BTS))
        return self._cross_attention_and_mlp(x_BTD, memory, memory_mask_B11S)

    def decode(self, x_BTD: jax.Array, mask_BTS: jax.Array, cache: KVCache, index: jax.Array,
               memory: KVCache | None = None, memory_mask_B11S: jax.Array | None = None
               ) -> tuple[jax.Array, KVCache]:
        """`__call__` for T new tokens whose self-attention reads and extends `cache`."""
        h_BTD, cache = self.attention.decode(self.attention_norm(x_BTD), mask_BTS, cache, index)
        x_BTD = x_BTD + self.dropout(h_BTD)
        return self._cross_attention_and_mlp(x_BTD, memory, memory_mask_B11S), cache

    def cross_attention_memory(self, memory_BSD: jax.Array) -> KVCache:
        """Keys/values of the encoder output: computed once, read at every decoding step."""
        return self.cross_attention.key_values(memory_BSD)

    def _cross_attention_and_mlp(self, x_BTD, memory, memory_mask_B11S):
        if memory is not None:
            with jax.named_scope("cross_attention"):
                h_BTD = self.cross_attention.attend(self.cross_attention_norm(x_BTD),
                                                    memory_mask_B11S, memory)
                x_BTD = x_BTD + self.dropout(h_BTD)
        with jax.named_scope("mlp"):
            return x_BTD + self.dropout(self.mlp(self.mlp_norm(x_BTD)))
