"""The workspace: where state, logs, runs and worktrees live, and the cache.

* workspace (``--workspace``, ``$PATCHFLOW_WORKSPACE``, default ``./.patchflow``):
  ``state.db``, ``runs/<id>/`` (logs, metadata.json, results), ``worktrees/``.
* cache (``$PATCHFLOW_CACHE``, default ``$XDG_CACHE_HOME/patchflow``): downloads,
  kernel repositories and build dirs, shared by every workspace on the host.
* config dir (``--config-dir``, ``$PATCHFLOW_CONFIG_DIR``, else the current
  directory or the patchflow checkout): ``series/`` and ``targets/``.

Also owns :func:`atomic_write`, the only way patchflow writes a file that
another process or a later run may read.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from patchflow.config import ConfigDir, WorkspaceConfig, load_workspace_config, with_env


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write *data* to *path* so that readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes 0600 files; what patchflow writes is meant to be shared
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def default_cache() -> Path:
    """``$PATCHFLOW_CACHE``, else ``$XDG_CACHE_HOME/patchflow``."""
    env = os.environ.get("PATCHFLOW_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "patchflow"


def find_config_dir(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get("PATCHFLOW_CONFIG_DIR")
    if env:
        return Path(env)
    cwd = Path.cwd()
    if (cwd / "targets").is_dir() and (cwd / "series").is_dir():
        return cwd
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "targets").is_dir():
        return checkout
    return cwd


@dataclass
class Workspace:
    root: Path
    cache: Path
    config_root: Path

    @staticmethod
    def default_root() -> Path:
        """``$PATCHFLOW_WORKSPACE``, else ``./.patchflow``."""
        env = os.environ.get("PATCHFLOW_WORKSPACE")
        return Path(env) if env else Path.cwd() / ".patchflow"

    @classmethod
    def open(cls, root: Path | None = None, config_dir: Path | None = None,
             cache: Path | None = None) -> Workspace:
        if root is None:
            root = cls.default_root()
        ws = cls(root=root.absolute(), cache=(cache or default_cache()).absolute(),
                 config_root=find_config_dir(config_dir).absolute())
        ws.root.mkdir(parents=True, exist_ok=True)
        return ws

    @cached_property
    def config(self) -> ConfigDir:
        return ConfigDir(self.config_root)

    @cached_property
    def settings(self) -> WorkspaceConfig:
        """``config.toml`` with the documented environment overrides applied."""
        return with_env(load_workspace_config(self.root / "config.toml"))

    @property
    def db_path(self) -> Path:
        return self.root / "state.db"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def worktrees_dir(self) -> Path:
        return self.root / "worktrees"

    @property
    def mbox_dir(self) -> Path:
        return self.root / "mbox"

    def cache_dir(self, *parts: str) -> Path:
        p = self.cache.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def inside(self, path: Path) -> Path:
        """Refuse any computed path that escapes the workspace or cache."""
        resolved = path.resolve()
        for base in (self.root.resolve(), self.cache.resolve()):
            if resolved == base or base in resolved.parents:
                return path
        raise ValueError(f"path escapes the workspace: {path}")


def reproduce_cmdline(argv: list[str] | None = None) -> str:
    import shlex

    args = sys.argv if argv is None else argv
    return " ".join(shlex.quote(a) for a in ["patchflow", *args[1:]])
