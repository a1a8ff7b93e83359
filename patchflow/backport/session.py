"""A backport in a worktree: apply patch by patch, stop at a conflict, go on after it.

:class:`Session` is the resumable state (saved as a journal in the worktree's
git dir, so ``--continue``/``--abort`` and a run after ``kill -9`` find it);
:func:`apply_one` is the classification of one patch by applying it (clean,
offset, 3-way, already present, fuzz, conflict), which the session calls.
With a build dir, every patch that goes in is compiled too
(:mod:`~patchflow.backport.buildcheck`) and a compile error stops the session
like a conflict ("build"); a stopped patch can also be skipped as not
applicable, with the maintainer's reason (:meth:`Session.skip`).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from patchflow import gitrepo
from patchflow.backport.buildcheck import compile_patch, prepared
from patchflow.backport.check import (
    Known,
    failed_spots,
    fuzz_level,
    offsets_of,
)
from patchflow.backport.patches import (
    LORE_LINK,
    Outcome,
    PatchInput,
    PatchResult,
    backport_message,
    conflict_spots,
    has_markers,
    note_for,
)
from patchflow.errors import NotFound, UserError, WorkspaceError
from patchflow.workspace import atomic_write_json

JOURNAL = "patchflow-backport.json"
BUILD_LOG = "patchflow-build-check.log"
#: phases in which the session waits for the maintainer (--continue, --skip or --abort)
STOPPED = ("conflict", "review", "build")


@dataclass
class Session:
    """A backport in a worktree, saved as a journal in the worktree's git dir."""

    series: str
    revision: int
    target: str
    repo: Path
    worktree: Path
    base: str
    base_ref: str
    patches: list[PatchInput]
    results: list[PatchResult] = field(default_factory=list)
    phase: str = "new"  # new | applying | conflict | review | build | done | aborted
    head: str = ""  # last good HEAD
    #: notes to reuse (by source patch-id) when rerere replays a stored resolution
    notes: dict[str, str] = field(default_factory=dict)
    previous: dict[str, Any] = field(default_factory=dict)  # manifest being rebased
    known: dict[str, str] = field(default_factory=dict)
    recovered: bool = False
    #: the ``%s`` mask of the ``Link:`` trailer (the archive's public form)
    link: str = LORE_LINK
    #: the target's prepared build dir for ``--build-check`` ("" = no build check)
    build_dir: str = ""
    #: patches skipped in an earlier backport (by source patch-id): skipped again, same reason
    skips: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------ persistence

    @staticmethod
    def journal_path(worktree: Path) -> Path:
        return gitrepo.git_path(worktree, JOURNAL)

    def save(self) -> None:
        d = {
            "series": self.series, "revision": self.revision, "target": self.target,
            "repo": str(self.repo), "worktree": str(self.worktree), "base": self.base,
            "base_ref": self.base_ref, "phase": self.phase, "head": self.head,
            "patches": [{**asdict(p), "path": str(p.path)} for p in self.patches],
            "results": [r.to_json() for r in self.results], "notes": self.notes,
            "previous": self.previous, "known": self.known, "link": self.link,
            "build_dir": self.build_dir, "skips": self.skips,
        }
        atomic_write_json(self.journal_path(self.worktree), d)

    @classmethod
    def load(cls, worktree: Path) -> Session:
        path = cls.journal_path(worktree) if gitrepo.is_worktree(worktree) else None
        if path is None or not path.exists():
            raise NotFound(f"no backport in progress in {worktree}")
        try:
            d = json.loads(path.read_text())
            return cls(series=d["series"], revision=d["revision"], target=d["target"],
                       repo=Path(d["repo"]), worktree=Path(d["worktree"]), base=d["base"],
                       base_ref=d["base_ref"], phase=d["phase"], head=d["head"],
                       patches=[PatchInput(**{**p, "path": Path(p["path"])})
                                for p in d["patches"]],
                       results=[PatchResult.from_json(r) for r in d["results"]],
                       notes=d.get("notes", {}), previous=d.get("previous", {}),
                       known=d.get("known", {}), link=d.get("link", LORE_LINK),
                       build_dir=d.get("build_dir", ""), skips=d.get("skips", {}))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WorkspaceError(f"{path}: not a readable backport journal ({exc}); "
                                 "`patchflow backport --abort` starts over") from None

    # ------------------------------------------------------------ state

    @property
    def current(self) -> PatchInput | None:
        n = len(self.results)
        return self.patches[n] if n < len(self.patches) else None

    @property
    def stopped(self) -> PatchResult | None:
        return self.results[-1] if self.phase in STOPPED and self.results else None

    def _known(self) -> Known:
        return Known(self.known, self.repo, self.base)

    # ------------------------------------------------------------ driving

    def run(self) -> Session:
        """Apply the remaining patches; stops at a conflict or a fuzz review."""
        self.recover()
        if self.phase in STOPPED:
            raise WorkspaceError(f"backport stopped at patch {len(self.results)}: resolve it, "
                                 "then `patchflow backport --continue` (or --skip, --abort)")
        while (p := self.current) is not None:
            self.phase, self.head = "applying", gitrepo.head(self.worktree)
            self.save()
            if p.patch_id in self.skips:
                self.results.append(PatchResult(p.idx, p.subject, p.patch_id, Outcome.SKIPPED,
                                                self.skips[p.patch_id], files=p.files))
                continue
            r = apply_one(self.worktree, p, self._known(), self.notes, self.head, self._commit)
            self.results.append(r)
            if r.outcome in (Outcome.CONFLICT, Outcome.FUZZ):
                self.phase = "conflict" if r.outcome is Outcome.CONFLICT else "review"
                self.save()
                return self
            if self._build_fails(r):
                self.phase = "build"
                self.save()
                return self
        self.phase, self.head = "done", gitrepo.head(self.worktree)
        self.save()
        return self

    def _commit(self, p: PatchInput, r: PatchResult) -> PatchResult:
        r.commit = gitrepo.amend_message(self.worktree, backport_message(p, r.note, self.link))
        return r

    def _build_fails(self, r: PatchResult) -> bool:
        """Compile what the just committed patch touches (``--build-check``); True on errors."""
        if not self.build_dir or r.outcome in (Outcome.PRESENT, Outcome.SKIPPED):
            return False
        tree = prepared(Path(self.build_dir), self.target)
        c = compile_patch(tree, self.worktree, r.files, gitrepo.git_path(self.worktree,
                                                                         BUILD_LOG))
        r.build, r.built, r.build_errors = c.status, list(c.built), list(c.errors)
        r.build_seconds = c.seconds
        return c.status == "failed"

    def recover(self) -> None:
        """Make a session killed mid-``git am`` consistent again.

        The journal says "applying" only between saving and recording a patch;
        if the process died there, a ``rebase-apply`` dir may be left that
        would block every later ``git am``.  Drop it and go back to the last
        good HEAD; the patch is then applied again.  Recorded resolutions are
        in rr-cache and the stored queue, neither of which is touched.
        """
        if self.phase != "applying":
            return
        gitrepo.am_abort(self.worktree)
        gitrepo.reset_hard(self.worktree, self.head)
        self.phase = "new"
        self.recovered = True
        self.save()

    def continue_(self, note: str | None = None) -> Session:
        """Take the maintainer's resolution of the stopped patch and go on."""
        self.recover()
        if self.phase not in STOPPED:
            return self.run()
        r = self.results[-1]
        p = self.patches[r.idx - 1]
        self._unlocked()
        if self.phase == "build":
            return self._continue_build(p, r, note)
        if self.phase == "review":
            r.detail = note or r.detail
        else:
            note = take_resolution(self.worktree, r, self.head, note)
            r.outcome, r.detail = Outcome.RESOLVED, note
            self.notes[p.patch_id] = note
        r.note = note_for(r)
        self._commit(p, r)
        if self._build_fails(r):
            self.phase = "build"
            self.save()
            return self
        self.phase = "new"
        self.save()
        return self.run()

    def _unlocked(self) -> None:
        lock = gitrepo.lock_file(self.worktree)
        if lock is not None:
            raise WorkspaceError(f"worktree {self.worktree} is locked ({lock}); another git "
                                 "is running?")

    def _continue_build(self, p: PatchInput, r: PatchResult, note: str | None) -> Session:
        """Take the maintainer's fix of a patch that did not compile, compile it again, go on.

        Edits left in the worktree are folded into the patch's commit; a patch
        that still does not compile stays stopped (the session is unchanged
        but for the new errors).
        """
        if not note:
            raise UserError("say what you changed to make it build: --note 'TEXT' (it goes "
                            "into the backport's commit message)")
        gitrepo.git(self.worktree, "add", "-u")
        if gitrepo.staged_changes(self.worktree):
            if gitrepo.git(self.worktree, "diff", "--cached", "--quiet", self.head,
                           check=False).ok:
                # the edits undo the whole patch: that is a skip, not a fix
                raise UserError(f"the edits in {self.worktree} leave patch {r.idx} empty; "
                                "drop it with --skip --note 'WHY' instead")
            gitrepo.git(self.worktree, "commit", "--amend", "--no-verify", "-q", "--no-edit")
        if self._build_fails(r):
            self.save()
            return self
        # changed by the maintainer, so never "clean": the backport WARNs and says why
        r.outcome, r.detail = Outcome.RESOLVED, note
        r.note = f"fixed to build on {self.target}: {note}"
        self._commit(p, r)
        self.phase = "new"
        self.save()
        return self.run()

    def skip(self, note: str | None) -> Session:
        """Drop the stopped patch as not applicable to this target, say why, and go on.

        The worktree goes back to the HEAD before the patch (a stopped ``git
        am`` is aborted, a committed fuzz or build-failing patch is dropped);
        the patch is recorded as SKIPPED with *note*, which the stored queue
        keeps (tests/unit/test_backport.py::test_skip_records_and_goes_on).
        """
        self.recover()
        if self.phase not in STOPPED:
            raise UserError(f"nothing to skip: the backport of {self.series} onto "
                            f"{self.target} is {self.phase}, not stopped at a patch")
        if not note or not note.strip():
            raise UserError("say why the patch does not apply here: --skip --note 'WHY'")
        self._unlocked()
        gitrepo.am_abort(self.worktree)
        gitrepo.reset_hard(self.worktree, self.head)
        r = self.results[-1]
        r.outcome, r.detail, r.note, r.commit = Outcome.SKIPPED, note.strip(), "", ""
        self.phase = "new"
        self.save()
        return self.run()

    def abort(self) -> None:
        gitrepo.am_abort(self.worktree)
        gitrepo.reset_hard(self.worktree, self.base)
        self.phase = "aborted"
        self.save()


