"""``backport --build-check`` with a real kbuild: the compile error is the patch's, by name.

Uses the shared cache's tinyconfig builds of the targets (built here through
patchflow's own build stage when the cache lacks them, never skipped) and
real ``git am`` in kernel worktrees.

* linux-6.12.y, tests/data/backport/ptrace-demo: patch 1 builds, patch 2 calls a
  helper 6.12 does not have; the run stops at patch 2 naming file, line and
  gcc's error, stays resumable, and goes on once the maintainer fixed it.  The
  stored patches carry the stable trailers.
* linux-6.1.y, tests/data/backport/user-worker-sigmask: the real 6.12 stable fix
  that tests PF_USER_WORKER applies to 6.1 at an offset (``--check`` is happy),
  but 6.1 has no PF_USER_WORKER; ``--build-check`` says so, and the patch is
  skipped as not applicable, which the stored queue and ``status`` keep.

Run under the heavy lock (/work/notes/coordination.md): the first run builds.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from patchflow.backport import queue as bpq
from patchflow.backport import stage as bpst
from patchflow.errors import UserError
from patchflow.kernel.artefacts import build_dir_for, target_lock
from patchflow.state import State
from patchflow.workspace import Workspace

from ..conftest import REAL_CACHE, REPO_ROOT
from .conftest import BuiltKernel, ensure_base

DATA = Path(__file__).resolve().parent.parent / "data" / "backport"
T612, T61 = "linux-6.12.y", "linux-6.1.y"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass(frozen=True)
class Fetched:
    series: str
    revision: int
    mbox_path: Path


def _ws(tmp_path: Path) -> tuple[Workspace, State, Path]:
    """A workspace on a copy of the targets (the stored queues land in it), the real cache."""
    cfg = tmp_path / "cfg"
    shutil.copytree(REPO_ROOT / "targets", cfg / "targets")
    (cfg / "series").mkdir()
    ws = Workspace.open(tmp_path / "ws", cfg, cache=REAL_CACHE)
    return ws, State(ws.db_path), cfg


@pytest.fixture(scope="session")
def base_61(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """linux-6.1.y's tinyconfig base build (its O= dir), built once if the cache lacks it."""
    ws = Workspace.open(tmp_path_factory.mktemp("base-61") / "ws", REPO_ROOT, cache=REAL_CACHE)
    with target_lock(ws.cache, T61):
        ensure_base(ws, T61)
    yield build_dir_for(ws.cache, T61)


