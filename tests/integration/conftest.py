"""Artefacts several integration tests need, built once per session when the cache lacks them.

Integration tests never skip for want of an earlier build: a fresh machine
(an empty ``$PATCHFLOW_CACHE``) builds what is needed here, a warm one reuses
it.  Everything goes through patchflow's own stages, as a user's run would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from patchflow.errors import NotFound
from patchflow.kernel.artefacts import locate, target_lock
from patchflow.kernel.stage import build_from_git
from patchflow.livepatch.generate import BuiltTree
from patchflow.livepatch.stage import base_tree
from patchflow.workspace import Workspace

from ..conftest import REAL_CACHE, REPO_ROOT

TARGET_612 = "linux-6.12.y"


@dataclass(frozen=True)
class BuiltKernel:
    """A base kernel build: its livepatch view (base sources, O= dir, base vmlinux) and bzImage."""

    tree: BuiltTree
    bzimage: Path


def ensure_base(ws: Workspace, target: str) -> None:
    """Build *target*'s base kernel through patchflow's own stage unless the cache has it.

    The caller holds the target's lock.
    """
    try:
        locate(ws.cache, target, "base")
    except NotFound:
        [res] = build_from_git(ws, ws.config.target(target), None, "base", jobs=None,
                               log_dir=ws.root / "logs", progress=lambda _m: None)
        assert res.status.value in ("pass", "warn"), res.summary


@pytest.fixture(scope="session")
def base_612(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltKernel]:
    """The base build of linux-6.12.y (MODULES, LIVEPATCH, FTRACE, ORC), built if missing."""
    ws = Workspace.open(tmp_path_factory.mktemp("base-612") / "ws", REPO_ROOT, cache=REAL_CACHE)
    with target_lock(ws.cache, TARGET_612):
        ensure_base(ws, TARGET_612)
        tree = base_tree(ws, TARGET_612)
    yield BuiltKernel(tree, locate(ws.cache, TARGET_612, "base").bzimage)