def take_resolution(wt: Path, r: PatchResult, head: str, note: str | None) -> str:
    """Commit the maintainer's resolution of a conflicted patch; the note that explains it.

    Refuses conflict markers left in a file, unmerged paths, or nothing done at
    all; the note comes from ``--note`` or a ``[ ... ]`` line the maintainer
    already wrote into the commit message.
    """
    if gitrepo.am_in_progress(wt):
        left = [f for f in sorted(set(r.files) | set(gitrepo.unmerged_files(wt)))
                if has_markers(wt / f)]
        if left:
            raise WorkspaceError(f"conflict markers left in {', '.join(left)}")
        gitrepo.git(wt, "add", "-u")
        if gitrepo.unmerged_files(wt):
            raise WorkspaceError("unmerged files remain: " + ", ".join(gitrepo.unmerged_files(wt)))
        cont = gitrepo.am_continue(wt)
        if not cont.ok:
            raise WorkspaceError(f"git am --continue failed in {wt}:\n{cont.tail}")
    elif gitrepo.head(wt) == head:
        raise WorkspaceError("nothing was resolved: the patch is not committed and no "
                             "`git am` is in progress")
    if not note:
        m = re.search(r"^\[ (?!Upstream commit)(?:patchflow: )?(.+?) \]$",
                      gitrepo.commit_message(wt, "HEAD"), re.M)
        note = m.group(1) if m else None
    if not note:
        raise UserError("say what you changed: --note 'TEXT' (it goes into the backport's "
                        "commit message)")
    return note