def test_build_check_names_the_patch_and_resumes(base_612: BuiltKernel, tmp_path: Path) -> None:
    ws, state, cfg = _ws(tmp_path)
    fetched = Fetched("ptrace-demo", 1, DATA / "ptrace-demo" / "v1.mbox")
    obj_dir = build_dir_for(ws.cache, T612)
    check = bpst.check_version(ws, fetched, [T612])
    assert [r.outcome.value for r in check[T612]] == ["clean", "clean"]  # --check: all fine

    r = bpst.backport_version(ws, state, fetched, T612, build_check=True)
    assert r.status.value == "fail"
    assert r.summary.startswith(
        "patch 2 (ptrace: test for user workers with task_is_user_worker()) does not build on "
        "linux-6.12.y: kernel/ptrace.c:1090: error: implicit declaration of function "
        "'task_is_user_worker'"), r.summary
    d = r.detail(bpst.BackportDetails)
    assert d is not None and d.phase == "build" and d.build_check
    one, two = d.patches
    assert (one.build, one.built, two.build) == ("ok", ["kernel/ptrace.o"], "failed")
    assert 0 < one.build_seconds < 60
    # the shared build dir is read, never written: its object still comes from the target's
    # own tree (mtimes are no proof: the gate's builds may run between these lines)
    assert d.worktree not in (obj_dir / "kernel/.ptrace.o.cmd").read_text()
    assert not list(obj_dir.glob("kernel/.ptrace.o.d"))

    # resumable: nothing fixed, still stopped at patch 2 with the same error
    with pytest.raises(UserError, match="--note"):
        bpst.continue_backport(ws, state, "ptrace-demo", T612, None)
    again = bpst.continue_backport(ws, state, "ptrace-demo", T612, "test the flag")
    assert again.status.value == "fail" and again.summary == r.summary
    wt = Path(d.worktree)
    src = wt / "kernel/ptrace.c"
    text = src.read_text()
    # undoing the patch is no fix: it says to skip it, and stays resumable
    src.write_text(text.replace("task_is_user_worker(child)", "child->flags & PF_USER_WORKER"))
    with pytest.raises(UserError, match="leave patch 2 empty; drop it with --skip"):
        bpst.continue_backport(ws, state, "ptrace-demo", T612, "reverted it")
    src.write_text(text.replace("task_is_user_worker(child)", "(child->flags & PF_USER_WORKER)"))
    r = bpst.continue_backport(ws, state, "ptrace-demo", T612,
                               "6.12 has no task_is_user_worker(): test the flag")
    assert r.status.value == "warn" and r.summary == "applied with changes: 1 clean, 1 resolved"
    d = r.detail(bpst.BackportDetails)
    assert d is not None and [p.build for p in d.patches] == ["ok", "ok"]
    assert d.patches[1].detail == "6.12 has no task_is_user_worker(): test the flag"

    # stable trailers, as the real git am committed them
    queue = bpq.queue_dir(cfg, "ptrace-demo", T612)
    first, second = ((queue / n).read_text() for n in (queue / "series").read_text().split())
    body = first.split("\n\n", 1)[1]
    assert body.startswith("commit 5c0a2e71d4b3f8a96e1c0d27b5a4f3e2d1c0b9a8 upstream.\n\n"
                           "Every caller passes"), body[:200]
    assert "Upstream commit" not in first and "Link:" not in first
    assert "Link: https://lore.kernel.org/r/20261122100000.2-ptrace-demo@example.org" in second
    assert ("[ patchflow: fixed to build on linux-6.12.y: 6.12 has no task_is_user_worker(): "
            "test the flag ]") in second
    assert "+\t\tif ((child->flags & PF_USER_WORKER)) {" in second
    assert "task_is_user_worker(child)" not in second


def test_pf_user_worker_fix_on_61_is_caught_and_skipped(base_61: Path, tmp_path: Path) -> None:
    ws, state, cfg = _ws(tmp_path)
    fetched = Fetched("user-worker-sigmask", 1, DATA / "user-worker-sigmask" / "v1.mbox")
    [checked] = bpst.check_version(ws, fetched, [T61])[T61]
    # what --check says: fine, at an offset
    assert checked.outcome.value == "offset"
    assert checked.offsets == ["kernel/ptrace.c:1105 (+19 lines) ptrace_request()"]

    r = bpst.backport_version(ws, state, fetched, T61, build_check=True)
    assert r.status.value == "fail"
    assert r.summary == (
        "patch 1 (ptrace: refuse PTRACE_SETSIGMASK on user workers) does not build on "
        "linux-6.1.y: kernel/ptrace.c:1109: error: 'PF_USER_WORKER' undeclared (first use in "
        "this function); did you mean 'PF_IO_WORKER'?"), r.summary
    d = r.detail(bpst.BackportDetails)
    assert d is not None and d.patches[0].outcome.value == "offset"

    why = "6.1 has no PF_USER_WORKER (user workers came in 6.4)"
    r = bpst.skip_patch(ws, state, "user-worker-sigmask", T61, why)
    assert r.status.value == "warn" and r.summary == "applied with changes: 1 skipped"
    d = r.detail(bpst.BackportDetails)
    assert d is not None and d.phase == "done"
    assert [(k.patch, k.note) for k in d.skipped] == [(1, why)]
    manifest = json.loads((bpq.queue_dir(cfg, "user-worker-sigmask", T61) / "manifest.json")
                          .read_text())
    assert manifest["format"] == 2 and manifest["skipped"][0]["note"] == why
    [row] = bpst.status_matrix(state, "user-worker-sigmask")
    assert row.state == "done" and row.skipped == (
        f"patch 1 (ptrace: refuse PTRACE_SETSIGMASK on user workers): {why}",)
