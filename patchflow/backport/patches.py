"""Patches of a series as the backport sees them: parsed mails, hunks, where they land.

Owns :class:`PatchInput` (one mail ``git am`` can take), the hunk parser, the
outcome of applying one patch (:class:`Outcome`, :class:`PatchResult`), the
conflict location in the *target's* file (:func:`locate_hunk`,
:class:`ConflictSpot`), and the stable-style commit message of a backport.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from patchflow import gitrepo

#: where a ``Link:`` trailer points (``lore.link`` in the workspace config overrides it)
LORE_LINK = "https://lore.kernel.org/r/%s"


class Outcome(enum.Enum):
    CLEAN = "clean"
    OFFSET = "offset"
    THREEWAY = "3way"
    PRESENT = "already-present"
    FUZZ = "fuzz"  # needs reduced context: stops for review, never silent
    CONFLICT = "conflict"
    RESOLVED = "resolved"  # a conflict (or a build error) resolved by the maintainer or by rerere
    STALE = "stale"  # a stored backport patch no longer applies
    SKIPPED = "skipped"  # dropped by the maintainer as not applicable (``--skip --note``)


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
        return list(dict.fromkeys(h.path for h in hunks(self.diff)))


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
    #: "target"; "patch" only when the target has no such file, so the line is the patch's own
    side: str = "target"

    def __str__(self) -> str:
        fn = f":{self.function}()" if self.function else ""
        return f"{self.path}:{self.line}{fn}"

    def where(self) -> str:
        """How people see it, saying whose line it is: ``mm/mlock.c:408 (target) in f()``."""
        fn = f" in {self.function}()" if self.function else ""
        return f"{self.path}:{self.line} ({self.side}){fn}"


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
    #: ``--build-check``: "" (not checked), "ok", "failed" or "not-built" (no object in this config)
    build: str = ""
    #: the objects compiled for this patch, and the compiler's error lines (file:line: error: ...)
    built: list[str] = field(default_factory=list)
    build_errors: list[str] = field(default_factory=list)
    build_seconds: float = 0.0

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
# commit 3f1c2a...40 upstream.   /   [ Upstream commit 3f1c2a...40 ]   /   (cherry picked from commit 3f1c...)
UPSTREAM_RE = re.compile(r"(?:^commit ([0-9a-f]{40}) upstream\.?$|"
                         r"^\[ Upstream commit ([0-9a-f]{40}) \]$|"
                         r"^\(cherry picked from commit ([0-9a-f]{40})\)$)", re.M)


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
        upstream = next(g for g in m.groups() if g) if m else None
        out.append(PatchInput(len(out) + 1, mail, subject, msgid, gitrepo.patch_id(repo, diff),
                              message, diff, upstream))
    return out


def backport_message(p: PatchInput, note: str, link: str = LORE_LINK) -> str:
    """The commit message a stored backport patch carries (stable_kernel_rules style).

    With an upstream commit, ``commit <sha40> upstream.`` is the first body
    line (any other form of it in the body is dropped, a ``(cherry picked
    from ...)`` line stays); without one (a series not merged yet) a
    ``Link:`` to its posting goes after the original trailers, *link* being a
    ``%s`` mask for the message-id.  Then a ``[ patchflow: ... ]`` note on
    what changed (tests/unit/test_backport.py::test_backport_message_upstream_and_link).
    """
    subject, _, rest = p.message.partition("\n")
    body = rest.strip("\n")
    if p.upstream:
        kept = [ln for ln in body.split("\n") if not _restates(ln, p.upstream)]
        rest = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n")
        body = f"commit {p.upstream} upstream.\n\n{rest}"
    elif p.msgid:
        url = link_for(link, p.msgid)
        if f"Link: {url}" not in body:
            body = f"{body}\nLink: {url}"
    if note:
        body = f"{body}\n[ patchflow: {note} ]"
    return f"{subject}\n\n{body.strip()}\n"


def _restates(line: str, sha: str) -> bool:
    # the upstream line in one of the two stable forms (the cherry-pick line is kept)
    return line.strip() in (f"commit {sha} upstream.", f"commit {sha} upstream",
                            f"[ Upstream commit {sha} ]")


def link_for(mask: str, msgid: str) -> str:
    """The public URL of a posting: *mask* with ``%s`` replaced by the bare message-id."""
    return mask.replace("%s", msgid.strip().strip("<>"), 1)


def note_for(result: PatchResult) -> str:
    where = ", ".join(f"{s.path}:{s.function}()" if s.function else s.path
                      for s in unique_spots(result.spots)) or ", ".join(result.files)
    if result.outcome is Outcome.THREEWAY:
        return f"3-way merged, context differs in {where}"
    if result.outcome is Outcome.FUZZ:
        return f"applied with reduced context in {where}, reviewed"
    if result.outcome is Outcome.RESOLVED:
        return f"resolved conflict in {where}" + (f": {result.detail}" if result.detail else "")
    return ""


def unique_spots(spots: Sequence[ConflictSpot]) -> list[ConflictSpot]:
    seen: set[tuple[str, str]] = set()
    out = []
    for s in spots:
        if (s.path, s.function) not in seen:
            seen.add((s.path, s.function))
            out.append(s)
    return out