def start(*, series: str, revision: int, target: str, repo: Path, worktree: Path, base: str,
          base_ref: str, patches: Sequence[PatchInput], notes: dict[str, str] | None = None,
          previous: dict[str, Any] | None = None, known: Known | None = None,
          link: str = LORE_LINK, build_dir: Path | None = None,
          skips: dict[str, str] | None = None) -> Session:
    """Create a fresh worktree at *base* and apply *patches* (see :meth:`Session.run`)."""
    if gitrepo.is_worktree(worktree):
        try:
            old = Session.load(worktree)
        except NotFound:
            old = None
        if old is not None and old.phase in (*STOPPED, "applying"):
            raise WorkspaceError(
                f"a backport of {old.series} v{old.revision} onto {old.target} is in progress "
                f"in {worktree} (patch {len(old.results)}): --continue or --abort it first")
        # reuse it: a reset rewrites only the files that differ, where a fresh
        # `worktree add` writes all 80,000 files of a kernel (~30-60 s)
        gitrepo.configure(repo)
        gitrepo.am_abort(worktree)
        gitrepo.reset_hard(worktree, base)
    else:
        if worktree.exists():
            shutil.rmtree(worktree)
        gitrepo.configure(repo)
        gitrepo.worktree_prune(repo)
        gitrepo.worktree_add(repo, worktree, base)
    s = Session(series, revision, target, repo, worktree, base, base_ref, list(patches),
                notes=dict(notes or {}), previous=dict(previous or {}),
                known=dict(known.patch_ids) if known else {}, link=link,
                build_dir=str(build_dir or ""), skips=dict(skips or {}))
    s.head = base
    s.save()
    return s.run()


