"""Configs: frozen dataclasses read from `configs/*.yaml`, overridable as `key.sub=value`.

    cfg = load("configs/bert_tiny.yaml", ["model.num_layers=4", "train.steps=100"])

Unknown keys, wrong types and impossible combinations raise `ConfigError`, naming the key
and the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config file or override that cannot be turned into a valid config."""


DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of the network. Defaults are BERT-base (BERT paper, 3)."""

    kind: str = "bert"  # architecture: "bert" (encoder with MLM + NSP heads)
    vocab_size: int = 30522  # V; a trained tokenizer overrides it
    hidden_size: int = 768  # D
    num_layers: int = 12  # L
    num_heads: int = 12  # N; H = D / N
    intermediate_size: int = 3072  # F, 4D in BERT
    max_position_embeddings: int = 512  # longest sequence the position table covers
    type_vocab_size: int = 2  # segments A and B
    hidden_dropout: float = 0.1  # dropout after embeddings, attention output and MLP
    attention_dropout: float = 0.1  # dropout on the attention probabilities
    layer_norm_eps: float = 1e-12  # BERT's epsilon
    initializer_range: float = 0.02  # stddev of the truncated-normal weight init
    dtype: str = "float32"  # compute dtype: float32 or bfloat16 (params stay param_dtype)
    param_dtype: str = "float32"  # storage dtype of the parameters

    def __post_init__(self):
        if self.kind != "bert":
            raise ConfigError(f"model.kind: unknown model kind {self.kind!r}; expected 'bert'")
        for key in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                    "max_position_embeddings", "type_vocab_size"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key}: must be positive, got {getattr(self, key)}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"model.hidden_size: {self.hidden_size} is not divisible by "
                f"model.num_heads={self.num_heads}"
            )
        for key in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"model.{key}: must be in [0, 1), got {getattr(self, key)}")
        for key in ("dtype", "param_dtype"):
            if getattr(self, key) not in DTYPES:
                raise ConfigError(f"model.{key}: {getattr(self, key)!r} is not one of {DTYPES}")

    @property
    def head_dim(self) -> int:
        """H, the width of one attention head."""
        return self.hidden_size // self.num_heads


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run: where its output goes and how the model is built."""

    run_dir: str = "runs/default"  # every output of a run: checkpoints, metrics, plots
    model: ModelConfig = ModelConfig()


def load(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Reads a YAML config and applies `key.sub=value` overrides.

    Args:
      path: a YAML file whose nesting mirrors `Config`; None starts from the defaults.
      overrides: strings like "model.num_layers=4"; values are parsed as YAML scalars and
        checked against the field's type.

    Returns:
      The frozen `Config`.

    Raises:
      ConfigError: on a missing file, an unknown key, a wrong type or an invalid value.
    """
    source = str(path) if path is not None else "<defaults>"
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not valid YAML: {e}") from e
        if not isinstance(tree, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of keys")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        *parents, leaf = key.strip().split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[leaf] = yaml.safe_load(raw) if raw.strip() else ""
    try:
        return from_dict(Config, tree)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def from_dict(cls: type, tree: dict, prefix: str = ""):
    """Builds dataclass `cls` from a nested dict, checking every key and type."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {tree!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(tree) - names)
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!r}; valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in tree.items():
        kind = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(kind):
            kwargs[name] = from_dict(kind, value or {}, key + ".")
        else:
            kwargs[name] = _coerce(value, kind, key)
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    """The nested plain-dict form of a config, as written to YAML or JSON."""
    return dataclasses.asdict(cfg)


def _coerce(value, kind, key: str):
    """Checks `value` against the annotation `kind`, converting only lossless cases."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {kind}, got {value!r}")
    if origin is tuple:
        (item_kind, *_) = typing.get_args(kind)
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_coerce(v, item_kind, key) for v in items)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML 1.1 reads "3e-4" as a string
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
