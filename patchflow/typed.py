"""Strict conversion between frozen dataclasses and plain data (TOML tables, JSON objects).

The one validator of patchflow: config files (series, targets, benchmark
profiles, the workspace config) and records (``results.json``, stage results
in the state database) are read through :func:`load`, written through
:func:`dump`.  Unknown keys, missing keys and wrong types raise
:class:`TypedError` naming the dotted key; callers wrap it into the error of
their domain (a :class:`~patchflow.errors.ConfigError` naming the file, say).

Supported field types: ``str``, ``int``, ``float`` (an int is accepted),
``bool``, ``Path``, ``enum.Enum`` subclasses (by value), ``X | None``,
``tuple[X, ...]``, ``list[X]``, ``dict[str, X]``, ``Mapping[str, X]`` and nested
dataclasses.  A field whose name is listed in a class's ``__renames__``
(``{"json_key": "field"}``) is read from another key.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class TypedError(ValueError):
    """Data that does not fit its declared type; ``key`` is the dotted path to it."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


def _name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        return "list of " + _name(typing.get_args(tp)[0])
    if origin in (dict, Mapping):
        return "table of " + _name(typing.get_args(tp)[1])
    if isinstance(tp, type):
        return {"str": "string", "int": "integer", "bool": "boolean", "float": "number",
                "Path": "path"}.get(tp.__name__, tp.__name__)
    return str(tp)


def _got(value: Any) -> str:
    return {"str": "string", "int": "integer", "bool": "boolean", "float": "number",
            "dict": "table", "list": "list", "NoneType": "nothing"}.get(
        type(value).__name__, type(value).__name__)


def convert(value: Any, tp: Any, key: str = "") -> Any:
    """*value* as type *tp*, or :class:`TypedError` at *key*."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        if len(args) == 1:
            return convert(value, args[0], key)
        errors = []
        for a in args:
            try:
                return convert(value, a, key)
            except TypedError as exc:
                errors.append(exc)
        raise TypedError(key, f"expected {' or '.join(_name(a) for a in args)}, got "
                              f"{_got(value)}")
    if origin in (tuple, list):
        inner = typing.get_args(tp)[0]
        if not isinstance(value, list | tuple):
            raise TypedError(key, f"expected {_name(tp)}, got {_got(value)}")
        items = [convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        ktp, vtp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise TypedError(key, f"expected {_name(tp)}, got {_got(value)}")
        return {convert(k, ktp, key): convert(v, vtp, f"{key}.{k}" if key else str(k))
                for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise TypedError(key, f"expected boolean, got {_got(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypedError(key, f"expected integer, got {_got(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypedError(key, f"expected number, got {_got(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypedError(key, f"expected string, got {_got(value)}")
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise TypedError(key, f"expected path, got {_got(value)}")
        return Path(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            known = ", ".join(str(m.value) for m in tp)
            raise TypedError(key, f"{value!r} is not one of {known}") from None
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise TypedError(key, f"expected a table, got {_got(value)}")
        return load(tp, value, prefix=f"{key}." if key else "")
    raise TypeError(f"unsupported type {tp!r} at {key!r}")  # a programming error


def load(cls: type[T], data: Mapping[str, Any], *, prefix: str = "",
         skip: frozenset[str] = frozenset(), extra: Mapping[str, Any] | None = None) -> T:
    """Build the dataclass *cls* from *data*, strictly (see the module docstring).

    Fields named in *skip* may not come from *data*; *extra* gives values for
    fields that do not come from the data at all (a file's own path, say).
    """
    extra = dict(extra or {})
    skip = skip | frozenset(extra)
    if not isinstance(data, Mapping):
        raise TypedError(prefix.rstrip("."), f"expected a table, got {_got(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)  # type: ignore[arg-type]
              if f.name not in skip and f.init}
    renames: Mapping[str, str] = getattr(cls, "__renames__", {})
    for key in data:
        if renames.get(key, key) not in fields:
            known = ", ".join(sorted({k for k, v in renames.items()} | set(fields)))
            raise TypedError(prefix + str(key), f"unknown key (known keys: {known})")
    back = {v: k for k, v in renames.items()}
    kwargs: dict[str, Any] = dict(extra)
    for name, f in fields.items():
        src = back.get(name, name)
        if src in data:
            kwargs[name] = convert(data[src], hints[name], prefix + src)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TypedError(prefix + src, "missing required key")
    return cls(**kwargs)


def dump(obj: Any) -> Any:
    """Plain JSON-ready data from a dataclass (tuples become lists, enums their value)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        renames: Mapping[str, str] = getattr(obj, "__renames__", {})
        back = {v: k for k, v in renames.items()}
        return {back.get(f.name, f.name): dump(getattr(obj, f.name))
                for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple | list):
        return [dump(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): dump(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN; a missing interval is "null"
    return obj
