"""Post-training int8 quantization for inference: every `Linear` and `Embedding` of a trained
model becomes int8 with a float32 scale per output channel.

    quantize(module)                    # weight-only int8, in place
    quantize(module, activations=True)  # w8a8: activations int8 too, an int8 x int8 product

Weights are rounded symmetrically, w = q s with q in [-127, 127] and s = max |w| / 127 per
output channel (Jacob et al. 2018, 2; symmetric so that zero stays exact and no zero-point
term enters the product). Weight-only keeps the matmul in the compute dtype and applies the
scale after it, x (q s) = (x q) s: a quarter of the weight bytes, the same FLOPs. w8a8 also
rounds each row of activations with its own scale, computed on the fly (per-token scales as
in LLM.int8(), Dettmers et al. 2022, 3.1), multiplies int8 by int8 into int32 and rescales by
both scales. Embedding tables are weight-only in both modes: a lookup has no matmul to make
integer. LoRA adapters are merged into their kernels first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load as safetensors_load
from safetensors.numpy import save as safetensors_save

from jaxlm.nn.layers import Embedding, Linear, rows_matmul

MODES = ("int8", "w8a8")


class Int8(nnx.Variable):
    """An int8 weight or its float32 scales: read at inference, never trained."""


def quantize_int8(w_IO: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Symmetric int8 per output channel (column): (q_IO int8, scale_O float32), with
    w_IO ~ q_IO * scale_O. An all-zero column gets scale 1."""
    w_IO = jnp.asarray(w_IO, jnp.float32)
    max_O = jnp.max(jnp.abs(w_IO), axis=0)
    scale_O = jnp.where(max_O > 0, max_O / 127.0, 1.0)
    return jnp.clip(jnp.round(w_IO / scale_O), -127, 127).astype(jnp.int8), scale_O


def int8_matmul(x_MI: jax.Array, q_IO: jax.Array, scale_O: jax.Array,
                activations: bool) -> jax.Array:
    """x_MI @ (q_IO * scale_O) in float32: weight-only, or with x rounded to int8 per row
    (w8a8) and the product accumulated in int32."""
    if not activations:
        return rows_matmul(x_MI, q_IO.astype(x_MI.dtype)).astype(jnp.float32) * scale_O
    xq_IM, x_scale_M = quantize_int8(x_MI.T)  # a row of x is a column of x^T
    y_MO = jax.lax.dot(xq_IM.T, q_IO, preferred_element_type=jnp.int32)
    return y_MO.astype(jnp.float32) * x_scale_M[:, None] * scale_O


class Int8Linear(nnx.Module):
    """A `Linear` with its (LoRA-merged) kernel stored as int8 and a scale per output."""

    def __init__(self, linear: Linear, activations: bool):
        fan_in = math.prod(linear.in_shape)
        kernel = linear.kernel[...]
        if linear.lora is not None:
            kernel = kernel + linear.lora.delta(kernel.shape)
        q_IO, scale_O = quantize_int8(kernel.reshape(fan_in, -1))
        self.kernel, self.scale = Int8(q_IO), Int8(scale_O)
        self.bias = linear.bias
        self.in_shape, self.kept_shape = linear.in_shape, linear.kept_shape
        self.dtype, self.activations = linear.dtype, activations

    def __call__(self, x: jax.Array) -> jax.Array:
        rows = x.shape[:x.ndim - len(self.in_shape)]
        x_MI = x.astype(self.dtype).reshape(-1, math.prod(self.in_shape))
        y_MO = int8_matmul(x_MI, self.kernel[...], self.scale[...], self.activations)
        y = y_MO.reshape(*rows, *self.kept_shape) + self.bias[...]
        return y.astype(self.dtype)


