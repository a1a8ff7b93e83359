"""The backport engine: apply a series onto a target branch, patch by patch.

Owns the classification of every patch (clean, offset, 3-way merged, already
present, fuzz, conflict), the conflict report (files, hunks, C functions), the
resumable session (``--continue``/``--abort``, recovery after ``kill -9``),
the stored patch queue under ``series/<name>/backports/<target>/``, stale
detection, rebase with range-diff, and the worktree-free ``--check``.

The core works on patch files and a git repository only; the State DB and the
series module are touched by the thin ``*_for_series`` glue at the bottom and
by the CLI, so unit tests drive it with ``git format-patch`` output.

Why classify ourselves: ``git am`` applies at an offset without a word,
``git am -3`` merges drifted context silently, and GNU patch fuzzes by
default.  So every patch is first checked with a strict ``git apply --check
--verbose`` (full context: offsets are reported, fuzz is impossible), and only
then applied; a patch that needs reduced context stops for review.
"""

from __future__ import annotations

import enum
import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from patchflow import gitrepo
from patchflow.config import SeriesConfig, TargetConfig
from patchflow.errors import NotFound, PatchflowError, UserError, WorkspaceError
from patchflow.result import StageResult, Status, Stopwatch, measure
from patchflow.state import State
from patchflow.workspace import Workspace, atomic_write, atomic_write_json

JOURNAL = "patchflow-backport.json"
LORE = "https://lore.kernel.org/r/"


class Outcome(enum.Enum):
    CLEAN = "clean"
    OFFSET = "offset"
    THREEWAY = "3way"
    PRESENT = "already-present"
    FUZZ = "fuzz"  # needs reduced context: stops for review, never silent
    CONFLICT = "conflict"
    RESOLVED = "resolved"  # a conflict resolved by the maintainer or by rerere
    STALE = "stale"  # a stored backport patch no longer applies


#: outcomes that are fine without a human look
ACCEPTED = (Outcome.CLEAN, Outcome.OFFSET, Outcome.PRESENT)


@dataclass(frozen=True)
class PatchInput:
    """One patch of a series version, as a mail file ``git am`` can take."""

    idx: int
    path: Path
    subject: str
    msgid: str
    patch_id: str
    message: str  # commit message (subject + body + trailers) as git am records it
    diff: str
    upstream: str | None = None

    @property
    def files(self) -> list[str]:
        return [h.path for h in hunks(self.diff)]


@dataclass(frozen=True)
class Hunk:
    path: str
    old_start: int
    old_len: int
    new_start: int
    function: str  # from the hunk header's function context, may be ""
    #: the pre-image lines (context and removed), without their ' '/'-' prefix
    old_lines: tuple[str, ...] = ()
    #: how many context lines come before the first changed line
    lead: int = 0


@dataclass(frozen=True)
class ConflictSpot:
    """Where a patch does not go in: always a line of the *target's* file.

    The line is where the hunk's first change lands in the target branch's
    version of the file (the hunk's pre-image located there), and the
    function is the one enclosing it in that file.  It is computed the same
    way whether or not a 3-way merge could run, so neither the cache (are the
    pre-image blobs in the repository?) nor ``--check`` against a real run
    changes it (tests/unit/test_backport.py::test_conflict_spot_without_preimage_blobs).
    """

    path: str
    line: int
    function: str

    def __str__(self) -> str:
        fn = f":{self.function}()" if self.function else ""
        return f"{self.path}:{self.line}{fn}"


@dataclass
class PatchResult:
    idx: int
    subject: str
    patch_id: str
    outcome: Outcome
    detail: str = ""
    files: list[str] = field(default_factory=list)
    spots: list[ConflictSpot] = field(default_factory=list)
    offsets: list[str] = field(default_factory=list)
    note: str = ""
    commit: str = ""
    #: where the conflict markers are in the worktree (a 3-way merge that conflicted)
    markers: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        d["spots"] = [asdict(s) for s in self.spots]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PatchResult:
        d = dict(d)
        d["outcome"] = Outcome(d["outcome"])
        d["spots"] = [ConflictSpot(**s) for s in d.get("spots", [])]
        return cls(**d)


# --------------------------------------------------------------------------- parsing

# @@ -1234,7 +1240,8 @@ static unsigned int shrink_folio_list(struct list_head *folio_list,
HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)$")
# diff --git a/mm/vmscan.c b/mm/vmscan.c
DIFF_RE = re.compile(r"^diff --git a/(\S+) b/(\S+)$")
# static unsigned int shrink_folio_list(struct list_head *folio_list,
FUNC_NAME_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")
# Hunk #1 succeeded at 1250 (offset 16 lines).
OFFSET_RE = re.compile(r"Hunk #(\d+) succeeded at (\d+) \(offset (-?\d+) lines?\)")
# error: patch failed: mm/vmscan.c:1234
FAILED_RE = re.compile(r"^error: patch failed: (.+):(\d+)$", re.M)
# Checking patch mm/vmscan.c...
CHECKING_RE = re.compile(r"^Checking patch (.+)\.\.\.$", re.M)
UPSTREAM_RE = re.compile(r"(?:^commit ([0-9a-f]{40}) upstream\.?$|"
                         r"^\[ Upstream commit ([0-9a-f]{40}) \]$)", re.M)


def function_name(context: str) -> str:
    m = FUNC_NAME_RE.search(context)
    return m.group(1) if m else ""


