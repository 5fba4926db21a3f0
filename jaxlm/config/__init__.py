"""Configs: frozen dataclasses read from `configs/*.yaml`, overridable as `key.sub=value`.

    cfg = load("configs/bert_tiny.yaml", ["model.num_layers=4", "train.steps=100"])

`pretraining` holds the run of `train.py` (model, data, train, mesh), `finetuning` the run
of `python -m jaxlm.finetune`, `loader` the checking of keys and types. Unknown keys, wrong
types and impossible combinations raise `ConfigError`, naming the key and the file.
"""

from __future__ import annotations

import typing
from pathlib import Path

import yaml

from jaxlm.config.finetuning import (
    TASKS,
    FinetuneConfig,
    FinetuneDataConfig,
    FinetuneOptions,
    PruneOptions,
)
from jaxlm.config.loader import ConfigError, from_dict, to_dict
from jaxlm.config.pretraining import (
    Config,
    DataConfig,
    DistillOptions,
    MeshConfig,
    ModelConfig,
    TrainConfig,
)

__all__ = ["TASKS", "Config", "ConfigError", "DataConfig", "DistillOptions", "FinetuneConfig",
           "FinetuneDataConfig", "FinetuneOptions", "MeshConfig", "ModelConfig", "PruneOptions",
           "TrainConfig", "from_dict", "load", "to_dict"]


def load(path: str | Path | None = None, overrides: typing.Sequence[str] = (),
         cls: type = Config):
    """Reads a YAML config and applies `key.sub=value` overrides.

    Args:
      path: a YAML file whose nesting mirrors `cls`; None starts from the defaults.
      overrides: strings like "model.num_layers=4"; values are parsed as YAML scalars and
        checked against the field's type.
      cls: the config class: `Config` (pretraining) or `FinetuneConfig`.

    Returns:
      The frozen config.

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
        return from_dict(cls, tree)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
