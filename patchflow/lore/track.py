"""Tracking: turning what b4 fetched into a validated ``series/<name>.toml``.

:func:`track` fetches any thread by message-id or lore URL, follows the
``Link to vN:`` lines b4 writes into cover letters to the earlier versions,
asks b4 for newer ones, and writes every version and posting it found into
``series/<name>.toml`` through :func:`patchflow.config.write_series` (the one
validator, atomic).  :func:`add_postings` is how ``series fetch NAME
--check-newer`` adds what it found to that file.  After that every command
(backport, gate, status, ci generate) finds the series by its name.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchflow.config import (
    SERIES_WRITTEN_BY,
    SeriesConfig,
    SeriesVersion,
    check_msgid,
    load_series,
    render_series,
    user_name,
    write_series,
)
from patchflow.errors import NotFound, UserError
from patchflow.lore.series import (
    FetchReport,
    PostingRef,
    current_postings,
    fetch,
    fetch_posting,
    parse_subject,
    slug,
    stored_recipients,
)
from patchflow.result import Progress
from patchflow.state import State, VersionRow
from patchflow.workspace import Workspace

#: "- Link to v1: https://lore.kernel.org/r/20260326-foo-v1-0-abc@example.com" (b4 prep)
LINK_RE = re.compile(r"^[\s>*-]*Link to v(?P<rev>\d+):\s*(?P<url>\S+)\s*$", re.M | re.I)
#: how many earlier versions :func:`track` follows at most (a loop of links ends here)
MAX_LINKS = 32


@dataclass
class TrackReport:
    series: str
    path: Path
    created: bool
    versions: tuple[tuple[int, tuple[str, ...]], ...] = ()
    added: list[PostingRef] = field(default_factory=list)
    fetched: list[FetchReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        from patchflow import typed

        return {"series": self.series, "path": str(self.path), "created": self.created,
                "versions": [{"revision": r, "msgids": list(m)} for r, m in self.versions],
                "added": typed.dump(self.added),
                "stored": [typed.dump(ref) for f in self.fetched for ref in f.stored],
                "notes": self.notes}


def series_path(ws: Workspace, name: str) -> Path:
    return ws.config.series_dir / f"{user_name(name, 'series')}.toml"


def _msgid(value: str) -> str:
    try:
        return check_msgid(value)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def linked_versions(cover: str) -> list[tuple[int, str]]:
    """(revision, message-id) of every ``Link to vN:`` line of a cover letter that is valid."""
    out = []
    for m in LINK_RE.finditer(cover):
        try:
            out.append((int(m.group("rev")), check_msgid(m.group("url"))))
        except ValueError:
            continue  # a link that is no lore message: not ours to follow
    return out


def postings_of(rows: Sequence[VersionRow]) -> dict[int, list[str]]:
    """revision -> message-ids, oldest posting first (the newest is the one used)."""
    out: dict[int, list[str]] = {}
    for r in sorted(rows, key=lambda r: (r.revision, r.posted, r.fetched)):
        if r.msgid not in out.setdefault(r.revision, []):
            out[r.revision].append(r.msgid)
    return out


def merged(cfg: SeriesConfig, found: Mapping[int, Sequence[str]]) -> SeriesConfig:
    """*cfg* with every posting of *found* it lacks added to its versions."""
    have = {v.revision: list(v.msgids) for v in cfg.versions}
    for rev, ids in found.items():
        lst = have.setdefault(rev, [])
        lst.extend(m for m in ids if m not in lst)
    versions = tuple(SeriesVersion(r, tuple(m)) for r, m in sorted(have.items()))
    return dataclasses.replace(cfg, versions=versions)


def new_postings(cfg: SeriesConfig, found: Mapping[int, Sequence[str]]) -> list[PostingRef]:
    known = {m for v in cfg.versions for m in v.msgids}
    return [PostingRef(r, m) for r, ids in sorted(found.items()) for m in ids if m not in known]


def _appended(text: str, cfg: SeriesConfig, added: Sequence[PostingRef]) -> str | None:
    """A hand-written file with lines for new revisions appended, keeping its comments;
    None when that is not possible (a new posting of a listed revision, or ``[versions]``
    is not the file's last table)."""
    tables = re.findall(r"^\s*\[([^\]]+)\]\s*$", text, re.M)
    listed = {v.revision for v in cfg.versions}
    if not tables or tables[-1].strip() != "versions" or any(a.revision in listed for a in added):
        return None
    by_rev: dict[int, list[str]] = {}
    for a in added:
        by_rev.setdefault(a.revision, []).append(a.msgid)
    lines = [f"v{r} = [{', '.join(repr_toml(m) for m in ids)}]  # added by patchflow"
             for r, ids in sorted(by_rev.items())]
    return text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


def repr_toml(value: str) -> str:
    import json

    return json.dumps(value)


def add_postings(path: Path, found: Mapping[int, Sequence[str]]) -> tuple[list[PostingRef], str]:
    """Add the postings of *found* that ``series/<name>.toml`` lacks; (added, note).

    A file ``series track`` wrote is rewritten whole; a hand-written one keeps
    its comments and gets lines appended, or is rewritten with a note saying
    its comments were not kept (tests/integration/test_series_track.py).
    """
    cfg = load_series(path)
    added = new_postings(cfg, found)
    if not added:
        return [], ""
    text = path.read_text(encoding="utf-8")
    note = ""
    new_text = None if text.startswith(SERIES_WRITTEN_BY) else _appended(text, cfg, added)
    if new_text is None:
        if not text.startswith(SERIES_WRITTEN_BY):
            note = f"rewrote {path}: the comments it had were not kept"
        new_text = render_series(merged(cfg, found))
    write_series(path, new_text)
    return added, note


def _prefetch_name(ws: Workspace, msgid: str, name: str | None, mirror: str | None,
                   timeout: float | None) -> str:
    """The series name: --name, the name of a series file listing *msgid*, else the subject's slug."""
    for known in ws.config.all_series():
        if any(msgid in v.msgids for v in known.versions):
            if name is not None and name != known.name:
                raise UserError(f"{msgid} is already tracked as {known.name!r} "
                                f"({known.path}), not {name!r}")
            return known.name
    if name is not None:
        return user_name(name, "series")
    posting, _log = fetch_posting(ws, msgid, mirror=mirror, timeout=timeout)
    return slug(posting.subject)


def _check_collision(path: Path, msgid: str) -> None:
    if path.exists() and not any(msgid in v.msgids for v in load_series(path).versions):
        raise UserError(f"{path} exists and does not list {msgid}: choose another --name "
                        f"(or add newer versions with: patchflow series fetch {path.stem} "
                        f"--check-newer)")


def _follow_links(ws: Workspace, state: State, name: str, report: TrackReport,
                  mirror: str | None, timeout: float | None, say: Progress) -> None:
    """Fetch the earlier versions the stored cover letters link to (b4 prep's
    ``Link to vN:`` lines), until no new one turns up."""
    tried: set[str] = set()
    for _ in range(MAX_LINKS):
        have = {r.msgid for r in state.versions(name)}
        todo = [(rev, mid) for r in state.versions(name) for rev, mid in linked_versions(r.cover)
                if mid not in have and mid not in tried]
        if not todo:
            return
        rev, mid = todo[0]
        tried.add(mid)
        say(f"following the cover letter's link to v{rev}: {mid}")
        try:
            report.fetched.append(fetch(ws, state, mid, name=name, mirror=mirror,
                                        timeout=timeout, progress=say))
        except NotFound:
            report.notes.append(f"the cover letter links v{rev} as {mid}, which the mirror "
                                "does not have")


def track(ws: Workspace, state: State, what: str, *, name: str | None = None,
          targets: Sequence[str] = (), mirror: str | None = None, timeout: float | None = None,
          progress: Progress | None = None) -> TrackReport:
    """Fetch *what* (message-id or lore URL) and every version found; write series/<name>.toml."""
    say = progress or (lambda _m: None)
    msgid = _msgid(what)
    for t in targets:
        ws.config.target(t)  # an unknown or invalid target: exit 2 before anything is fetched
    name = _prefetch_name(ws, msgid, name, mirror, timeout)
    path = series_path(ws, name)
    _check_collision(path, msgid)
    report = TrackReport(series=name, path=path, created=not path.exists())
    report.fetched.append(fetch(ws, state, msgid, name=name, check_newer=True, mirror=mirror,
                                timeout=timeout, progress=say))
    _follow_links(ws, state, name, report, mirror, timeout, say)
    rows = state.versions(name)
    found = postings_of(rows)
    if path.exists():
        report.added, note = add_postings(path, found)
        report.notes += [note] if note else []
        if targets:
            report.notes.append(f"{path} exists: its targets were left as they are")
        cfg = load_series(path)
    else:
        cfg = write_series(path, render_series(_new_config(path, rows, found, targets)))
        report.added = new_postings(dataclasses.replace(cfg, versions=()), found)
    report.versions = tuple((v.revision, v.msgids) for v in cfg.versions)
    report.notes += [n for f in report.fetched for n in f.notes]
    return report


def _new_config(path: Path, rows: Sequence[VersionRow], found: Mapping[int, Sequence[str]],
                targets: Sequence[str]) -> SeriesConfig:
    newest = current_postings(rows)[max(found)][0]
    versions = tuple(SeriesVersion(r, tuple(m)) for r, m in sorted(found.items()))
    return SeriesConfig(name=path.stem, title=parse_subject(newest.subject)[3],
                        versions=versions, upstream_base=newest.base_commit,
                        targets=tuple(targets), path=path, author=newest.author,
                        list_address=stored_recipients(Path(newest.mbox_path)).list_address)
