"""The stored backport: a patch queue under ``series/<name>/backports/<target>/``.

Owns writing it (format-patch, ``series`` file, ``manifest.json``, swapped in
whole), reading it back, the backport branch it points at, and finding out
why a stored queue no longer applies to a moved branch (:func:`check_stored`)
and how a rebase changed it (:func:`range_diff_report`).

``manifest.json`` is versioned by its ``format`` key: 1 (no key, before
skips existed) and 2 (adds ``skipped``: the patches dropped with ``--skip``
and why) are read; a newer one is refused in one line, never half-read.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchflow import gitrepo
from patchflow.backport.patches import (
    ACCEPTED,
    Outcome,
    PatchResult,
    hunks,
)
from patchflow.backport.session import Session
from patchflow.errors import StateError, WorkspaceError
from patchflow.workspace import atomic_write, atomic_write_json


def queue_dir(config_root: Path, series: str, target: str) -> Path:
    return config_root / "series" / series / "backports" / target


#: the manifest format written; every format up to it is read
MANIFEST_FORMAT = 2


@dataclass(frozen=True)
class Skip:
    """A patch the maintainer dropped from a backport as not applicable, and why."""

    patch: int
    subject: str
    patch_id: str
    note: str


def backport_ref(series: str, revision: int, target: str) -> str:
    """The branch holding the finished backport in the shared kernel repository."""
    return f"refs/heads/patchflow/{target}/{series}/v{revision}"


def read_manifest(config_root: Path, series: str, target: str) -> dict[str, Any] | None:
    path = queue_dir(config_root, series, target) / "manifest.json"
    if not path.exists():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except ValueError as exc:
        raise StateError(f"{path}: not a readable backport manifest ({exc})") from None
    fmt = data.get("format", 1)
    if not isinstance(fmt, int) or not 1 <= fmt <= MANIFEST_FORMAT:
        raise StateError(f"{path}: manifest format {fmt!r} is newer than this patchflow "
                         f"reads (up to {MANIFEST_FORMAT}); upgrade patchflow")
    return data


def skips_of(manifest: dict[str, Any] | None) -> list[Skip]:
    """The skipped patches a stored manifest records (none in a format 1 manifest)."""
    if not manifest:
        return []
    return [Skip(int(x["patch"]), str(x["subject"]), str(x["patch_id"]), str(x["note"]))
            for x in manifest.get("skipped", [])]


#: what a stored queue's manifest says about each patch that re-applying its
#: file cannot know again: how the patch first went in (a resolved conflict
#: applies "clean" from the stored file) and where it came from
PROVENANCE = ("idx", "subject", "patch_id", "outcome", "detail", "note", "spots", "files", "source_msgid")


def store(s: Session, config_root: Path, carried: Sequence[Skip] = (),
          stored: Sequence[dict[str, Any]] = ()) -> Path:
    """Write the finished backport as a patch queue and point its branch at it.

    *carried* are skips recorded by the stored queue this run re-applied (its
    patch files hold only what was applied), so a skip is never lost.
    *stored* are that queue's manifest entries for its patch files, in order:
    each re-applied patch keeps its :data:`PROVENANCE` from them, so a resolved
    conflict's note survives every later run that re-applies it.
    """
    if s.phase != "done":
        raise WorkspaceError(f"backport of {s.series} onto {s.target} is not finished")
    head = gitrepo.head(s.worktree)
    dest = queue_dir(config_root, s.series, s.target)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{s.target}.", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the queue is part of the repository
    try:
        files = gitrepo.format_patch(s.worktree, s.base, head, tmp)
        atomic_write(tmp / "series", "".join(f"{f.name}\n" for f in files))
        applied = [r for r in s.results if r.outcome not in (Outcome.PRESENT, Outcome.SKIPPED)]
        manifest = {
            "format": MANIFEST_FORMAT, "series": s.series, "revision": s.revision, "target": s.target,
            "base_ref": s.base_ref, "base": s.base, "head": head,
            "ref": backport_ref(s.series, s.revision, s.target),
            "stored": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "patches": [_entry(r, files, applied, s, stored) for r in s.results],
            "skipped": [{"patch": k.patch, "subject": k.subject, "patch_id": k.patch_id,
                         "note": k.note} for k in [*skips_in(s), *carried]],
        }
        atomic_write_json(tmp / "manifest.json", manifest)
        # swap the whole folder so a reader never sees half a queue
        old = dest.with_name(f".{dest.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    gitrepo.update_ref(s.repo, backport_ref(s.series, s.revision, s.target), head)
    return dest


def _entry(r: PatchResult, files: Sequence[Path], applied: list[PatchResult], s: Session,
           stored: Sequence[dict[str, Any]]) -> dict[str, Any]:
    pos = applied.index(r) if r in applied else -1
    entry = {**r.to_json(), "file": files[pos].name if pos >= 0 else None,
             "source_msgid": s.patches[r.idx - 1].msgid}
    # the re-applied session's patch i is the stored queue's file i
    was = stored[r.idx - 1] if pos >= 0 and r.idx <= len(stored) else {}
    return {**entry, **{k: was[k] for k in PROVENANCE if k in was}}


def stored_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored manifest's entries for the queue's patch files, in the files' order."""
    return [p for p in manifest.get("patches", []) if p.get("file")]