def apply_one(wt: Path, p: PatchInput, known: Known, notes: dict[str, str], head: str,
              commit: Callable[[PatchInput, PatchResult], PatchResult]) -> PatchResult:
    """Apply *p* in the worktree *wt* (at *head*) and say what happened.

    Strict check first (offsets reported, no fuzz), then ``git am``; a patch that
    only applies with a 3-way merge is flagged, one rerere resolves is RESOLVED
    (with the maintainer's earlier note from *notes*), one that only applies
    with reduced context is committed and stops for review, anything else
    leaves ``git am`` stopped on the conflict for the maintainer.
    """
    r = PatchResult(p.idx, p.subject, p.patch_id, Outcome.CLEAN, files=p.files)
    why = known.present(p)
    if why:
        r.outcome, r.detail = Outcome.PRESENT, why
        return r
    strict = gitrepo.apply_check(wt, p.path)
    if strict.ok:
        r.offsets = offsets_of(strict.stderr + strict.stdout, p)
        r.outcome = Outcome.OFFSET if r.offsets else Outcome.CLEAN
        done = gitrepo.am(wt, [p.path], three_way=False)
        if not done.ok:  # cannot happen after a clean check, unless the mail is odd
            r.outcome, r.detail = Outcome.CONFLICT, done.tail.strip()[-500:]
            return r
        return commit(p, r)
    if gitrepo.apply_check(wt, p.path, reverse=True).ok:
        r.outcome, r.detail = Outcome.PRESENT, "content already in the tree"
        return r
    done = gitrepo.am(wt, [p.path], three_way=True)
    text = done.stdout + done.stderr
    if done.ok:
        r.outcome = Outcome.THREEWAY
        r.spots = failed_spots(strict.stderr, p,
                                lambda f: gitrepo.show_file(wt, "HEAD~1", f))
        r.note = note_for(r)
        return commit(p, r)
    r.spots = failed_spots(strict.stderr, p, lambda f: gitrepo.show_file(wt, "HEAD", f))
    unmerged = gitrepo.unmerged_files(wt)
    threeway_ran = "Falling back to patching base and 3-way merge" in text and \
        "could not build fake ancestor" not in text
    if threeway_ran:
        conflicted = unmerged or [f for f in p.files if has_markers(wt / f)]
        # the markers' lines move with every merged hunk: kept as a pointer for
        # the editor, never as the reported spot (see ConflictSpot)
        r.markers = [str(s) for f in conflicted for s in conflict_spots(wt, f)]
        if "using previous resolution" in text and not unmerged and not any(
                has_markers(wt / f) for f in p.files):
            # rerere replayed a recorded resolution for every conflict
            r.outcome = Outcome.RESOLVED
            r.detail = notes.get(p.patch_id, "") or "recorded resolution (rerere)"
            gitrepo.add_paths(wt, p.files)
            cont = gitrepo.am_continue(wt)
            if cont.ok:
                r.note = note_for(r)
                return commit(p, r)
        r.outcome = Outcome.CONFLICT
        r.files = conflicted or p.files
        return r
    # no 3-way possible (pre-image blobs missing): is it only fuzz?
    gitrepo.am_abort(wt)
    gitrepo.reset_hard(wt, head)
    fuzz = fuzz_level(wt, p, None)
    if fuzz is not None:
        # applied and committed, then stopped: the maintainer must accept it
        done = gitrepo.git(wt, "am", "--keep-cr", f"-C{fuzz}", str(p.path), check=False)
        if done.ok:
            r.outcome, r.detail = Outcome.FUZZ, f"applies only with -C{fuzz}"
            r.commit = gitrepo.head(wt)
            return r
        gitrepo.am_abort(wt)
        gitrepo.reset_hard(wt, head)
    # leave `git am` stopped on the patch for the maintainer
    gitrepo.am(wt, [p.path], three_way=False)
    r.outcome = Outcome.CONFLICT
    r.files = sorted({s.path for s in r.spots})
    return r