def hunks(diff: str) -> list[Hunk]:
    out: list[Hunk] = []
    path = ""
    cur: dict[str, Any] | None = None
    changed = False
    old_left = new_left = 0

    def flush() -> None:
        if cur is not None:
            out.append(Hunk(**{**cur, "old_lines": tuple(cur["old_lines"])}))

    for line in diff.splitlines():
        m = DIFF_RE.match(line)
        if m:
            flush()
            cur = None
            path = m.group(2)
            continue
        h = HUNK_RE.match(line)
        if h and path:
            flush()
            old_left = int(h.group(2) if h.group(2) is not None else 1)
            new_left = int(h.group(4) if h.group(4) is not None else 1)
            cur = {"path": path, "old_start": int(h.group(1)), "old_len": old_left,
                   "new_start": int(h.group(3)), "function": function_name(h.group(5)),
                   "old_lines": [], "lead": 0}
            changed = False
            continue
        if cur is None or (old_left <= 0 and new_left <= 0):
            continue
        tag, text = (line[0], line[1:]) if line else (" ", "")
        if tag == " ":
            cur["old_lines"].append(text)
            old_left, new_left = old_left - 1, new_left - 1
            if not changed:
                cur["lead"] += 1
        elif tag == "-":
            cur["old_lines"].append(text)
            old_left -= 1
            changed = True
        elif tag == "+":
            new_left -= 1
            changed = True
    flush()
    return out


def locate_hunk(lines: Sequence[str], h: Hunk) -> int:
    """0-based index in *lines* (a target's file) where *h*'s first change belongs.

    Each pre-image line votes for the offset at which it matches the file;
    blank and brace-only lines vote only when nothing else matched.  The
    offset with the most votes wins, the one nearest the patch's own line
    number on a tie.  A hunk that matches nowhere lands at its own line.
    """
    positions: dict[str, list[int]] = {}
    for i, text in enumerate(lines):
        positions.setdefault(text, []).append(i)
    votes: dict[int, float] = {}
    weak: dict[int, float] = {}
    for j, text in enumerate(h.old_lines):
        trivial = text.strip() in ("", "{", "}", "};", "break;", "return 0;")
        for i in positions.get(text, ()):
            bucket = weak if trivial else votes
            # a line found in many places says little about where the hunk goes
            bucket[i - j] = bucket.get(i - j, 0.0) + 1.0 / len(positions[text])
    tally = votes or weak
    want = h.old_start - 1
    if not tally:
        return min(max(want + h.lead, 0), max(len(lines) - 1, 0))
    best = max(tally.items(), key=lambda kv: (round(kv[1], 6), -abs(kv[0] - want)))[0]
    return min(max(best + h.lead, 0), max(len(lines) - 1, 0))


def target_spots(lines: Sequence[str], hs: Sequence[Hunk]) -> list[ConflictSpot]:
    """The target-side :class:`ConflictSpot` of each hunk of one file."""
    out = []
    for h in hs:
        i = locate_hunk(lines, h)
        out.append(ConflictSpot(h.path, i + 1, enclosing_function(lines, i) or h.function))
    return out


def enclosing_function(lines: Sequence[str], index: int) -> str:
    """Name of the C function whose body holds ``lines[index]``, or ''.

    Scans upwards for a definition line: it starts in column 0 with a letter
    or '_', has a '(' and does not end in ';'.  A column-0 '}' first means the
    line is between functions.
    """
    for i in range(min(index, len(lines) - 1), -1, -1):
        text = lines[i]
        if text.startswith("}"):
            return ""
        if (text[:1].isalpha() or text[:1] == "_") and "(" in text \
                and not text.rstrip().endswith(";") and not text.endswith(":"):
            return function_name(text)
    return ""


