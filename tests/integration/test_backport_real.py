"""A series written against 6.12.117 backported onto the Debian-built linux-6.1.y.

tests/data/backport/vmscan-demo/v1.mbox holds three real mm/vmscan.c changes:
one conflicts in shrink_folio_list() (6.1 has no hwpoison block there), one
applies at an offset (may_enter_fs() sits 591 lines lower in 6.1) and one
needs a 3-way merge (6.1 has no folio_batch_init() next to it).

Uses the shared kernel repository in the cache; linux-6.1.y is set to 6.1.190,
then moved to 6.1.192, as a new stable release would move it.  The series'
base (6.12.117) is imported first, so its pre-image blobs are there and the
3-way merges are possible: the outcome must not depend on whether an earlier
test happened to import 6.12 (a fresh cache reported another conflict line).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from patchflow.backport import check as bpc
from patchflow.backport import patches as bpp
from patchflow.backport import queue as bpq
from patchflow.backport import stage as bpst
from patchflow.state import State
from patchflow.trees.repo import ensure_release, prepare_tree
from patchflow.workspace import Workspace

DATA = Path(__file__).resolve().parent.parent / "data" / "backport" / "vmscan-demo"
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
ASSERT = "\t\tVM_WARN_ON_ONCE_FOLIO(!folio_test_locked(folio), folio);\n"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass(frozen=True)
class Fetched:
    series: str
    revision: int
    mbox_path: Path


def resolve(path: Path) -> None:
    """What the maintainer does: keep 6.1's code, add the assertion above it."""
    lines = path.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("<<<<<<< "))
    mid = next(i for i in range(start, len(lines)) if lines[i].startswith("======="))
    end = next(i for i in range(mid, len(lines)) if lines[i].startswith(">>>>>>> "))
    ours = lines[start + 1:mid]
    path.write_text("".join(lines[:start] + [ASSERT, "\n"] + ours + lines[end + 1:]))


def forget_our_resolutions(repo: Path) -> None:
    """Drop rr-cache entries an earlier run of this test recorded (and only those),
    so the first backport meets the conflict again; rerere is shared by design."""
    for entry in (repo / "rr-cache").glob("*"):
        pre = entry / "preimage"
        if pre.exists() and ASSERT.strip() in pre.read_text(errors="replace"):
            shutil.rmtree(entry)


def test_backport_conflict_continue_store_and_rebase(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    shutil.copytree(REPO_ROOT / "targets", cfg / "targets")
    (cfg / "series").mkdir()
    ws = Workspace.open(tmp_path / "ws", cfg)
    state = State(ws.db_path)
    fetched = Fetched("vmscan-demo", 1, DATA / "v1.mbox")
    assert ensure_release(ws, "v6.12.117") is not None  # the series' base
    tree = prepare_tree(ws, "linux-6.1.y", upto="6.1.190")
    assert tree.release == "6.1.190"
    forget_our_resolutions(tree.repo)
    patches = bpp.load_patches(tree.repo, fetched.mbox_path, tmp_path / "pre")
    assert bpc.ensure_preimages(tree.repo, patches) == {}

    r = bpst.backport_version(ws, state, fetched, "linux-6.1.y")
    assert r.status.value == "fail"
    # the target's line: where the hunk's change goes in 6.1.190's mm/vmscan.c
    assert r.summary == ("conflict in patch 1 (mm/vmscan: assert the folio lock in "
                         "shrink_folio_list()): mm/vmscan.c:1672 (target) in shrink_folio_list()")
    # --check says the same as the real run: one line per conflict, the target's
    check = bpc.check_series(tree.repo, tree.head, patches)
    assert [x.where() for x in check[0].spots] == [
        "mm/vmscan.c:1672 (target) in shrink_folio_list()"]
    real = r.detail(bpst.BackportDetails)
    assert real is not None and real.patches[0].spots == check[0].spots
    d = r.detail(bpst.BackportDetails)
    assert d is not None
    wt = Path(d.worktree)
    resolve(wt / "mm/vmscan.c")
    r = bpst.continue_backport(ws, state, "vmscan-demo", "linux-6.1.y",
                             "6.1 has no hwpoison block; assert before VM_BUG_ON_FOLIO")
    assert r.status.value == "warn", r.summary
    d = r.detail(bpst.BackportDetails)
    assert d is not None
    outcomes = [p.outcome.value for p in d.patches]
    assert outcomes == ["resolved", "offset", "3way"]
    assert d.patches[1].offsets == ["mm/vmscan.c:1626 (+591 lines) may_enter_fs()"]

    queue = bpq.queue_dir(cfg, "vmscan-demo", "linux-6.1.y")
    names = (queue / "series").read_text().split()
    assert len(names) == 3
    first = (queue / names[0]).read_text()
    assert "Link: https://lore.kernel.org/r/20261120100000.1-vmscan-demo@example.org" in first
    assert ("[ patchflow: resolved conflict in mm/vmscan.c:shrink_folio_list(): 6.1 has no "
            "hwpoison block; assert before VM_BUG_ON_FOLIO ]") in first
    assert "Reviewed-by: Bob Reviewer <bob@example.org>" in first
    assert "[ patchflow: 3-way merged" in (queue / names[2]).read_text()
    manifest = json.loads((queue / "manifest.json").read_text())
    assert manifest["base"] == tree.head and manifest["revision"] == 1
    assert bpst.status_matrix(state, "vmscan-demo")[0].state == "done"

    # the branch moves to the next stable release
    moved = prepare_tree(ws, "linux-6.1.y", upto="6.1.192")
    assert moved.release == "6.1.192" and moved.head != tree.head
    again = bpst.backport_version(ws, state, fetched, "linux-6.1.y")
    if again.status.value == "fail":  # mm/vmscan.c moved under the stored queue
        stale = again.detail(bpst.BackportDetails)
        assert stale is not None and stale.stale and "patchflow rebase" in again.summary
    r = bpst.backport_version(ws, state, fetched, "linux-6.1.y", rebase=True)
    assert r.status.value in ("pass", "warn"), r.summary
    d = r.detail(bpst.BackportDetails)
    assert d is not None and d.rebase is not None
    assert d.base == moved.head
    assert "mm/vmscan: assert the folio lock" in d.rebase.range_diff
    assert d.rebase.new_conflicts == ()
    text = (Path(d.worktree) / "mm/vmscan.c").read_text()
    assert ASSERT + "\n\t\tVM_BUG_ON_FOLIO(folio_test_active(folio), folio);" in text
    assert "<<<<<<<" not in text
