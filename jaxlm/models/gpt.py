"""GPT: a causal decoder-only language model (Radford et al. 2018; GPT-2, 2019).

    model = GPTLanguageModel(config, rngs=nnx.Rngs(params=0, dropout=1))
    logits_BTV = model(input_ids_BT)                  # next-token logits at every position

    cache = model.init_cache(batch_size=B, max_length=S)   # see jaxlm/inference/generate.py
    logits_BTV, cache = model.decode(ids_BT, positions_BT, mask_BTS, cache, index)

Module and parameter names follow the roles in GPT-2 (token and position embeddings,
pre-LN decoder blocks, a final layer norm, the output tied to the token embeddings), so
`jaxlm/hf/gpt2.py` converts Hugging Face checkpoints with a table.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlm.config import ModelConfig
from jaxlm.nn.attention import KVCache, Mask, decoder_mask
from jaxlm.nn.layers import Dropout, Embedding, LayerNorm
from jaxlm.nn.positions import check_length, padded_positions
from jaxlm.nn.transformer import DecoderBlock, apply_stack


class GPTLanguageModel(nnx.Module):
    """Token + learned position embeddings, L pre-LN decoder blocks, a final layer norm, and
    logits against the tied token embeddings (GPT-2 2.3; Press & Wolf 2017)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        D, std = config.hidden_size, config.initializer_range
        kw = dict(init_std=std, dtype=jnp.dtype(config.dtype),
                  param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        self.token_embeddings = Embedding(config.vocab_size, D, ("vocab", "embed"), **kw)
        self.position_embeddings = Embedding(config.max_position_embeddings, D,
                                             (None, "embed"), **kw)
        self.dropout = Dropout(config.hidden_dropout, rngs=rngs)
        self.layers = nnx.List([DecoderBlock(config, rngs=rngs)
                                for _ in range(config.num_layers)])
        self.final_norm = LayerNorm(D, eps=config.layer_norm_eps, dtype=jnp.dtype(config.dtype),
                                    param_dtype=jnp.dtype(config.param_dtype))
        # GPT-2 2.3: residual projections start scaled by 1/sqrt(number of residual layers),
        # so the residual stream's variance does not grow with depth.
        scale = 1.0 / math.sqrt(2 * config.num_layers)
        for layer in self.layers:
            for projection in (layer.attention.output, layer.mlp.output):
                projection.kernel[...] = projection.kernel[...] * scale

    def __call__(self, input_ids_BT: jax.Array,
                 attention_mask_BT: jax.Array | None = None) -> jax.Array:
        """Next-token logits_BTV (float32): row t scores the token after t.

        `attention_mask_BT` (1 real, 0 padding) is only needed for padded batches; packed
        training sequences have none.
        """
        check_length(self.config, input_ids_BT.shape[1])
        T = input_ids_BT.shape[1]
        if attention_mask_BT is None:
            positions_BT = jnp.arange(T)[None]
        else:
            positions_BT = padded_positions(attention_mask_BT)
        x_BTD = self.embed(input_ids_BT, positions_BT)
        mask_BTT = decoder_mask(attention_mask_BT, T)
        x_BTD = apply_stack(self.layers, x_BTD, mask_BTT, remat=self.config.remat)
        return self.logits(x_BTD)

    def embed(self, input_ids_BT: jax.Array, positions_BT: jax.Array) -> jax.Array:
        x_BTD = self.token_embeddings(input_ids_BT) + self.position_embeddings(positions_BT)
        return self.dropout(x_BTD)

    def logits(self, x_BTD: jax.Array) -> jax.Array:
        h_BTD = self.final_norm(x_BTD)
        return self.token_embeddings.attend(h_BTD).astype(jnp.float32)

    def init_cache(self, batch_size: int, max_length: int) -> list[KVCache]:
        """Empty per-layer key/value buffers for `max_length` positions, in compute dtype,
        each its own array (generation donates them to be written in place)."""
        c = self.config
        shape = (batch_size, max_length, c.num_heads, c.head_dim)
        return [KVCache(jnp.zeros(shape, jnp.dtype(c.dtype)), jnp.zeros(shape, jnp.dtype(c.dtype)))
                for _ in range(c.num_layers)]

    def decode(self, input_ids_BT: jax.Array, positions_BT: jax.Array, mask_BTS: Mask,
               cache: list[KVCache], index: jax.Array,
               last_only: bool = False) -> tuple[jax.Array, list[KVCache]]:
        """Logits of T new tokens stored at cache slots [index, index + T), or with
        `last_only` of the last one ([B, 1, V]: what generation reads, which spares a prefill
        the vocabulary product at every prompt position).

        Prefill passes the whole (left-padded) prompt at index 0; each later step one
        token. `mask_BTS` comes from `cache_mask`.
        """
        x_BTD = self.embed(input_ids_BT, positions_BT)
        new_cache = []
        for layer, layer_cache in zip(self.layers, cache, strict=True):
            x_BTD, layer_cache = layer.decode(x_BTD, mask_BTS, layer_cache, index)
            new_cache.append(layer_cache)
        return self.logits(x_BTD[:, -1:] if last_only else x_BTD), new_cache