def skips_in(s: Session) -> list[Skip]:
    return [Skip(r.idx, r.subject, r.patch_id, r.detail) for r in s.results
            if r.outcome is Outcome.SKIPPED]


def stored_patches(config_root: Path, series: str, target: str) -> list[Path]:
    d = queue_dir(config_root, series, target)
    names = (d / "series").read_text().split() if (d / "series").exists() else []
    return [d / n for n in names]


@dataclass(frozen=True)
class Stale:
    """Why a stored queue no longer applies to the moved branch."""

    patch: str
    files: tuple[str, ...]
    moved: tuple[str, ...]  # hunk headers of old-base..new-head in those files


@dataclass(frozen=True)
class RebaseReport:
    """How a rebased backport differs from the one it replaces."""

    range_diff: str
    now_clean: tuple[str, ...]
    new_conflicts: tuple[str, ...]


def check_stored(repo: Path, manifest: dict[str, Any], patches: Sequence[Path], new_head: str
                 ) -> list[Stale]:
    """Strictly check a stored queue on *new_head*; explain every patch that fails."""
    stale: list[Stale] = []
    with tempfile.TemporaryDirectory(prefix="patchflow-stale-") as tmp:
        index = Path(tmp) / "index"
        gitrepo.read_tree(repo, new_head, index)
        for path in patches:
            if gitrepo.apply_cached(repo, path, index).ok:
                continue
            files = sorted({h.path for h in hunks(path.read_text(errors="replace"))})
            d = gitrepo.diff(repo, manifest["base"], new_head, files, context=0)
            moved = [f"{h.path}:{h.old_start}" + (f" {h.function}()" if h.function else "")
                     for h in hunks(d)]
            stale.append(Stale(path.name, tuple(files), tuple(moved)))
    return stale


def range_diff_report(repo: Path, previous: dict[str, Any], s: Session) -> RebaseReport:
    """Compare a new backport with the one it replaces."""
    before = {p["patch_id"]: p["outcome"] for p in previous.get("patches", [])}
    now_clean, new_conflicts = [], []
    for r in s.results:
        was = before.get(r.patch_id)
        if r.outcome in ACCEPTED and was not in (None, *[o.value for o in ACCEPTED]):
            now_clean.append(r.subject)
        if r.outcome in (Outcome.CONFLICT, Outcome.RESOLVED) and was not in (
                Outcome.CONFLICT.value, Outcome.RESOLVED.value):
            new_conflicts.append(r.subject)
    old = (str(previous.get("base", "")), str(previous.get("head", "")))
    missing = [c for c in old if c and gitrepo.rev_parse(repo, c) is None]
    if missing:
        # a queue committed on another machine: its commits were never in this repository
        rd = (f"no range-diff: the stored queue's commit {missing[0][:12]} is not in this "
              "repository (stored on another machine)\n")
    else:
        rd = gitrepo.range_diff(repo, *old, s.base, gitrepo.head(s.worktree)) if old[1] else ""
    return RebaseReport(rd, tuple(now_clean), tuple(new_conflicts))