def conflict_spots(worktree: Path, path: str) -> list[ConflictSpot]:
    """Where the conflict markers are in a conflicted file, with their functions."""
    try:
        lines = (worktree / path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    return [ConflictSpot(path, i + 1, enclosing_function(lines, i))
            for i, line in enumerate(lines) if line.startswith("<<<<<<< ")]


def has_markers(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return False
    return bool(re.search(r"^(<{7} |>{7} |={7}$)", text, re.M))


def load_patches(repo: Path, mbox: Path, workdir: Path) -> list[PatchInput]:
    """Split an am-ready mbox (or one patch file) into :class:`PatchInput`, in order."""
    import email
    import email.policy

    mails = gitrepo.mailsplit(mbox, workdir / "mails")
    out: list[PatchInput] = []
    for mail in mails:
        info_dir = workdir / "info" / mail.name
        info_dir.mkdir(parents=True, exist_ok=True)
        body, diff, headers = gitrepo.mailinfo(repo, mail, info_dir)
        if not diff.strip():
            continue  # a cover letter
        raw = email.message_from_bytes(mail.read_bytes(), policy=email.policy.compat32)
        msgid = (raw.get("Message-Id") or raw.get("Message-ID") or "").strip().strip("<>")
        subject = headers.get("Subject", "")
        message = f"{subject}\n\n{body.strip()}\n"
        m = UPSTREAM_RE.search(body)
        upstream = (m.group(1) or m.group(2)) if m else None
        out.append(PatchInput(len(out) + 1, mail, subject, msgid, gitrepo.patch_id(repo, diff),
                              message, diff, upstream))
    return out


def backport_message(p: PatchInput, note: str) -> str:
    """The commit message a stored backport patch carries.

    Stable style: ``[ Upstream commit <sha> ]`` under the subject when there is
    an upstream commit, else a ``Link:`` to the lore posting next to the
    original trailers; then a ``[ patchflow: ... ]`` note on what changed.
    """
    subject, _, rest = p.message.partition("\n")
    body = rest.strip("\n")
    if p.upstream and p.upstream not in body:
        body = f"[ Upstream commit {p.upstream} ]\n\n{body}"
    elif not p.upstream and p.msgid and f"{LORE}{p.msgid}" not in body:
        body = f"{body}\nLink: {LORE}{p.msgid}"
    if note:
        body = f"{body}\n[ patchflow: {note} ]"
    return f"{subject}\n\n{body.strip()}\n"


def note_for(result: PatchResult) -> str:
    where = ", ".join(f"{s.path}:{s.function}()" if s.function else s.path
                      for s in _unique_spots(result.spots)) or ", ".join(result.files)
    if result.outcome is Outcome.THREEWAY:
        return f"3-way merged, context differs in {where}"
    if result.outcome is Outcome.FUZZ:
        return f"applied with reduced context in {where}, reviewed"
    if result.outcome is Outcome.RESOLVED:
        return f"resolved conflict in {where}" + (f": {result.detail}" if result.detail else "")
    return ""


def _unique_spots(spots: Sequence[ConflictSpot]) -> list[ConflictSpot]:
    seen: set[tuple[str, str]] = set()
    out = []
    for s in spots:
        if (s.path, s.function) not in seen:
            seen.add((s.path, s.function))
            out.append(s)
    return out


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class Known:
    """What the target already contains: patch-ids and upstream shas mentioned."""

    patch_ids: dict[str, str]
    repo: Path
    rev_range: str

    def present(self, p: PatchInput) -> str:
        if p.patch_id and p.patch_id in self.patch_ids:
            return f"same patch-id as {self.patch_ids[p.patch_id][:12]}"
        if p.upstream:
            found = gitrepo.grep_log(self.repo, self.rev_range, p.upstream)
            if found:
                return f"upstream commit {p.upstream[:12]} already in {found[0][:12]}"
        return ""


def known_in(repo: Path, base: str, limit: int = 500) -> Known:
    return Known(gitrepo.commit_patch_ids(repo, base, limit), repo, base)


def _offsets(stderr: str, p: PatchInput) -> list[str]:
    hs = hunks(p.diff)
    out = []
    for m in OFFSET_RE.finditer(stderr):
        n = int(m.group(1))
        # git counts hunks per file; find which file was being checked
        before = stderr[: m.start()]
        files = CHECKING_RE.findall(before)
        path = files[-1] if files else "?"
        fhunks = [h for h in hs if h.path == path]
        fn = fhunks[n - 1].function if 0 < n <= len(fhunks) else ""
        out.append(f"{path}:{m.group(2)} ({int(m.group(3)):+d} lines)"
                   + (f" {fn}()" if fn else ""))
    return out


# index 512a31d7ae9e..3c1f0e2b9d4a 100644
INDEX_RE = re.compile(r"^index ([0-9a-f]{7,40})\.\.[0-9a-f]{7,40}", re.M)


def _preimages(diff: str) -> dict[str, str]:
    """path -> abbreviated pre-image blob id, from the patch's index lines."""
    out: dict[str, str] = {}
    for part in re.split(r"^(?=diff --git )", diff, flags=re.M):
        m, i = DIFF_RE.match(part.split("\n", 1)[0]), INDEX_RE.search(part)
        if m and i:
            out[m.group(1)] = i.group(1)
    return out


def _failed_spots(stderr: str, p: PatchInput, read: Callable[[str], str | None]
                  ) -> list[ConflictSpot]:
    """Target-side spots of the hunks ``git apply --check`` named as failing.

    ``read(path)`` gives the target's version of a file (the worktree's HEAD,
    or the ``--check`` index), so the spot is the same for a real run and a
    check, with or without a 3-way merge.
    """
    hs = hunks(p.diff)
    failed = {(path, int(line)) for path, line in FAILED_RE.findall(stderr)}
    chosen = [h for h in hs if (h.path, h.old_start) in failed] or hs
    texts: dict[str, list[str]] = {}
    spots: list[ConflictSpot] = []
    for h in chosen:
        if h.path not in texts:
            text = read(h.path)
            texts[h.path] = text.splitlines() if text is not None else []
        lines = texts[h.path]
        spots += target_spots(lines, [h]) if lines else [
            ConflictSpot(h.path, h.old_start, h.function)]
    return spots


def ensure_preimages(repo: Path, patches: Sequence[PatchInput]) -> dict[str, str]:
    """Write every pre-image blob a 3-way merge of *patches* needs; the files it cannot.

    ``git am -3`` builds its merge base from the blob ids on the patches'
    ``index`` lines, so whether a patch 3-way merges used to depend on what
    the shared repository happened to hold (the series' base imported by an
    earlier run, or an earlier application of the same series).  Here the
    first pre-image of each file must be in the repository (the series'
    base); the later ones are made by applying the series to those blobs in
    a scratch index, as ``git am --3way`` and ``b4 shazam -H`` build fake
    ancestors.  Returns ``{path: reason}`` for the files a 3-way merge cannot
    use, so the result says so instead of silently falling back.
    """
    missing: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="patchflow-pre-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        have: set[str] = set()
        for p in patches:
            blobs = _preimages(p.diff)
            usable = True
            for path, blob in blobs.items():
                if path in have or path in missing:
                    usable = usable and path not in missing
                    continue
                full = gitrepo.blob_sha(repo, blob)
                if full is None:
                    missing[path] = (f"pre-image blob {blob} of {path} (patch {p.idx}) is not in "
                                     "the repository: the series' base is not imported")
                    usable = False
                    continue
                gitrepo.index_add(repo, env, path, full)
                have.add(path)
            if usable and blobs and not gitrepo.git(
                    repo, "apply", "--cached", str(p.path), env=env, check=False).ok:
                for path in blobs:
                    missing.setdefault(path, f"patch {p.idx} does not apply to its own "
                                             f"pre-image of {path}")
    return missing


def check_series(repo: Path, base: str, patches: Sequence[PatchInput],
                 known: Known | None = None) -> list[PatchResult]:
    """Whether each patch applies on *base*, without any checkout.

    A temporary index (``read-tree``) is updated patch by patch with ``git
    apply --cached``, so patch N is checked on top of patches 1..N-1.
    """
    results: list[PatchResult] = []
    with tempfile.TemporaryDirectory(prefix="patchflow-check-") as tmp:
        index = Path(tmp) / "index"
        gitrepo.read_tree(repo, base, index)
        env = {"GIT_INDEX_FILE": str(index)}
        for p in patches:
            r = PatchResult(p.idx, p.subject, p.patch_id, Outcome.CLEAN, files=p.files)
            why = known.present(p) if known else ""
            strict = gitrepo.git(repo, *gitrepo.apply_check_argv(p.path, cached=True),
                                 env=env, check=False)
            if why:
                r.outcome, r.detail = Outcome.PRESENT, why
            elif strict.ok:
                r.offsets = _offsets(strict.stderr + strict.stdout, p)
                r.outcome = Outcome.OFFSET if r.offsets else Outcome.CLEAN
                gitrepo.apply_cached(repo, p.path, index)
            elif gitrepo.git(repo, *gitrepo.apply_check_argv(p.path, cached=True, reverse=True),
                             env=env, check=False).ok:
                r.outcome, r.detail = Outcome.PRESENT, "content already in the tree"
            else:
                # located before the 3-way attempt, which leaves unmerged index entries
                r.spots = _failed_spots(strict.stderr, p,
                                        lambda f: gitrepo.index_file(repo, index, f))
                merged = gitrepo.apply_cached(repo, p.path, index, three_way=True)
                if merged.ok:
                    r.outcome = Outcome.THREEWAY
                    results.append(r)
                    continue
                # a failed 3-way leaves unmerged entries: start from a clean index again
                gitrepo.read_tree(repo, _index_tree(repo, results, base, patches), index)
                fuzz = None if "with conflicts" in merged.stderr else _fuzz_level(repo, p, env)
                if fuzz is not None:
                    r.outcome, r.detail = Outcome.FUZZ, f"applies only with -C{fuzz}"
                else:
                    r.outcome = Outcome.CONFLICT
            results.append(r)
    return results


def _index_tree(repo: Path, results: list[PatchResult], base: str,
                patches: Sequence[PatchInput]) -> str:
    # rebuild: base plus every patch so far that went into the index
    with tempfile.TemporaryDirectory(prefix="patchflow-check-") as tmp:
        index = Path(tmp) / "index"
        gitrepo.read_tree(repo, base, index)
        for r in results:
            if r.outcome in (Outcome.CLEAN, Outcome.OFFSET, Outcome.THREEWAY):
                gitrepo.apply_cached(repo, patches[r.idx - 1].path, index,
                                     three_way=r.outcome is Outcome.THREEWAY)
        return gitrepo.out(repo, "write-tree", env={"GIT_INDEX_FILE": str(index)})


def _fuzz_level(where: Path, p: PatchInput, env: dict[str, str] | None) -> int | None:
    cached = env is not None
    for ctx in (2, 1):
        if gitrepo.git(where, *gitrepo.apply_check_argv(p.path, cached=cached, context=ctx),
                       env=env, check=False).ok:
            return ctx
    return None


# --------------------------------------------------------------------------- sessions


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
    phase: str = "new"  # new | applying | conflict | review | done | aborted
    head: str = ""  # last good HEAD
    #: notes to reuse (by source patch-id) when rerere replays a stored resolution
    notes: dict[str, str] = field(default_factory=dict)
    previous: dict[str, Any] = field(default_factory=dict)  # manifest being rebased
    known: dict[str, str] = field(default_factory=dict)
    recovered: bool = False

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
            "previous": self.previous, "known": self.known,
        }
        atomic_write_json(self.journal_path(self.worktree), d)

    @classmethod
    def load(cls, worktree: Path) -> Session:
        path = cls.journal_path(worktree) if gitrepo.is_worktree(worktree) else None
        if path is None or not path.exists():
            raise NotFound(f"no backport in progress in {worktree}")
        d = json.loads(path.read_text())
        return cls(series=d["series"], revision=d["revision"], target=d["target"],
                   repo=Path(d["repo"]), worktree=Path(d["worktree"]), base=d["base"],
                   base_ref=d["base_ref"], phase=d["phase"], head=d["head"],
                   patches=[PatchInput(**{**p, "path": Path(p["path"])}) for p in d["patches"]],
                   results=[PatchResult.from_json(r) for r in d["results"]],
                   notes=d.get("notes", {}), previous=d.get("previous", {}),
                   known=d.get("known", {}))

    # ------------------------------------------------------------ state

    @property
    def current(self) -> PatchInput | None:
        n = len(self.results)
        return self.patches[n] if n < len(self.patches) else None

    @property
    def stopped(self) -> PatchResult | None:
        return self.results[-1] if self.phase in ("conflict", "review") and self.results else None

    def _known(self) -> Known:
        return Known(self.known, self.repo, self.base)

    # ------------------------------------------------------------ driving

    def run(self) -> Session:
        """Apply the remaining patches; stops at a conflict or a fuzz review."""
        self.recover()
        if self.phase in ("conflict", "review"):
            raise WorkspaceError(f"backport stopped at patch {len(self.results)}: resolve it, "
                                 "then `patchflow backport --continue` (or --abort)")
        while (p := self.current) is not None:
            self.phase, self.head = "applying", gitrepo.head(self.worktree)
            self.save()
            r = self._apply(p)
            self.results.append(r)
            if r.outcome in (Outcome.CONFLICT, Outcome.FUZZ):
                self.phase = "conflict" if r.outcome is Outcome.CONFLICT else "review"
                self.save()
                return self
        self.phase, self.head = "done", gitrepo.head(self.worktree)
        self.save()
        return self

    def _apply(self, p: PatchInput) -> PatchResult:
        wt = self.worktree
        r = PatchResult(p.idx, p.subject, p.patch_id, Outcome.CLEAN, files=p.files)
        why = self._known().present(p)
        if why:
            r.outcome, r.detail = Outcome.PRESENT, why
            return r
        strict = gitrepo.apply_check(wt, p.path)
        if strict.ok:
            r.offsets = _offsets(strict.stderr + strict.stdout, p)
            r.outcome = Outcome.OFFSET if r.offsets else Outcome.CLEAN
            done = gitrepo.am(wt, [p.path], three_way=False)
            if not done.ok:  # cannot happen after a clean check, unless the mail is odd
                r.outcome, r.detail = Outcome.CONFLICT, done.tail.strip()[-500:]
                return r
            return self._commit(p, r)
        if gitrepo.apply_check(wt, p.path, reverse=True).ok:
            r.outcome, r.detail = Outcome.PRESENT, "content already in the tree"
            return r
        done = gitrepo.am(wt, [p.path], three_way=True)
        text = done.stdout + done.stderr
        if done.ok:
            r.outcome = Outcome.THREEWAY
            r.spots = _failed_spots(strict.stderr, p,
                                    lambda f: gitrepo.show_file(wt, "HEAD~1", f))
            r.note = note_for(r)
            return self._commit(p, r)
        r.spots = _failed_spots(strict.stderr, p, lambda f: gitrepo.show_file(wt, "HEAD", f))
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
                r.detail = self.notes.get(p.patch_id, "") or "recorded resolution (rerere)"
                gitrepo.add_paths(wt, p.files)
                cont = gitrepo.am_continue(wt)
                if cont.ok:
                    r.note = note_for(r)
                    return self._commit(p, r)
            r.outcome = Outcome.CONFLICT
            r.files = conflicted or p.files
            return r
        # no 3-way possible (pre-image blobs missing): is it only fuzz?
        gitrepo.am_abort(wt)
        gitrepo.reset_hard(wt, self.head)
        fuzz = _fuzz_level(wt, p, None)
        if fuzz is not None:
            # applied and committed, then stopped: the maintainer must accept it
            done = gitrepo.git(wt, "am", "--keep-cr", f"-C{fuzz}", str(p.path), check=False)
            if done.ok:
                r.outcome, r.detail = Outcome.FUZZ, f"applies only with -C{fuzz}"
                r.commit = gitrepo.head(wt)
                return r
            gitrepo.am_abort(wt)
            gitrepo.reset_hard(wt, self.head)
        # leave `git am` stopped on the patch for the maintainer
        gitrepo.am(wt, [p.path], three_way=False)
        r.outcome = Outcome.CONFLICT
        r.files = sorted({s.path for s in r.spots})
        return r

    def _commit(self, p: PatchInput, r: PatchResult) -> PatchResult:
        r.commit = gitrepo.amend_message(self.worktree, backport_message(p, r.note))
        return r

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
        if self.phase not in ("conflict", "review"):
            return self.run()
        r = self.results[-1]
        p = self.patches[r.idx - 1]
        wt = self.worktree
        lock = gitrepo.lock_file(wt)
        if lock is not None:
            raise WorkspaceError(f"worktree {wt} is locked ({lock}); another git is running?")
        if self.phase == "review":
            r.detail = note or r.detail
        else:
            if gitrepo.am_in_progress(wt):
                left = [f for f in sorted(set(r.files) | set(gitrepo.unmerged_files(wt)))
                        if has_markers(wt / f)]
                if left:
                    raise WorkspaceError(f"conflict markers left in {', '.join(left)}")
                gitrepo.git(wt, "add", "-u")
                if gitrepo.unmerged_files(wt):
                    raise WorkspaceError("unmerged files remain: "
                                         + ", ".join(gitrepo.unmerged_files(wt)))
                cont = gitrepo.am_continue(wt)
                if not cont.ok:
                    raise WorkspaceError(f"git am --continue failed in {wt}:\n{cont.tail}")
            elif gitrepo.head(wt) == self.head:
                raise WorkspaceError("nothing was resolved: the patch is not committed and no "
                                     "`git am` is in progress")
            if not note:
                m = re.search(r"^\[ (?!Upstream commit)(?:patchflow: )?(.+?) \]$",
                              gitrepo.commit_message(wt, "HEAD"), re.M)
                note = m.group(1) if m else None
            if not note:
                raise UserError("say what you changed: --note 'TEXT' (it goes into the "
                                "backport's commit message)")
            r.outcome, r.detail = Outcome.RESOLVED, note
            self.notes[p.patch_id] = note
        r.note = note_for(r)
        self._commit(p, r)
        self.phase = "new"
        self.save()
        return self.run()

    def abort(self) -> None:
        gitrepo.am_abort(self.worktree)
        gitrepo.reset_hard(self.worktree, self.base)
        self.phase = "aborted"
        self.save()


def start(*, series: str, revision: int, target: str, repo: Path, worktree: Path, base: str,
          base_ref: str, patches: Sequence[PatchInput], notes: dict[str, str] | None = None,
          previous: dict[str, Any] | None = None, known: Known | None = None) -> Session:
    """Create a fresh worktree at *base* and apply *patches* (see :meth:`Session.run`)."""
    if gitrepo.is_worktree(worktree):
        try:
            old = Session.load(worktree)
        except NotFound:
            old = None
        if old is not None and old.phase in ("conflict", "review", "applying"):
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
                known=dict(known.patch_ids) if known else {})
    s.head = base
    s.save()
    return s.run()


