"""The range-diff between two versions of a series, by git's own ``git range-diff``.

Each version is applied onto its base in a throwaway bare repository under
the workspace's ``tmp/`` (removed afterwards): the cover letter's
``base-commit`` when the shared kernel repository has it, else a fake
ancestor made the way ``git am --3way`` and ``b4 shazam -H`` make one, from
the blobs on the patches' ``index`` lines, with the pre-images the
repository lacks rebuilt from the patches' context
(:mod:`patchflow.lore.preimage`).  Then ``git range-diff`` runs there, and
its ``=``/``!``/``<``/``>`` lines are parsed into :class:`RangeDiffEntry`
items; pairing is git's, never ours.  Every git call goes through
:mod:`patchflow.gitrepo`.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchflow import gitrepo
from patchflow.errors import SeriesError
from patchflow.lore.preimage import Unreconstructable, reconstruct
from patchflow.state import PatchRow
from patchflow.workspace import Workspace

#: "1:  0f4b2c1 = 1:  7a9d3e2 mm: refactor reclaim_3"
#: "3:  1a2b3c4 < -:  ------- mm: gone"   "-:  ------- > 4:  5d6e7f8 mm: new"
HEADER_RE = re.compile(r"^\s*(?P<old>\d+|-):\s+(?P<oc>[0-9a-f]+|-+) (?P<mark>[=!<>]) "
                       r"\s*(?P<new>\d+|-):\s+(?P<nc>[0-9a-f]+|-+) (?P<subject>.*)$")
#: who commits in the throwaway repository (the author is each patch's own)
SCRATCH = gitrepo.Identity("patchflow", "patchflow@localhost", "@0 +0000")


@dataclass(frozen=True)
class RangeDiffEntry:
    old: int | None
    new: int | None
    mark: str  # "=" same, "!" changed, "<" dropped, ">" added
    subject: str  # as git range-diff prints it (the old one for a pair)
    interdiff: str = ""
    old_subject: str | None = None
    new_subject: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"old": self.old, "new": self.new, "mark": self.mark, "subject": self.subject,
                "old_subject": self.old_subject, "new_subject": self.new_subject,
                "interdiff": self.interdiff}


@dataclass(frozen=True)
class Base:
    """What one version was applied onto in the throwaway repository."""

    revision: int
    #: "base-commit" (the cover letter's, from the shared repository), "index-blobs" (every
    #: pre-image blob was there), "reconstructed" (none was) or "mixed"
    kind: str
    commit: str
    head: str
    reconstructed: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "kind": self.kind, "commit": self.commit,
                "head": self.head, "reconstructed": list(self.reconstructed)}


@dataclass(frozen=True)
class RangeDiff:
    old: Base
    new: Base
    entries: tuple[RangeDiffEntry, ...]
    git_output: str


@dataclass(frozen=True)
class Mail:
    idx: int
    where: str
    message: str
    diff: str
    author: gitrepo.Identity


def parse_range_diff(text: str) -> list[RangeDiffEntry]:
    """Entries of ``git range-diff --no-color`` output, in git's order, with their
    indented dual diffs (dedented by git's four spaces)."""
    entries: list[RangeDiffEntry] = []
    head: re.Match[str] | None = None
    body: list[str] = []

    def flush() -> None:
        if head is not None:
            num = {k: (None if head.group(k) == "-" else int(head.group(k))) for k in ("old", "new")}
            entries.append(RangeDiffEntry(num["old"], num["new"], head.group("mark"),
                                          head.group("subject").strip(),
                                          "\n".join(body).strip("\n")))

    for line in text.splitlines():
        m = HEADER_RE.match(line)
        if m:
            flush()
            head, body = m, []
        elif head is not None:
            body.append(line[4:] if line.startswith("    ") else line)
    flush()
    return entries


def _mails(repo: Path, texts: Sequence[tuple[PatchRow, str]], workdir: Path,
           revision: int) -> list[Mail]:
    """Each patch as ``git am`` reads it (``git mailinfo``): message, diff, author."""
    mails = []
    for row, text in texts:
        d = workdir / f"v{revision}-{row.idx:04d}"
        d.mkdir(parents=True)
        (d / "mail").write_text(text, encoding="utf-8", errors="surrogateescape")
        body, diff, headers = gitrepo.mailinfo(repo, d / "mail", d)
        who = gitrepo.Identity(headers.get("Author", "") or "unknown",
                               headers.get("Email", "") or "unknown@unknown",
                               headers.get("Date", "") or "@0 +0000")
        message = headers.get("Subject", row.subject) + ("\n\n" + body if body.strip() else "\n")
        mails.append(Mail(row.idx, f"v{revision} patch {row.idx}/{row.total}", message, diff,
                          who))
    return mails


def _fake_base(repo: Path, mails: Sequence[Mail], index: Path) -> tuple[str, tuple[str, ...]]:
    """A base tree holding every pre-image the patches need; (kind, rebuilt paths).

    A real blob (from an ``index`` line) wins; a rebuilt one stands in for a
    missing blob; where neither exists the reason it cannot be rebuilt is the
    error (a binary patch whose blob is here needs no rebuilding).
    """
    from patchflow.backport.check import preimages

    blobs: dict[str, str] = {}
    for m in mails:
        for path, abbrev in preimages(m.diff).items():
            blobs.setdefault(path, abbrev)
    failure: Unreconstructable | None = None
    try:
        pre = reconstruct([(m.where, m.diff) for m in mails])
        paths = sorted(pre.length)
    except Unreconstructable as exc:
        failure, paths = exc, sorted(p for p, a in blobs.items() if a.strip("0"))
    env = {"GIT_INDEX_FILE": str(index)}
    rebuilt = []
    for path in paths:
        real = gitrepo.blob_sha(repo, blobs[path]) if path in blobs else None
        if real is None:
            if failure is not None:
                raise failure
            real = gitrepo.write_blob(repo, pre.text(path))
            rebuilt.append(path)
        gitrepo.index_add(repo, env, path, real)
    kind = "reconstructed" if rebuilt and len(rebuilt) == len(paths) else \
        "mixed" if rebuilt else "index-blobs"
    return kind, tuple(rebuilt)


def _apply_all(repo: Path, mails: Sequence[Mail], index: Path, base: str, workdir: Path) -> str:
    head = base
    for m in mails:
        patch = workdir / f"{m.where.replace(' ', '-').replace('/', 'of')}.patch"
        patch.write_text(m.diff, encoding="utf-8", errors="surrogateescape")
        done = gitrepo.apply_cached(repo, patch, index)
        if not done.ok:
            first = (done.stderr.strip().splitlines() or ["git apply refused it"])[-1]
            raise Unreconstructable(f"{m.where} does not apply to the base built for it: "
                                    f"{first.removeprefix('error: ')}")
        head = gitrepo.commit_tree(repo, gitrepo.write_tree(repo, index), head, m.message,
                                   m.author, SCRATCH)
    return head


def apply_version(repo: Path, texts: Sequence[tuple[PatchRow, str]], revision: int,
                  base_commit: str, workdir: Path) -> Base:
    """Commit one version onto its base in *repo* (the real base-commit when the
    repository has it and the series applies there, else a fake ancestor)."""
    mails = _mails(repo, texts, workdir, revision)
    index = workdir / f"index-v{revision}"
    real = gitrepo.rev_parse(repo, base_commit) if base_commit else None
    if real is not None:
        gitrepo.read_tree(repo, real, index)
        try:
            return Base(revision, "base-commit", real, _apply_all(repo, mails, index, real,
                                                                   workdir))
        except Unreconstructable:
            index.unlink(missing_ok=True)  # the series does not apply there: fake one
    kind, rebuilt = _fake_base(repo, mails, index)
    tree = gitrepo.write_tree(repo, index)
    base = gitrepo.commit_tree(repo, tree, None, f"fake base of v{revision}\n", SCRATCH, SCRATCH)
    return Base(revision, kind, base, _apply_all(repo, mails, index, base, workdir), rebuilt)


def range_diff(ws: Workspace, old: tuple[int, str, Sequence[tuple[PatchRow, str]]],
               new: tuple[int, str, Sequence[tuple[PatchRow, str]]],
               objects_from: Path | None = None) -> RangeDiff:
    """``git range-diff`` of two versions, each ``(revision, base_commit, patches)``.

    *objects_from* is a repository whose objects the throwaway one may read
    (the shared kernel repository: base commits and real pre-image blobs).
    """
    tmp_root = ws.root / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="range-diff-", dir=tmp_root) as tmpd:
        repo, work = Path(tmpd) / "repo.git", Path(tmpd) / "work"
        work.mkdir()
        gitrepo.init_scratch(repo, objects_from)
        a = apply_version(repo, old[2], old[0], old[1], work)
        b = apply_version(repo, new[2], new[0], new[1], work)
        text = gitrepo.range_diff(repo, a.commit, a.head, b.commit, b.head)
    olds = {row.idx: row.subject for row, _t in old[2]}
    news = {row.idx: row.subject for row, _t in new[2]}
    entries = [dataclasses.replace(e, old_subject=olds.get(e.old) if e.old else None,
                                   new_subject=news.get(e.new) if e.new else None)
               for e in parse_range_diff(text)]
    if len(entries) < max(len(old[2]), len(new[2])):
        raise SeriesError(f"git range-diff reported {len(entries)} entries for "
                          f"{len(old[2])} and {len(new[2])} patches")
    return RangeDiff(a, b, tuple(entries), text)


def format_text(entries: Sequence[RangeDiffEntry], a: int, b: int) -> str:
    """The ``=``/``!``/``<``/``>`` lines (git's pairing), with git's dual diffs indented."""
    out = []
    for e in entries:
        o = f"{e.old}" if e.old is not None else "-"
        n = f"{e.new}" if e.new is not None else "-"
        out.append(f"{o:>3}: v{a} {e.mark} {n:>3}: v{b}  {e.subject}")
        if e.interdiff:
            out.extend("    " + ln for ln in e.interdiff.splitlines())
    return "\n".join(out)
