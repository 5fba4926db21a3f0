"""What the Hugging Face tables of every architecture share: reading a checkpoint's arrays
and expanding a table's per-layer rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def expand_table(table: tuple[tuple[str, str, str], ...], num_layers: int):
    """(hf_name, jaxlm path, layout) rows of a mapping table, {i} expanded for every layer."""
    for hf_name, path, layout in table:
        for i in range(num_layers) if "{i}" in hf_name else [None]:
            yield hf_name.format(i=i), path.format(i=i), layout


def load_arrays(directory: Path) -> dict[str, np.ndarray]:
    """Every array of a Hugging Face checkpoint directory, float32, under its stored name.

    Reads `model.safetensors` (numpy only) or `pytorch_model.bin` (needs torch).
    """
    if (directory / "model.safetensors").is_file():
        weights = load_file(directory / "model.safetensors")
    elif (directory / "pytorch_model.bin").is_file():
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"{directory}/pytorch_model.bin needs torch to read; install torch or "
                "convert the checkpoint to model.safetensors"
            ) from e
        state = torch.load(directory / "pytorch_model.bin", map_location="cpu",
                           weights_only=True)
        weights = {k: v.float().numpy() for k, v in state.items()}
    else:
        raise FileNotFoundError(
            f"{directory}: no model.safetensors or pytorch_model.bin found"
        )
    return {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
