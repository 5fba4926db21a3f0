"""What the Hugging Face tables of every architecture share: reading a checkpoint's arrays,
expanding a table's per-layer rows and setting a model's parameters from them."""

from __future__ import annotations

import typing
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx
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


def assign(model: nnx.Module, weights: dict[str, np.ndarray], table,
           to_jaxlm: typing.Callable[[np.ndarray, str, tuple[int, ...]], np.ndarray],
           directory: Path) -> list[str]:
    """Sets `model`'s parameters from the Hugging Face arrays its `table` names, each turned
    into jaxlm's shape by `to_jaxlm(array, layout, shape)` and removed from `weights`; returns
    the names the checkpoint lacks. The parameters become device arrays: a NumPy one would be
    copied in again at every call of a compiled step.

    Raises:
      ValueError: a checkpoint array whose shape disagrees with the model.
    """
    values = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    by_path = {".".join(map(str, k)): k for k in values}
    missing, used = [], set()
    for hf_name, path_, layout in expand_table(table, model.config.num_layers):
        if hf_name not in weights:
            missing.append(hf_name)
            continue
        key = by_path[path_]
        try:
            array = to_jaxlm(weights[hf_name], layout, values[key].shape)
        except ValueError as e:
            raise ValueError(f"{directory}: checkpoint array {hf_name} {e}") from None
        values[key].set_value(jnp.asarray(array, model.config.param_dtype))
        used.add(hf_name)  # one array may fill several parameters (GPT-2's fused c_attn)
    for hf_name in used:
        del weights[hf_name]
    return missing
