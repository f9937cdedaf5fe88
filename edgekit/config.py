"""Typed configs: frozen keyword-only dataclasses that validate when built and round-trip through dicts.

The CLI, config files and HTTP bodies all go through :func:`from_dict`, which rejects unknown keys with a
did-you-mean, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, TypeVar

from edgekit.errors import ConfigError
from edgekit.registry import unknown_message

C = TypeVar("C")


def from_dict(cls: type[C], data: dict[str, Any] | None, *, what: str | None = None) -> C:
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    label = what or cls.__name__
    for key in data:
        if key not in fields:
            raise ConfigError(unknown_message(f"option of {label}", key, list(fields)), param=key)
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(label, k, hints[k], v) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = v.value if isinstance(v, enum.Enum) else list(v) if isinstance(v, tuple) else v
    return out


def _coerce(label: str, key: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(label, key, arg, value)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{label}: {key} must be one of {', '.join(map(repr, args))}, got {value!r}", param=key)
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{label}: {key} must be a list, got {type(value).__name__}", param=key)
        return tuple(value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in hint)
            raise ConfigError(f"{label}: {key} must be one of {choices}, got {value!r}", param=key) from None
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{label}: {key} must be true or false, got {value!r}", param=key)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value)
            raise ConfigError(f"{label}: {key} must be an integer, got {value!r}", param=key)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                return float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{label}: {key} must be a number, got {value!r}", param=key) from None
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{label}: {key} must be a string, got {value!r}", param=key)
        return value
    return value


def require(cond: bool, label: str, key: str, message: str) -> None:
    """Validation inside ``__post_init__``: raise a ConfigError naming the field."""
    if not cond:
        raise ConfigError(f"{label}: {key} {message}", param=key)
