"""Hugging Face GPT-2 checkpoints into jaxlm's `GPTLanguageModel`, through one table.

    model, config = from_pretrained("path/to/gpt2")   # config.json + model.safetensors

GPT-2 stores its projections as `Conv1D` weights laid out [in, out] (jaxlm's own layout)
and fuses query, key and value into one `c_attn` of width 3D.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from flax import nnx

from jaxlm.config import ModelConfig
from jaxlm.hf.common import assign, load_arrays
from jaxlm.models.gpt import GPTLanguageModel

# Hugging Face name -> jaxlm parameter path, and how the array is laid out on each side.
#   same:   identical arrays, reshaped ([D, D] <-> [N, H, D], [D] <-> [N, H], ...)
#   qkv/k:  the k-th third of the last axis of c_attn, reshaped (k = 0 query, 1 key, 2 value)
_LAYER = "h.{i}."
_BLOCK = "layers.{i}."
TABLE: tuple[tuple[str, str, str], ...] = (
    ("wte.weight", "token_embeddings.embedding", "same"),
    ("wpe.weight", "position_embeddings.embedding", "same"),
    (_LAYER + "ln_1.weight", _BLOCK + "attention_norm.scale", "same"),
    (_LAYER + "ln_1.bias", _BLOCK + "attention_norm.bias", "same"),
    (_LAYER + "attn.c_attn.weight", _BLOCK + "attention.query.kernel", "qkv/0"),
    (_LAYER + "attn.c_attn.weight", _BLOCK + "attention.key.kernel", "qkv/1"),
    (_LAYER + "attn.c_attn.weight", _BLOCK + "attention.value.kernel", "qkv/2"),
    (_LAYER + "attn.c_attn.bias", _BLOCK + "attention.query.bias", "qkv/0"),
    (_LAYER + "attn.c_attn.bias", _BLOCK + "attention.key.bias", "qkv/1"),
    (_LAYER + "attn.c_attn.bias", _BLOCK + "attention.value.bias", "qkv/2"),
    (_LAYER + "attn.c_proj.weight", _BLOCK + "attention.output.kernel", "same"),
    (_LAYER + "attn.c_proj.bias", _BLOCK + "attention.output.bias", "same"),
    (_LAYER + "ln_2.weight", _BLOCK + "mlp_norm.scale", "same"),
    (_LAYER + "ln_2.bias", _BLOCK + "mlp_norm.bias", "same"),
    (_LAYER + "mlp.c_fc.weight", _BLOCK + "mlp.intermediate.kernel", "same"),
    (_LAYER + "mlp.c_fc.bias", _BLOCK + "mlp.intermediate.bias", "same"),
    (_LAYER + "mlp.c_proj.weight", _BLOCK + "mlp.output.kernel", "same"),
    (_LAYER + "mlp.c_proj.bias", _BLOCK + "mlp.output.bias", "same"),
    ("ln_f.weight", "final_norm.scale", "same"),
    ("ln_f.bias", "final_norm.bias", "same"),
)

# In Hugging Face files but not parameters: the tied lm_head and old causal-mask buffers.
_REDUNDANT = ("lm_head.weight", ".attn.bias", ".attn.masked_bias")

# HF config.json key -> ModelConfig field.
_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "n_embd": "hidden_size",
    "n_layer": "num_layers",
    "n_head": "num_heads",
    "n_positions": "max_position_embeddings",
    "resid_pdrop": "hidden_dropout",
    "attn_pdrop": "attention_dropout",
    "layer_norm_epsilon": "layer_norm_eps",
    "initializer_range": "initializer_range",
}


def config_from_hf(hf_config: dict, **overrides) -> ModelConfig:
    """ModelConfig (kind "gpt") from a Hugging Face GPT-2 config.json dict."""
    act = hf_config.get("activation_function", "gelu_new")
    if act != "gelu_new":
        raise ValueError(f"activation_function={act!r} is not supported; jaxlm GPT uses "
                         "GPT-2's 'gelu_new' (tanh GELU)")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if hf_config.get(flag):
            raise ValueError(f"{flag}=True is not supported")
    fields = {ours: hf_config[theirs] for theirs, ours in _CONFIG_KEYS.items()
              if theirs in hf_config}
    n_inner = hf_config.get("n_inner") or 4 * fields["hidden_size"]
    return ModelConfig(kind="gpt", activation="gelu_tanh", intermediate_size=n_inner,
                       type_vocab_size=1, **{**fields, **overrides})


def to_jaxlm(hf: np.ndarray, layout: str, shape: tuple[int, ...]) -> np.ndarray:
    """Converts a Hugging Face array to the jaxlm parameter of `shape`."""
    if layout.startswith("qkv/"):
        hf = np.split(hf, 3, axis=-1)[int(layout[-1])]
    if hf.size != int(np.prod(shape)):
        raise ValueError(f"has {hf.shape} elements, the model expects {shape}")
    return np.ascontiguousarray(hf.reshape(shape))


def from_pretrained(path: str | Path, *, dtype: str = "float32",
                    seed: int = 0) -> tuple[GPTLanguageModel, ModelConfig]:
    """Loads a Hugging Face GPT-2 directory (`GPT2LMHeadModel` or `GPT2Model`).

    Raises:
      FileNotFoundError: no config.json or weights in `path`.
      ValueError: an array whose shape disagrees with config.json, or a missing one.
    """
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory}: no config.json (is this a Hugging Face model?)")
    config = config_from_hf(json.loads((directory / "config.json").read_text()), dtype=dtype)
    weights = {k.removeprefix("transformer."): v for k, v in load_arrays(directory).items()}
    model = GPTLanguageModel(config, rngs=nnx.Rngs(params=seed, dropout=seed))
    missing = assign(model, weights, TABLE, to_jaxlm, directory)
    if missing:
        raise ValueError(f"{directory}: checkpoint has no {missing[0]}")
    unused = [k for k in weights if not k.endswith(_REDUNDANT)]
    if unused:
        warnings.warn(f"{directory}: ignored checkpoint arrays: {', '.join(unused)}",
                      stacklevel=2)
    return model, config
