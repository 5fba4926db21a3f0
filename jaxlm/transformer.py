"""Transformer blocks built from attention and a position-wise MLP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlm.attention import MultiHeadAttention
from jaxlm.config import ModelConfig
from jaxlm.layers import LayerNorm, Linear


def rematerialized(block_call, policy: str):
    """`block_call` recomputing its activations in the backward pass (Chen et al. 2016).

    "full" keeps only the block's inputs; "dots" also keeps matmul outputs, recomputing
    only the cheap elementwise work; "none" keeps everything.
    """
    if policy == "none":
        return block_call
    saveable = {"full": None, "dots": jax.checkpoint_policies.checkpoint_dots}[policy]
    return nnx.remat(block_call, policy=saveable)


class FeedForward(nnx.Module):
    """Position-wise MLP: D -> F -> D with GELU (Vaswani et al. 3.3; BERT uses GELU, 3.1).

    GELU is the exact erf form, as in the original BERT, not the tanh approximation.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        D, F = config.hidden_size, config.intermediate_size
        kw = dict(init_std=config.initializer_range, dtype=jnp.dtype(config.dtype),
                  param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        self.intermediate = Linear("BTD,DF->BTF", (D, F), ("embed", "mlp"), **kw)
        self.output = Linear("BTF,FD->BTD", (F, D), ("mlp", "embed"), **kw)

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        h_BTF = jax.nn.gelu(self.intermediate(x_BTD), approximate=False)
        return self.output(h_BTF)


class EncoderBlock(nnx.Module):
    """Post-LN encoder layer as in BERT: x = LN(x + Drop(Attn(x))); x = LN(x + Drop(MLP(x))).

    Vaswani et al. 3.1 ("LayerNorm(x + Sublayer(x))") with dropout on each sublayer's
    output (5.4).
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        norm = dict(eps=config.layer_norm_eps, dtype=jnp.dtype(config.dtype),
                    param_dtype=jnp.dtype(config.param_dtype))
        self.attention = MultiHeadAttention(config, rngs=rngs)
        self.attention_norm = LayerNorm(config.hidden_size, **norm)
        self.mlp = FeedForward(config, rngs=rngs)
        self.mlp_norm = LayerNorm(config.hidden_size, **norm)
        self.dropout = nnx.Dropout(config.hidden_dropout, rngs=rngs)

    def __call__(self, x_BTD: jax.Array, mask_B11S: jax.Array) -> jax.Array:
        with jax.named_scope("attention"):
            x_BTD = self.attention_norm(x_BTD + self.dropout(self.attention(x_BTD, mask_B11S)))
        with jax.named_scope("mlp"):
            x_BTD = self.mlp_norm(x_BTD + self.dropout(self.mlp(x_BTD)))
        return x_BTD