# --------------------------------------------------------------------------- the stored queue


def queue_dir(config_root: Path, series: str, target: str) -> Path:
    return config_root / "series" / series / "backports" / target


def backport_ref(series: str, revision: int, target: str) -> str:
    """The branch holding the finished backport in the shared kernel repository."""
    return f"refs/heads/patchflow/{target}/{series}/v{revision}"


def read_manifest(config_root: Path, series: str, target: str) -> dict[str, Any] | None:
    path = queue_dir(config_root, series, target) / "manifest.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def store(s: Session, config_root: Path) -> Path:
    """Write the finished backport as a patch queue and point its branch at it."""
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
        applied = [r for r in s.results if r.outcome is not Outcome.PRESENT]
        manifest = {
            "series": s.series, "revision": s.revision, "target": s.target,
            "base_ref": s.base_ref, "base": s.base, "head": head,
            "ref": backport_ref(s.series, s.revision, s.target),
            "stored": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "patches": [
                {**r.to_json(), "file": files[applied.index(r)].name if r in applied else None,
                 "source_msgid": s.patches[r.idx - 1].msgid} for r in s.results],
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


def stored_patches(config_root: Path, series: str, target: str) -> list[Path]:
    d = queue_dir(config_root, series, target)
    names = (d / "series").read_text().split() if (d / "series").exists() else []
    return [d / n for n in names]


@dataclass(frozen=True)
class Stale:
    """Why a stored queue no longer applies to the moved branch."""

    patch: str
    files: list[str]
    moved: list[str]  # hunk headers of old-base..new-head in those files

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
            stale.append(Stale(path.name, files, moved))
    return stale


def range_diff_report(repo: Path, previous: dict[str, Any], s: Session) -> dict[str, Any]:
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
    rd = gitrepo.range_diff(repo, previous["base"], previous["head"], s.base,
                            gitrepo.head(s.worktree)) if previous.get("head") else ""
    return {"range_diff": rd, "now_clean": now_clean, "new_conflicts": new_conflicts}


# --------------------------------------------------------------------------- workspace glue
# Everything below ties the core to a Workspace, the State DB and fetched
# series versions; the CLI calls only these.

TABLE = """
CREATE TABLE IF NOT EXISTS backports (
    series TEXT NOT NULL,
    revision INTEGER NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    base TEXT NOT NULL DEFAULT '',
    head TEXT NOT NULL DEFAULT '',
    worktree TEXT NOT NULL DEFAULT '',
    results TEXT NOT NULL DEFAULT '[]',
    updated REAL NOT NULL,
    PRIMARY KEY (series, revision, target)
)
"""


class Fetched(Protocol):
    """What the backport needs of :class:`patchflow.series.FetchedVersion`."""

    @property
    def series(self) -> str: ...

    @property
    def revision(self) -> int: ...

    @property
    def mbox_path(self) -> Path: ...


def ensure_table(state: State) -> None:
    with state.tx() as db:
        db.execute(TABLE)


def save_row(state: State, series: str, revision: int, target: str, status: str,
             *, base: str = "", head: str = "", worktree: str = "",
             results: Sequence[PatchResult] = ()) -> None:
    with state.tx() as db:
        db.execute(TABLE)
        db.execute("INSERT OR REPLACE INTO backports VALUES (?,?,?,?,?,?,?,?,?)",
                   (series, revision, target, status, base, head, worktree,
                    json.dumps([r.to_json() for r in results]), time.time()))


def rows(state: State, series: str | None = None) -> list[dict[str, Any]]:
    ensure_table(state)
    q = "SELECT * FROM backports" + (" WHERE series=?" if series else "") + \
        " ORDER BY series, revision, target"
    out = []
    for r in state.db.execute(q, (series,) if series else ()):
        d = dict(r)
        d["results"] = json.loads(d["results"])
        out.append(d)
    return out


def worktree_path(ws: Workspace, series: str, target: str) -> Path:
    return ws.worktrees_dir / "backport" / f"{series}--{target}"


def _patch_dir(ws: Workspace, series: str, revision: int, target: str) -> Path:
    # outlives the command: a stopped session's journal points at these files
    return ws.worktrees_dir / "backport" / f".{series}-v{revision}--{target}.patches"


def _summary(s: Session) -> tuple[Status, str]:
    counts: dict[str, int] = {}
    for r in s.results:
        counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
    tally = ", ".join(f"{n} {k}" for k, n in counts.items())
    if s.phase == "conflict":
        r = s.results[-1]
        spots = ", ".join(str(x) for x in _unique_spots(r.spots)) or ", ".join(r.files)
        return Status.FAIL, f"conflict in patch {r.idx} ({r.subject}): {spots}"
    if s.phase == "review":
        r = s.results[-1]
        return Status.FAIL, f"patch {r.idx} ({r.subject}) {r.detail}: review it, then --continue"
    if any(r.outcome not in ACCEPTED for r in s.results):
        return Status.WARN, f"applied with changes: {tally}"
    return Status.PASS, f"applied: {tally}"


def _finish(ws: Workspace, state: State, s: Session, sw: Stopwatch,
            extra: dict[str, Any] | None = None) -> StageResult:
    details: dict[str, Any] = {"worktree": str(s.worktree), "base": s.base,
                               "base_ref": s.base_ref, "phase": s.phase,
                               "patches": [r.to_json() for r in s.results],
                               "recovered": s.recovered, **(extra or {})}
    status, summary = _summary(s)
    if s.phase == "done":
        details["queue"] = str(store(s, ws.config_root))
        details["ref"] = backport_ref(s.series, s.revision, s.target)
        details["head"] = gitrepo.head(s.worktree)
        if s.previous:
            details["rebase"] = range_diff_report(s.repo, s.previous, s)
    save_row(state, s.series, s.revision, s.target, s.phase, base=s.base,
             head=details.get("head", ""), worktree=str(s.worktree), results=s.results)
    result = StageResult("backport", status, summary, sw.elapsed, s.target, details)
    state.record(result, series=s.series, revision=s.revision)
    return result


def _notes(manifest: dict[str, Any] | None) -> dict[str, str]:
    if not manifest:
        return {}
    return {p["patch_id"]: p["detail"] for p in manifest.get("patches", [])
            if p.get("outcome") == Outcome.RESOLVED.value and p.get("detail")}


def backport_version(ws: Workspace, state: State, fetched: Fetched, target: str, *,
                     rebase: bool = False, progress: Callable[[str], None] | None = None
                     ) -> StageResult:
    """Backport one fetched version onto one target (or rebase its stored backport)."""
    from patchflow.trees.repo import open_tree, prepare_tree

    say = progress or (lambda _m: None)
    with measure() as sw:
        try:
            tree = open_tree(ws, target)
        except NotFound:
            tree = prepare_tree(ws, target, progress=say)
        manifest = read_manifest(ws.config_root, fetched.series, target)
        if rebase and manifest is None:
            raise NotFound(f"no stored backport of {fetched.series} onto {target} to rebase; "
                           f"run `patchflow backport {fetched.series} --target {target}` first")
        wt = worktree_path(ws, fetched.series, target)
        pdir = _patch_dir(ws, fetched.series, fetched.revision, target)
        series_patches = load_patches(tree.repo, fetched.mbox_path, pdir)
        if not series_patches:
            raise UserError(f"{fetched.mbox_path} holds no patches")

        def go(patches: Sequence[PatchInput], **kw: Any) -> Session:
            return start(series=fetched.series, revision=fetched.revision, target=target,
                         repo=tree.repo, worktree=wt, base=tree.head, base_ref=tree.ref,
                         patches=patches, **kw)

        if manifest is not None and manifest.get("revision") == fetched.revision:
            stored = stored_patches(ws.config_root, fetched.series, target)
            stale = check_stored(tree.repo, manifest, stored, tree.head)
            if not stale:
                say(f"{target}: applying the stored backport queue")
                s = go(load_patches(tree.repo, _concat(stored, pdir), pdir / "stored"))
                s.previous = manifest if rebase or manifest["base"] != tree.head else {}
                return _finish(ws, state, s, sw, {"source": "stored queue"})
            if not rebase:
                details = {"stale": [x.to_json() for x in stale], "old_base": manifest["base"],
                           "new_base": tree.head, "queue": str(queue_dir(
                               ws.config_root, fetched.series, target))}
                save_row(state, fetched.series, fetched.revision, target, "stale",
                         base=manifest["base"], head=manifest["head"])
                result = StageResult(
                    "backport", Status.FAIL,
                    f"stored backport is stale on {tree.release or tree.head[:12]}: "
                    + "; ".join(f"{x.patch} ({', '.join(x.moved[:4]) or ', '.join(x.files)})"
                                for x in stale)
                    + f" - run `patchflow rebase {fetched.series} --target {target}`",
                    sw.elapsed, target, details)
                state.record(result, series=fetched.series, revision=fetched.revision)
                return result
        say(f"{target}: applying {len(series_patches)} patches of {fetched.series} "
            f"v{fetched.revision} onto {tree.release or tree.head[:12]}")
        no_3way = preimages_for(ws, fetched.series, tree.repo, series_patches, say)
        s = go(series_patches, notes=_notes(manifest),
               previous=manifest if rebase and manifest else {},
               known=known_in(tree.repo, tree.head, limit=300))
        return _finish(ws, state, s, sw, {"threeway_unavailable": no_3way} if no_3way else None)


def preimages_for(ws: Workspace, series: str, repo: Path, patches: Sequence[PatchInput],
                  say: Callable[[str], None]) -> list[str]:
    """Import the series' base when a target provides it, then write the pre-images.

    Returns why a 3-way merge is impossible for some files (empty when it is
    possible for all), the same answer on a fresh cache as on a warm one.
    """
    from patchflow.trees.repo import ensure_release

    try:
        base = ws.config.series(series).upstream_base
    except NotFound:
        base = ""
    if base and ensure_release(ws, base, say) is None:
        say(f"the series' base {base} is not provided by any target: 3-way merges can use "
            "only blobs the repository already has")
    return sorted(ensure_preimages(repo, patches).values())


def _concat(paths: Sequence[Path], workdir: Path) -> Path:
    """One mbox from stored format-patch files (each starts with a From line)."""
    workdir.mkdir(parents=True, exist_ok=True)
    mbox = workdir / "stored.mbox"
    atomic_write(mbox, b"".join(p.read_bytes() for p in paths))
    return mbox


def _session_for(ws: Workspace, state: State, series: str, target: str | None) -> Session:
    if target is None:
        live = [r for r in rows(state, series) if r["status"] in ("conflict", "review",
                                                                  "applying")]
        if len(live) != 1:
            names = ", ".join(sorted({r["target"] for r in live})) or "none"
            raise UserError(f"say which target with --target (backports in progress: {names})")
        target = str(live[0]["target"])
    return Session.load(worktree_path(ws, series, target))


def continue_backport(ws: Workspace, state: State, series: str, target: str | None,
                      note: str | None) -> StageResult:
    with measure() as sw:
        s = _session_for(ws, state, series, target)
        s = s.continue_(note)
        return _finish(ws, state, s, sw)


def abort_backport(ws: Workspace, state: State, series: str, target: str | None) -> StageResult:
    with measure() as sw:
        s = _session_for(ws, state, series, target)
        s.abort()
        gitrepo.worktree_remove(s.repo, s.worktree)
        save_row(state, s.series, s.revision, s.target, "aborted", base=s.base)
        result = StageResult("backport", Status.SKIP, "backport aborted", sw.elapsed, s.target)
        state.record(result, series=s.series, revision=s.revision)
        return result


def check_version(ws: Workspace, fetched: Fetched, targets: Sequence[str]
                  ) -> dict[str, list[PatchResult]]:
    """``backport --check``: per target, whether each patch applies (no worktree)."""
    from patchflow.trees.repo import open_tree

    out: dict[str, list[PatchResult]] = {}
    with tempfile.TemporaryDirectory(prefix="patchflow-check-") as tmp:
        for target in targets:
            tree = open_tree(ws, target)
            patches = load_patches(tree.repo, fetched.mbox_path, Path(tmp) / target)
            preimages_for(ws, fetched.series, tree.repo, patches, lambda _m: None)
            out[target] = check_series(tree.repo, tree.head, patches,
                                       known_in(tree.repo, tree.head, limit=300))
    return out


def status_matrix(state: State, series: str | None = None) -> list[dict[str, Any]]:
    """One row per (series, revision, target): last state and when."""
    table = {(r["series"], r["revision"], r["target"]): r for r in rows(state, series)}
    names = [series] if series else sorted({k[0] for k in table} | set(state.series_names()))
    out = []
    for name in names:
        revs = sorted({v.revision for v in state.versions(name)} |
                      {k[1] for k in table if k[0] == name})
        targets = sorted({k[2] for k in table if k[0] == name})
        for rev in revs:
            for t in targets:
                r = table.get((name, rev, t))
                out.append({"series": name, "revision": rev, "target": t,
                            "state": r["status"] if r else "-",
                            "updated": time.strftime("%Y-%m-%d %H:%M", time.localtime(
                                r["updated"])) if r else "",
                            "head": r["head"] if r else ""})
    return out


def gate_backport(ws: Workspace, state: State, cfg: SeriesConfig, revision: int | None,
                  target: TargetConfig | None, *, log: Path, **_extra: Any) -> StageResult:
    """Gate stage: backport the fetched version onto *target* (the stored queue if any).

    A conflict or a patch that needs review is a FAIL (the worktree is left for
    the maintainer); bad input or broken infrastructure is an ERROR.
    """
    from patchflow.lore.series import load_version

    if target is None:
        raise UserError("the backport stage needs a target")

    def say(msg: str) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(msg.rstrip() + "\n")

    try:
        fetched = load_version(ws, state, cfg.name, revision)
        res = backport_version(ws, state, fetched, target.name, progress=say)
    except PatchflowError as exc:
        say(f"error: {exc}")
        return StageResult("backport", Status.ERROR, str(exc), target=target.name, log=str(log))
    say(f"{res.status.value}: {res.summary}")
    for p in res.details.get("patches", []):
        say(f"  {p.get('idx')}: {p.get('outcome')} {p.get('subject')} {p.get('detail', '')}")
    conflicts = [{"patch": p.get("idx"), "file": ", ".join(p.get("files", [])),
                  "text": "; ".join(str(ConflictSpot(**s)) for s in p.get("spots", []))
                  or p.get("detail", "")}
                 for p in res.details.get("patches", []) if p.get("outcome") == "conflict"]
    details = {**res.details, "conflicts": conflicts, "method": "git am -3 with classification"}
    return StageResult(res.stage, res.status, res.summary, res.duration, res.target, details,
                       str(log))