class Int8Embedding(nnx.Module):
    """An `Embedding` table stored as int8 with a scale per row (per token); as the tied
    output layer each row is an output channel."""

    def __init__(self, embedding: Embedding):
        q_DV, scale_V = quantize_int8(embedding.embedding[...].T)
        self.embedding, self.scale = Int8(q_DV.T), Int8(scale_V)
        self.dtype = embedding.dtype

    def __call__(self, ids: jax.Array) -> jax.Array:
        rows = jnp.take(self.embedding[...], ids, axis=0).astype(jnp.float32)
        return (rows * jnp.take(self.scale[...], ids, axis=0)[..., None]).astype(self.dtype)

    def attend(self, x_BPD: jax.Array) -> jax.Array:
        x_MD = x_BPD.astype(self.dtype).reshape(-1, x_BPD.shape[-1])
        y_MV = int8_matmul(x_MD, self.embedding[...].T, self.scale[...], activations=False)
        return y_MV.reshape(*x_BPD.shape[:-1], -1).astype(self.dtype)


def quantize(module: nnx.Module, activations: bool = False) -> nnx.Module:
    """Replaces every `Linear` and `Embedding` in `module` by its int8 form, in place; returns
    `module`."""
    targets = [(path, m) for path, m in nnx.iter_modules(module)
               if isinstance(m, (Linear, Embedding))]
    for path, layer in targets:
        parent = module
        for key in path[:-1]:
            parent = parent[key] if isinstance(key, int) else getattr(parent, key)
        new = (Int8Linear(layer, activations) if isinstance(layer, Linear)
               else Int8Embedding(layer))
        if isinstance(path[-1], int):
            parent[path[-1]] = new
        else:
            setattr(parent, path[-1], new)
    return module


def arrays(module: nnx.Module) -> dict[str, np.ndarray]:
    """Every parameter and int8 array of a quantized module by dotted path, as saved."""
    state = nnx.state(module, nnx.Any(nnx.Param, Int8))
    return {".".join(map(str, k)): np.asarray(v.get_value())
            for k, v in nnx.to_flat_state(state)}


def load_arrays(module: nnx.Module, values: dict[str, np.ndarray], source: str) -> None:
    """Sets a module's arrays (int8 ones too) from a dict by path such as `arrays()`'s, in
    place.

    Raises:
      ValueError: a missing, extra or differently shaped array, naming it and `source`.
    """
    # The flat state holds the module's own variables: setting them sets the module's.
    flat = dict(nnx.to_flat_state(nnx.state(module, nnx.Any(nnx.Param, Int8))))
    by_name = {".".join(map(str, k)): k for k in flat}
    missing, extra = sorted(set(by_name) - set(values)), sorted(set(values) - set(by_name))
    if missing or extra:
        raise ValueError(f"{source}: arrays missing {missing[:3]}, unexpected {extra[:3]}")
    for name, key in by_name.items():
        variable, value = flat[key], values[name]
        if value.shape != variable.get_value().shape or value.dtype != variable.get_value().dtype:
            raise ValueError(f"{source}: {name} is {value.dtype}{list(value.shape)}, the model "
                             f"needs {variable.get_value().dtype}{list(variable.shape)}")
        variable.set_value(jnp.asarray(value))


QUANTIZED_FILE = "quantized.json"  # marks a quantized model's directory, with what to build


def save(module: nnx.Module, directory: str | Path, description: dict) -> Path:
    """Writes a quantized module as `model.safetensors` (int8 weights, float32 scales and the
    rest) and `quantized.json` (`description`: what to build, and the mode)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.safetensors").write_bytes(safetensors_save(arrays(module)))
    (directory / QUANTIZED_FILE).write_text(json.dumps(description, indent=2) + "\n")
    return directory


def read(directory: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(description, arrays) of a directory written by `save`.

    Raises:
      FileNotFoundError: no quantized.json or model.safetensors there.
      ValueError: a file that does not parse, naming it.
    """
    directory = Path(directory)
    description_file, weights_file = directory / QUANTIZED_FILE, directory / "model.safetensors"
    for path in (description_file, weights_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (python -m jaxlm.quantize writes it)")
    try:
        description = json.loads(description_file.read_text())
        values = safetensors_load(weights_file.read_bytes())
    except Exception as e:  # noqa: BLE001 - any unreadable file is named
        raise ValueError(f"{directory}: unreadable quantized model ({e})") from None
    if description.get("mode") not in MODES:
        raise ValueError(f"{description_file}: mode {description.get('mode')!r} is not one of "
                         f"{MODES}")
    return description, values


def is_quantized(path: str | Path) -> bool:
    return (Path(path) / QUANTIZED_FILE).is_file()
