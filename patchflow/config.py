"""Strict loading of the TOML files that describe series, targets and a workspace.

Each file is validated once into frozen dataclasses.  Unknown keys, missing
keys and wrong types raise :class:`~patchflow.errors.ConfigError` naming the
file and the dotted key.  Nothing downstream reads raw dicts.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from patchflow.errors import ConfigError, NotFound

T = TypeVar("T")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
REVISION_RE = re.compile(r"^v([1-9][0-9]{0,2})$")
# A Message-ID as b4 and lore accept it, without the angle brackets.  Slashes,
# shell metacharacters and ".." are rejected so an id can never address a path
# outside the workspace (tests/unit/test_config.py::test_msgid_rejects_hostile).
MSGID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=~%-]*@[A-Za-z0-9][A-Za-z0-9.-]*$")


def check_msgid(value: str) -> str:
    """Normalise a message-id (strip <>, lore URLs) and refuse hostile ones."""
    v = value.strip()
    m = re.match(r"^https?://[^/]+/(?:[^/]+/)?([^/]+?)/?(?:T/?|t\.mbox\.gz)?$", v)
    if m and "@" in m.group(1):
        v = m.group(1)
    v = v.removeprefix("id:").strip("<>")
    if not MSGID_RE.match(v) or ".." in v:
        raise ValueError(f"not a valid message-id: {value!r}")
    return v


def check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value) or ".." in value:
        raise ValueError(f"invalid {what} name {value!r} (letters, digits, . _ + - only)")
    return value


@dataclass(frozen=True)
class SeriesVersion:
    revision: int
    msgids: tuple[str, ...]  # every known posting; the newest is used


@dataclass(frozen=True)
class SeriesConfig:
    name: str
    title: str
    versions: tuple[SeriesVersion, ...]
    upstream_base: str
    targets: tuple[str, ...]
    path: Path
    author: str = ""
    list_address: str = ""
    #: folder (relative to series/) holding vN.mbox threads to publish into a local mirror
    threads: str | None = None
    notes: str = ""

    def version(self, revision: int) -> SeriesVersion:
        for v in self.versions:
            if v.revision == revision:
                return v
        raise NotFound(f"series {self.name!r} has no v{revision} in {self.path}")

    @property
    def latest(self) -> SeriesVersion | None:
        return max(self.versions, key=lambda v: v.revision, default=None)


@dataclass(frozen=True)
class GitSource:
    remote: str
    branch: str


@dataclass(frozen=True)
class DebianSource:
    package: str
    releases: tuple[str, ...]  # Debian versions, oldest first: each becomes a commit + tag


@dataclass(frozen=True)
class TargetConfig:
    name: str
    arch: str
    git: GitSource
    path: Path
    kconfig: tuple[Path, ...]
    base_config: str = "tinyconfig"
    provider: str = "git"  # "git" or "debian"
    debian: DebianSource | None = None
    description: str = ""


@dataclass(frozen=True)
class LoreConfig:
    midmask: str = ""
    timeout: int = 60


@dataclass(frozen=True)
class WorkspaceConfig:
    lore: LoreConfig = field(default_factory=LoreConfig)


# --------------------------------------------------------------------------
# generic strict conversion


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        return "list of " + _type_name(typing.get_args(tp)[0])
    if isinstance(tp, type):
        return {"str": "string", "int": "integer", "bool": "boolean"}.get(tp.__name__, tp.__name__)
    return str(tp)


def _coerce(path: Path, key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(path, key, value, args[0])
    if origin is tuple:
        (inner, *_rest) = typing.get_args(tp)
        if isinstance(value, str) or not isinstance(value, list):
            raise ConfigError(path, key, f"expected {_type_name(tp)}, got {type(value).__name__}")
        return tuple(_coerce(path, f"{key}[{i}]", v, inner) for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, key, f"expected boolean, got {type(value).__name__}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, key, f"expected integer, got {type(value).__name__}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, key, f"expected string, got {type(value).__name__}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(path, key, f"expected a table, got {type(value).__name__}")
        return _build(tp, value, path, key + ".")  # type: ignore[arg-type]
    raise TypeError(f"unsupported config type {tp!r}")  # programming error


def _build(cls: type[T], data: Mapping[str, Any], path: Path, prefix: str = "",
           skip: frozenset[str] = frozenset()) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(path, prefix + key, f"unknown key (known keys: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(path, prefix + name, data[name], hints[name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(path, prefix + name, "missing required key")
    return cls(**kwargs)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise NotFound(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, f"not valid TOML: {exc}") from None


# --------------------------------------------------------------------------
# the public loaders


@dataclass(frozen=True)
class _SeriesFile:
    title: str
    upstream_base: str
    targets: tuple[str, ...]
    versions: Mapping[str, Any]
    author: str = ""
    list_address: str = ""
    threads: str | None = None
    notes: str = ""


def load_series(path: Path) -> SeriesConfig:
    data = _read_toml(path)
    raw_versions = data.get("versions")
    if not isinstance(raw_versions, dict):
        raise ConfigError(path, "versions", "expected a table like { v2 = [\"msgid\", ...] }")
    plain = {k: v for k, v in data.items() if k != "versions"}
    hints = {f.name for f in dataclasses.fields(_SeriesFile)} - {"versions"}
    for key in plain:
        if key not in hints:
            raise ConfigError(path, key, f"unknown key (known keys: {', '.join(sorted(hints | {'versions'}))})")
    title = _coerce(path, "title", _require(path, plain, "title"), str)
    upstream_base = _coerce(path, "upstream_base", _require(path, plain, "upstream_base"), str)
    targets = _coerce(path, "targets", _require(path, plain, "targets"), tuple[str, ...])
    for i, t in enumerate(targets):
        try:
            check_name(t, "target")
        except ValueError as exc:
            raise ConfigError(path, f"targets[{i}]", str(exc)) from None
    versions: list[SeriesVersion] = []
    for key, value in raw_versions.items():
        m = REVISION_RE.match(key)
        if not m:
            raise ConfigError(path, f"versions.{key}", "version keys are v1, v2, ...")
        ids = [value] if isinstance(value, str) else value
        ids = _coerce(path, f"versions.{key}", ids, tuple[str, ...])
        if not ids:
            raise ConfigError(path, f"versions.{key}", "needs at least one message-id")
        checked = []
        for i, mid in enumerate(ids):
            try:
                checked.append(check_msgid(mid))
            except ValueError as exc:
                raise ConfigError(path, f"versions.{key}[{i}]", str(exc)) from None
        versions.append(SeriesVersion(int(m.group(1)), tuple(checked)))
    name = path.stem
    try:
        check_name(name, "series")
    except ValueError as exc:
        raise ConfigError(path, None, str(exc)) from None
    threads = _coerce(path, "threads", plain.get("threads"), str | None)
    if threads is not None and (".." in Path(threads).parts or Path(threads).is_absolute()):
        raise ConfigError(path, "threads", "must be a folder inside series/")
    return SeriesConfig(
        name=name,
        title=title,
        versions=tuple(sorted(versions, key=lambda v: v.revision)),
        upstream_base=upstream_base,
        targets=targets,
        path=path,
        author=_coerce(path, "author", plain.get("author", ""), str),
        list_address=_coerce(path, "list_address", plain.get("list_address", ""), str),
        threads=threads,
        notes=_coerce(path, "notes", plain.get("notes", ""), str),
    )


def _require(path: Path, data: Mapping[str, Any], key: str) -> Any:
    if key not in data:
        raise ConfigError(path, key, "missing required key")
    return data[key]


@dataclass(frozen=True)
class _TargetFile:
    arch: str
    git: GitSource
    kconfig: tuple[str, ...]
    base_config: str = "tinyconfig"
    provider: str = "git"
    debian: DebianSource | None = None
    description: str = ""


ARCHES = ("x86_64",)
PROVIDERS = ("git", "debian")


def load_target(path: Path) -> TargetConfig:
    data = _read_toml(path)
    raw = _build(_TargetFile, data, path)
    if raw.arch not in ARCHES:
        raise ConfigError(path, "arch", f"unsupported arch {raw.arch!r} (supported: {', '.join(ARCHES)})")
    if raw.provider not in PROVIDERS:
        raise ConfigError(path, "provider", f"must be one of {', '.join(PROVIDERS)}")
    if raw.provider == "debian" and raw.debian is None:
        raise ConfigError(path, "debian", "provider = \"debian\" needs a [debian] table")
    if raw.debian is not None and not raw.debian.releases:
        raise ConfigError(path, "debian.releases", "needs at least one release")
    frags: list[Path] = []
    for i, rel in enumerate(raw.kconfig):
        frag = (path.parent / rel).resolve()
        if not frag.is_file():
            raise ConfigError(path, f"kconfig[{i}]", f"fragment not found: {frag}")
        frags.append(frag)
    name = path.stem
    try:
        check_name(name, "target")
    except ValueError as exc:
        raise ConfigError(path, None, str(exc)) from None
    return TargetConfig(
        name=name, arch=raw.arch, git=raw.git, path=path, kconfig=tuple(frags),
        base_config=raw.base_config, provider=raw.provider, debian=raw.debian,
        description=raw.description,
    )


def load_workspace_config(path: Path) -> WorkspaceConfig:
    if not path.exists():
        return WorkspaceConfig()
    return _build(WorkspaceConfig, _read_toml(path), path)


# --------------------------------------------------------------------------
# finding config


class ConfigDir:
    """The folder holding ``series/`` and ``targets/`` (a patchflow checkout)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def series_dir(self) -> Path:
        return self.root / "series"

    @property
    def targets_dir(self) -> Path:
        return self.root / "targets"

    def series_names(self) -> list[str]:
        return sorted(p.stem for p in self.series_dir.glob("*.toml"))

    def target_names(self) -> list[str]:
        return sorted(p.stem for p in self.targets_dir.glob("*.toml"))

    def series(self, name: str) -> SeriesConfig:
        try:
            check_name(name, "series")
        except ValueError as exc:
            raise NotFound(str(exc)) from None
        path = self.series_dir / f"{name}.toml"
        if not path.exists():
            known = ", ".join(self.series_names()) or "none"
            raise NotFound(f"unknown series {name!r}: no {path} (known: {known})")
        return load_series(path)

    def target(self, name: str) -> TargetConfig:
        try:
            check_name(name, "target")
        except ValueError as exc:
            raise NotFound(str(exc)) from None
        path = self.targets_dir / f"{name}.toml"
        if not path.exists():
            known = ", ".join(self.target_names()) or "none"
            raise NotFound(f"unknown target {name!r}: no {path} (known: {known})")
        return load_target(path)

    def all_targets(self) -> list[TargetConfig]:
        return [self.target(n) for n in self.target_names()]

    def all_series(self) -> list[SeriesConfig]:
        return [self.series(n) for n in self.series_names()]
