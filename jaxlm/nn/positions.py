"""Where each token sits: positions of left-padded rows, the sinusoidal table, and the
check that a sequence fits the learned table."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlm.config import ModelConfig


def padded_positions(attention_mask_BT: jax.Array) -> jax.Array:
    """Position of each token among the real ones: [0 0 1 1] -> [0 0 0 1] for left padding.

    Left-padded prompts of different lengths then all start at position 0, as they would
    alone, and their next tokens are written at the same cache index.
    """
    return jnp.maximum(jnp.cumsum(attention_mask_BT, axis=-1) - 1, 0).astype(jnp.int32)


def sinusoidal_positions(positions_BT: jax.Array, D: int) -> jax.Array:
    """[B, T, D] float32: PE(pos, 2i) = sin(pos / 10000^(2i/D)), PE(pos, 2i+1) = cos(...)
    (Vaswani et al. 3.5)."""
    inv_freq_I = 1.0 / (10000.0 ** (jnp.arange(0, D, 2, dtype=jnp.float32) / D))
    angles_BTI = positions_BT[..., None].astype(jnp.float32) * inv_freq_I
    pe_BTI2 = jnp.stack([jnp.sin(angles_BTI), jnp.cos(angles_BTI)], axis=-1)
    return pe_BTI2.reshape(*positions_BT.shape, -1)[..., :D]


def check_length(config: ModelConfig, T: int) -> None:
    """Raises ValueError when T tokens do not fit the position table."""
    if T > config.max_position_embeddings:
        raise ValueError(
            f"sequence length {T} exceeds the model's max_position_embeddings="
            f"{config.max_position_embeddings} (its context); shorten the input"
        )
