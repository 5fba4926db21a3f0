"""Nested dicts (from YAML) into frozen config dataclasses, every key and type checked."""

from __future__ import annotations

import dataclasses
import types
import typing


class ConfigError(ValueError):
    """A config file or override that cannot be turned into a valid config."""


def from_dict(cls: type, tree: dict, prefix: str = ""):
    """Builds dataclass `cls` from a nested dict, checking every key and type."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {tree!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(tree) - names)
    if unknown:
        raise ConfigError(
            f"unknown key '{prefix}{unknown[0]}'; valid keys here: {', '.join(sorted(names))}"
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
