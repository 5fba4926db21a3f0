"""The encoder-decoder Transformer (Vaswani et al. 2017, "Attention Is All You Need").

    model = EncoderDecoderTransformer(config, rngs=nnx.Rngs(params=0, dropout=1))
    logits_BTV = model(source_ids_BS, source_mask_BS, decoder_input_ids_BT)

The encoder reads the source with full self-attention; the decoder reads the target so far
(causal self-attention) and the encoder's output (cross-attention). One embedding table is
shared by the encoder input, the decoder input and the output projection (Vaswani et al.
3.4). Blocks are pre-LN, as in T5 and GPT-2, with a final layer norm after each stack;
positions are learned or the paper's sinusoids (`model.position_embedding`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlm.config import ModelConfig
from jaxlm.nn.attention import KVCache, decoder_mask, padding_mask
from jaxlm.nn.layers import Dropout, Embedding, LayerNorm
from jaxlm.nn.positions import check_length, sinusoidal_positions
from jaxlm.nn.transformer import DecoderBlock, EncoderBlock, apply_stack, rematerialized


class EncoderDecoderTransformer(nnx.Module):
    """Shared embeddings, L pre-LN encoder blocks, L pre-LN decoder blocks with
    cross-attention, and logits against the shared embedding table."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        D = config.hidden_size
        kw = dict(init_std=config.initializer_range, dtype=jnp.dtype(config.dtype),
                  param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        norm = dict(eps=config.layer_norm_eps, dtype=jnp.dtype(config.dtype),
                    param_dtype=jnp.dtype(config.param_dtype))
        self.token_embeddings = Embedding(config.vocab_size, D, ("vocab", "embed"), **kw)
        if config.position_embedding == "learned":
            self.position_embeddings = Embedding(config.max_position_embeddings, D,
                                                 (None, "embed"), **kw)
        self.dropout = Dropout(config.hidden_dropout, rngs=rngs)
        self.encoder_layers = nnx.List([EncoderBlock(config, pre_norm=True, rngs=rngs)
                                        for _ in range(config.num_layers)])
        self.encoder_norm = LayerNorm(D, **norm)
        self.decoder_layers = nnx.List([DecoderBlock(config, cross_attention=True, rngs=rngs)
                                        for _ in range(config.num_layers)])
        self.decoder_norm = LayerNorm(D, **norm)

    def __call__(self, source_ids_BS: jax.Array, source_mask_BS: jax.Array,
                 decoder_input_ids_BT: jax.Array) -> jax.Array:
        """Logits_BTV (float32) of the next target token at each decoder position
        (teacher forcing: `decoder_input_ids_BT` is the target shifted right)."""
        check_length(self.config, decoder_input_ids_BT.shape[1])
        memory_BSD = self.encode(source_ids_BS, source_mask_BS)
        memory_B11S = padding_mask(source_mask_BS)
        T = decoder_input_ids_BT.shape[1]
        x_BTD = self.embed(decoder_input_ids_BT, jnp.arange(T)[None])
        mask_11TT = decoder_mask(None, T)
        block = rematerialized(DecoderBlock.__call__, self.config.remat)
        for i, layer in enumerate(self.decoder_layers):
            with jax.named_scope(f"decoder_{i}"):
                memory = layer.cross_attention_memory(memory_BSD)
                x_BTD = block(layer, x_BTD, mask_11TT, memory, memory_B11S)
        return self.logits(x_BTD)

    def encode(self, source_ids_BS: jax.Array, source_mask_BS: jax.Array) -> jax.Array:
        """The encoder's output memory_BSD; padding keys are never attended to."""
        check_length(self.config, source_ids_BS.shape[1])
        x_BSD = self.embed(source_ids_BS, jnp.arange(source_ids_BS.shape[1])[None])
        mask_B11S = padding_mask(source_mask_BS)
        x_BSD = apply_stack(self.encoder_layers, x_BSD, mask_B11S, remat=self.config.remat,
                            name="encoder")
        return self.encoder_norm(x_BSD)

    def embed(self, ids_BT: jax.Array, positions_BT: jax.Array) -> jax.Array:
        """Token embeddings scaled by sqrt(D) (Vaswani et al. 3.4) plus positions."""
        D = self.config.hidden_size
        x_BTD = self.token_embeddings(ids_BT) * jnp.asarray(math.sqrt(D), jnp.dtype(
            self.config.dtype))
        if self.config.position_embedding == "learned":
            x_BTD = x_BTD + self.position_embeddings(positions_BT)
        else:
            x_BTD = x_BTD + sinusoidal_positions(positions_BT, D).astype(x_BTD.dtype)
        return self.dropout(x_BTD)

    def logits(self, x_BTD: jax.Array) -> jax.Array:
        return self.token_embeddings.attend(self.decoder_norm(x_BTD)).astype(jnp.float32)

    def cross_memories(self, memory_BSD: jax.Array) -> list[KVCache]:
        """Every decoder layer's cross-attention keys/values: computed once per source."""
        return [layer.cross_attention_memory(memory_BSD) for layer in self.decoder_layers]

    def init_cache(self, batch_size: int, max_length: int) -> list[KVCache]:
        """Empty self-attention key/value buffers of the decoder, in compute dtype."""
        c = self.config
        zeros = jnp.zeros((batch_size, max_length, c.num_heads, c.head_dim), jnp.dtype(c.dtype))
        return [KVCache(zeros, zeros) for _ in range(c.num_layers)]

    def decode(self, ids_BT: jax.Array, positions_BT: jax.Array, mask_BTS: jax.Array,
               cache: list[KVCache], index: jax.Array, memories: list[KVCache],
               source_mask_BS: jax.Array) -> tuple[jax.Array, list[KVCache]]:
        """Logits of T new target tokens at cache slots [index, index + T), reading the
        cached self-attention keys/values and the precomputed cross-attention `memories`."""
        x_BTD = self.embed(ids_BT, positions_BT)
        memory_B11S = padding_mask(source_mask_BS)
        new_cache = []
        for layer, layer_cache, memory in zip(self.decoder_layers, cache, memories,
                                              strict=True):
            x_BTD, layer_cache = layer.decode(x_BTD, mask_BTS, layer_cache, index, memory,
                                              memory_B11S)
            new_cache.append(layer_cache)
        return self.logits(x_BTD), new_cache
