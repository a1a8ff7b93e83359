"""Series: fetching a patch series from lore with b4 and tracking its versions.

Owns the b4 command lines (:func:`b4_am_argv`, :func:`b4_env`), the parsing
of b4's am-ready mbox and of what b4 reported (missing patches,
attestation, newer revisions), the validation of every patch (a diff that
parses, a patch-id), and the range-diff between two versions.  State goes
through :class:`patchflow.state.State`; the raw mbox is kept in the workspace.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import email.utils
import hashlib
import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchflow import gitrepo, runner
from patchflow.config import SeriesConfig, check_msgid, user_name
from patchflow.demo.mirror import split_mbox
from patchflow.errors import CommandTimeout, MirrorError, NotFound, SeriesError, UserError
from patchflow.result import Progress
from patchflow.state import PatchRow, State, VersionRow
from patchflow.workspace import Workspace, atomic_write

if TYPE_CHECKING:
    from patchflow.lore.rangediff import RangeDiff, RangeDiffEntry

# "[PATCH v2 3/5] mm: foo", "[RFC PATCH 1/2] x", "[PATCH RESEND v3 0/4] y"
SUBJECT_RE = re.compile(r"^\s*\[(?P<prefix>[^\]]*?)\]\s*(?P<title>.*)$", re.S)
COUNTER_RE = re.compile(r"\b(?P<n>\d+)/(?P<total>\d+)\b")
REVISION_RE = re.compile(r"\bv(?P<rev>\d+)\b", re.I)
# b4 am output, per patch with attestation-checkmarks=simple:
#   "  v [PATCH v2 1/3] mm: change 1"   /   "  x [PATCH v2 1/3] ..."   /   "  [PATCH v2 1/3] ..."
B4_PATCH_LINE_RE = re.compile(r"^\s{2}(?:(?P<mark>[vx]) )?\[(?P<prefix>[^\]]*)\]\s(?P<title>.*)$")
#   "    v Signed: DKIM/kernel.org"   "    x No key: ed25519/foo@bar"   "    x BADSIG: DKIM/x"
B4_ATT_LINE_RE = re.compile(r"^\s{2,4}(?P<mark>[vx]) (?P<kind>Signed|BADSIG|No key): (?P<who>.*)$")
#   "  ERROR: missing [2/3]!"
B4_MISSING_RE = re.compile(r"ERROR: missing \[(?P<n>\d+)/(?P<total>\d+)\]!")
TRAILER_RE = re.compile(r"^(?P<name>[A-Z][A-Za-z0-9-]*[a-z]): (?P<value>\S.*)$")
KNOWN_TRAILERS = {
    "signed-off-by", "reviewed-by", "acked-by", "tested-by", "reported-by", "suggested-by",
    "co-developed-by", "fixes", "cc", "link", "closes", "message-id", "stable-dep-of",
    "requested-by", "originally-by", "debugged-by",
}


@dataclass(frozen=True)
class Patch:
    idx: int
    total: int
    subject: str  # without the [PATCH ...] prefix
    author: str
    msgid: str
    patch_id: str
    trailers: tuple[str, ...]
    files: tuple[str, ...]
    attestation: str  # "pass", "fail" or "none"
    text: str  # the message as b4 made it am-ready

    def to_row(self) -> dict[str, Any]:
        return {"idx": self.idx, "total": self.total, "subject": self.subject,
                "author": self.author, "msgid": self.msgid, "patch_id": self.patch_id,
                "trailers": list(self.trailers), "attestation": self.attestation,
                "files": list(self.files)}


@dataclass(frozen=True)
class Posting:
    """One posting of one revision of a series, as b4 delivered it."""

    revision: int
    msgid: str  # the cover letter (or first patch without a cover)
    posted: str  # ISO 8601 UTC
    subject: str
    author: str
    cover: str
    base_commit: str
    change_id: str
    patches: tuple[Patch, ...]
    attestation: dict[str, Any]
    missing: tuple[int, ...] = ()
    mbox: bytes = b""
    #: the cover letter's recipients, from the raw thread (b4 am drops To and Cc)
    recipients: Recipients | None = None

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in self.patches:
            h.update(f"{p.idx}\0{p.msgid}\0{p.patch_id}\0{'|'.join(p.trailers)}\n".encode())
        h.update(self.cover.encode())
        return h.hexdigest()


@dataclass(frozen=True)
class Recipients:
    """Who the cover letter went to: what a reply-all keeps (see patchflow.report.mail)."""

    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    #: the recipient the archive's List-Id names ("<linux-mm.kvack.org>": linux-mm@kvack.org)
    list_address: str = ""

    @property
    def everyone(self) -> tuple[str, ...]:
        return self.to + self.cc


@dataclass(frozen=True)
class FetchedVersion:
    """A stored version, as later stages use it (see :func:`load_version`)."""

    series: str
    revision: int
    msgid: str
    mbox_path: Path
    patches: list[PatchRow]
    row: VersionRow
    other_postings: list[VersionRow] = field(default_factory=list)


@dataclass(frozen=True)
class PostingRef:
    """One posting of a series version: what was stored or found unchanged."""

    revision: int
    msgid: str
    subject: str = ""
    #: the am-ready mbox b4 made of it, in the workspace ("" when not stored)
    mbox: str = ""


@dataclass
class FetchReport:
    series: str
    stored: list[PostingRef] = field(default_factory=list)
    unchanged: list[PostingRef] = field(default_factory=list)
    newer: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        from patchflow import typed

        return {"series": self.series, "stored": typed.dump(self.stored),
                "unchanged": typed.dump(self.unchanged), "newer": self.newer,
                "notes": self.notes}


# --------------------------------------------------------------------------
# b4 command lines


def b4_am_argv(msgid: str, outdir: Path, name: str, *, revision: int | None = None,
               check_newer: bool = False) -> list[str]:
    """argv for one ``b4 am`` run; *msgid* is already validated by :func:`check_msgid`."""
    argv = ["b4", "am", "-C", "-o", str(outdir), "-n", name]
    if revision is not None:
        argv += ["-v", str(revision)]
    if check_newer:
        argv.append("-c")
    # "--" so that an id can never be taken for an option
    return [*argv, "--", msgid]


def b4_mbox_argv(msgid: str, outdir: Path, name: str) -> list[str]:
    """argv for ``b4 mbox``: the raw thread, every header kept (``b4 am`` drops To/Cc)."""
    return ["b4", "mbox", "-C", "-o", str(outdir), "-n", name, "--", msgid]


def recipients_of(thread: bytes, msgid: str) -> Recipients | None:
    """To, Cc and References of message *msgid* in a raw thread mbox; None if absent."""
    with tempfile.NamedTemporaryFile(suffix=".mbox") as tmp:
        tmp.write(thread)
        tmp.flush()
        raws = split_mbox(Path(tmp.name))
    for raw in raws:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        if _clean_msgid(msg.get("Message-Id")) != msgid:
            continue
        refs = tuple(m.strip("<>") for m in str(msg.get("References", "")).split() if "@" in m)
        to, cc = _addresses(msg, "To"), _addresses(msg, "Cc")
        list_id = str(msg.get("List-Id", "")).strip().rsplit("<", 1)[-1].rstrip(">").lower()
        lists = [a for _n, a in email.utils.getaddresses(to + cc)
                 if list_id and a.lower().replace("@", ".") == list_id]
        return Recipients(to, cc, refs, lists[0] if lists else "")
    return None


def _addresses(msg: Message, header: str) -> tuple[str, ...]:
    pairs = email.utils.getaddresses([str(v) for v in msg.get_all(header, [])])
    return tuple(email.utils.formataddr((n, a)) for n, a in pairs if "@" in a)


def b4_env(midmask: str | None, cache_dir: Path, policy: str = "softfail") -> dict[str, str]:
    """Environment handing b4 its settings without touching anybody's git config."""
    settings = {"b4.attestation-checkmarks": "simple", "b4.attestation-policy": policy}
    if midmask:
        if "%s" not in midmask:
            raise UserError(f"mirror midmask must contain %s: {midmask!r}")
        settings["b4.midmask"] = midmask
        # follow-up trailers and newer revisions are searched on the same mirror
        settings["b4.searchmask"] = midmask.replace("%s", "") .rstrip("/") + "/?x=m&q=%s"
    env = {"GIT_CONFIG_COUNT": str(len(settings)), "XDG_CACHE_HOME": str(cache_dir),
           "NO_COLOR": "1"}
    for i, (k, v) in enumerate(settings.items()):
        env[f"GIT_CONFIG_KEY_{i}"] = k
        env[f"GIT_CONFIG_VALUE_{i}"] = v
    return env


def classify_b4_failure(msgid: str, mirror: str, output: str) -> Exception:
    """Turn a failed b4 run into the error the user needs to see."""
    if re.search(r"Server returned an error: 404|404 Client Error", output):
        return NotFound(f"message-id {msgid!r} not found on the mirror ({mirror})")
    if re.search(r"All hosts failed|Connection refused|Max retries exceeded|timed out|"
                 r"Name or service not known|Temporary failure in name resolution", output):
        return MirrorError(f"lore mirror unreachable ({mirror}): {_last_line(output)}")
    if "No patches found" in output:
        return SeriesError(f"thread {msgid!r} is not a patch series (b4 found no patches)")
    return MirrorError(f"b4 failed for {msgid!r}: {_last_line(output)}")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


# --------------------------------------------------------------------------
# parsing what b4 produced


def parse_subject(subject: str) -> tuple[int, int, int, str]:
    """(revision, idx, total, title) of a "[PATCH v2 1/3] title" subject."""
    subject = " ".join(subject.split())
    m = SUBJECT_RE.match(subject)
    if not m:
        return 1, 1, 1, subject
    prefix, title = m.group("prefix"), m.group("title")
    rev = REVISION_RE.search(prefix)
    cnt = COUNTER_RE.search(prefix)
    return (int(rev.group("rev")) if rev else 1,
            int(cnt.group("n")) if cnt else 1,
            int(cnt.group("total")) if cnt else 1,
            title.strip())


def split_patch(body: str) -> tuple[str, str]:
    """(commit message, diff) of a patch mail body."""
    m = re.search(r"^---\s*$", body, re.M)
    diff_at = re.search(r"^diff --git ", body, re.M)
    if diff_at is None:
        return body, ""
    msg_end = m.start() if m and m.start() < diff_at.start() else diff_at.start()
    return body[:msg_end], body[diff_at.start():]


def parse_trailers(message: str) -> tuple[str, ...]:
    """Trailers of the last paragraph of a commit message."""
    paras = [p for p in re.split(r"\n\s*\n", message.strip()) if p.strip()]
    if not paras:
        return ()
    out = []
    for line in paras[-1].splitlines():
        m = TRAILER_RE.match(line.strip())
        if m and (m.group("name").lower() in KNOWN_TRAILERS or "-by" in m.group("name").lower()):
            out.append(f"{m.group('name')}: {m.group('value').strip()}")
    return tuple(out)


def diff_files(diff: str, where: str) -> tuple[str, ...]:
    """Validate *diff* with unidiff; the files it touches.  Names *where* on failure."""
    from unidiff.errors import UnidiffParseError
    from unidiff.patch import PatchSet

    if not diff.strip():
        raise SeriesError(f"{where}: contains no diff")
    try:
        ps = PatchSet(diff)
    except UnidiffParseError as exc:
        raise SeriesError(f"{where}: corrupt diff: {exc}") from None
    if not len(ps):
        raise SeriesError(f"{where}: corrupt diff: no file changes found")
    # unidiff skips what it cannot parse; git's own parser is the strict one
    res = gitrepo.numstat(diff)
    if res.returncode != 0:
        detail = (res.stderr.strip().splitlines() or ["git apply rejected it"])[0]
        raise SeriesError(f"{where}: corrupt diff: {detail.removeprefix('error: ')}")
    return tuple(pf.path for pf in ps)


def patch_id(diff: str, where: str) -> str:
    """``git patch-id --stable`` of a diff (no repository needed)."""
    out = gitrepo.patch_id_of(diff).split()
    if not out:
        raise SeriesError(f"{where}: corrupt diff: git patch-id found no diff")
    return out[0]


def _payload(msg: Message) -> str:
    if msg.is_multipart():
        for part in msg.walk():
            if part.get_content_type() == "text/plain":
                msg = part
                break
    raw = msg.get_payload(decode=True)
    if isinstance(raw, bytes):
        return raw.decode(msg.get_content_charset() or "utf-8", "replace")
    return str(msg.get_payload())


def _clean_msgid(value: str | None) -> str:
    return (value or "").strip().strip("<>").strip()


def _iso(date: str | None) -> str:
    if not date:
        return ""
    try:
        dt = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return ""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_b4_output(output: str) -> tuple[tuple[int, ...], dict[str, Any]]:
    """(missing patch numbers, attestation report) from b4 am's log."""
    missing = tuple(sorted({int(m.group("n")) for m in B4_MISSING_RE.finditer(output)}))
    per_patch: dict[str, str] = {}
    signers: list[dict[str, str]] = []
    for line in output.splitlines():
        pm = B4_PATCH_LINE_RE.match(line)
        if pm:
            _r, idx, _t, _title = parse_subject(f"[{pm.group('prefix')}] {pm.group('title')}")
            per_patch[str(idx)] = {"v": "pass", "x": "fail"}.get(pm.group("mark") or "", "none")
            continue
        am = B4_ATT_LINE_RE.match(line)
        if am:
            signers.append({"status": {"Signed": "pass", "BADSIG": "badsig",
                                       "No key": "nokey"}[am.group("kind")],
                            "identity": am.group("who").strip()})
    statuses = set(per_patch.values())
    if "fail" in statuses:
        overall = "fail"
    elif statuses == {"pass"}:
        overall = "pass"
    elif "pass" in statuses:
        overall = "partial"
    else:
        overall = "none"
    return missing, {"overall": overall, "per_patch": per_patch, "signers": signers}


def parse_am_mbox(mbx: bytes, cover: bytes | None, b4_output: str = "") -> Posting:
    """Build a :class:`Posting` from b4's ``.mbx`` (and ``.cover``); validates every patch."""
    with tempfile.NamedTemporaryFile(suffix=".mbx") as tmp:
        tmp.write(mbx)
        tmp.flush()
        raws = split_mbox(Path(tmp.name))
    if not raws:
        raise SeriesError("b4 produced an empty mailbox: the thread has no patches")
    missing, attestation = parse_b4_output(b4_output)
    patches: list[Patch] = []
    revision = 1
    total_expected = 0
    for raw in raws:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        rev, idx, total, title = parse_subject(str(msg.get("Subject", "")))
        revision = rev
        total_expected = max(total_expected, total)
        where = f"patch {idx}/{total} \"{title}\""
        body = _payload(msg)
        message, diff = split_patch(body)
        files = diff_files(diff, where)
        patches.append(Patch(
            idx=idx, total=total, subject=title, author=str(msg.get("From", "")),
            msgid=_clean_msgid(msg.get("Message-Id")), patch_id=patch_id(diff, where),
            trailers=parse_trailers(message), files=files,
            attestation=attestation["per_patch"].get(str(idx), "none"),
            text=raw.decode("utf-8", "replace")))
    seen = {p.idx for p in patches}
    if total_expected > 1:
        missing = tuple(sorted(set(missing) | (set(range(1, total_expected + 1)) - seen)))
    cover_text, subject, author, cmsgid, posted = "", "", "", "", ""
    if cover:
        cmsg = email.message_from_bytes(cover, policy=email.policy.compat32)
        cover_text = _payload(cmsg)
        subject = " ".join(str(cmsg.get("Subject", "")).split())
        author = str(cmsg.get("From", ""))
        cmsgid = _clean_msgid(cmsg.get("Message-Id"))
        posted = _iso(cmsg.get("Date"))
    first = email.message_from_bytes(raws[0], policy=email.policy.compat32)
    if not cmsgid:
        subject = " ".join(str(first.get("Subject", "")).split())
        author = str(first.get("From", ""))
        cmsgid = _clean_msgid(first.get("Message-Id"))
    posted = posted or _iso(first.get("Date"))
    base = re.search(r"^base-commit:\s*([0-9a-f]{7,40})\s*$", cover_text, re.M)
    change = re.search(r"^change-id:\s*(\S+)\s*$", cover_text, re.M)
    return Posting(
        revision=revision, msgid=cmsgid, posted=posted, subject=subject, author=author,
        cover=cover_text, base_commit=base.group(1) if base else "",
        change_id=change.group(1) if change else "", patches=tuple(patches),
        attestation=attestation, missing=missing, mbox=mbx)


# --------------------------------------------------------------------------
# fetching


def _mirror(ws: Workspace, override: str | None) -> str:
    """--mirror, else the workspace's lore.midmask ($PATCHFLOW_MIRROR overrides it)."""
    return override or ws.settings.lore.midmask or ""


def fetch_posting(ws: Workspace, msgid: str, *, revision: int | None = None,
                  check_newer: bool = False, mirror: str | None = None,
                  timeout: float | None = None) -> tuple[Posting, str]:
    """Run b4 for one message-id; returns the parsed posting and b4's log."""
    msgid = _checked(msgid)
    midmask = _mirror(ws, mirror)
    shown = midmask or "lore.kernel.org (b4 default)"
    with tempfile.TemporaryDirectory(prefix="b4-", dir=ws.root) as tmpd:
        out = Path(tmpd)
        argv = b4_am_argv(msgid, out, "series", revision=revision, check_newer=check_newer)
        try:
            res = runner.run(argv, cwd=out, env=b4_env(midmask, ws.cache_dir("b4")),
                             timeout=timeout or ws.settings.lore.timeout, check=False,
                             log=ws.root / "logs" / "b4.log")
        except CommandTimeout:
            raise MirrorError(f"lore mirror timed out after "
                              f"{timeout or ws.settings.lore.timeout}s ({shown})") from None
        output = res.stdout + res.stderr
        mbx = out / "series.mbx"
        if res.returncode != 0 or not mbx.exists():
            raise classify_b4_failure(msgid, shown, output)
        cover = out / "series.cover"
        posting = parse_am_mbox(mbx.read_bytes(), cover.read_bytes() if cover.exists() else None,
                                output)
        posting = dataclasses.replace(posting, recipients=_thread_recipients(
            ws, posting.msgid, out, midmask, timeout))
    return posting, output


def _thread_recipients(ws: Workspace, msgid: str, out: Path, midmask: str,
                       timeout: float | None) -> Recipients | None:
    """The cover letter's To/Cc from the raw thread; None when b4 mbox cannot get it
    (the mail draft then has the list only, and says nothing false).  A message never
    changes, so what an earlier fetch recorded for *msgid* is reused (one b4 run less:
    ~0.8 s a posting here)."""
    digest = hashlib.sha256(msgid.encode()).hexdigest()[:16]
    for side in sorted(ws.mbox_dir.glob(f"*/v*-{digest}.recipients.json")):
        known = _read_recipients(side)
        if known is not None:
            return known
    try:
        res = runner.run(b4_mbox_argv(msgid, out, "thread"), cwd=out,
                         env=b4_env(midmask, ws.cache_dir("b4")),
                         timeout=timeout or ws.settings.lore.timeout, check=False,
                         log=ws.root / "logs" / "b4.log")
    except CommandTimeout:
        return None
    raw = out / "thread"
    return recipients_of(raw.read_bytes(), msgid) if res.returncode == 0 and raw.is_file() \
        else None


def stored_recipients(mbox_path: Path) -> Recipients:
    """The recipients recorded next to a stored mbox (empty when none were found)."""
    return _read_recipients(mbox_path.with_suffix(".recipients.json")) or Recipients()


def _read_recipients(side: Path) -> Recipients | None:
    try:
        data = json.loads(side.read_text())
        return Recipients(tuple(data["to"]), tuple(data["cc"]), tuple(data["references"]),
                          str(data.get("list_address", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _checked(msgid: str) -> str:
    try:
        return check_msgid(msgid)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def slug(subject: str) -> str:
    _r, _i, _t, title = parse_subject(subject)
    s = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return (s[:48].rstrip("-") or "series")


def _store(ws: Workspace, state: State, name: str, title: str, posting: Posting,
           allow_partial: bool) -> tuple[VersionRow, bool]:
    if posting.missing and not allow_partial:
        nums = ", ".join(str(n) for n in posting.missing)
        total = max((p.total for p in posting.patches), default=0)
        raise SeriesError(f"v{posting.revision} ({posting.msgid}) is incomplete: "
                          f"patch {nums} of 1..{total} missing; nothing stored "
                          f"(use --allow-partial to take it anyway)")
    digest = hashlib.sha256(posting.msgid.encode()).hexdigest()[:16]
    path = ws.mbox_dir / name / f"v{posting.revision}-{digest}.mbx"
    ws.inside(path)
    # file first, then the row: a run killed in between leaves an orphan file, never a row
    # pointing at nothing (tests/integration/test_series_lore.py::test_killed_fetch)
    atomic_write(path, posting.mbox)
    if posting.recipients is not None:
        r = posting.recipients
        atomic_write(path.with_suffix(".recipients.json"), json.dumps(
            {"to": list(r.to), "cc": list(r.cc), "references": list(r.references),
             "list_address": r.list_address}, indent=2))
    vid, changed = state.store_version(
        name, title,
        {"revision": posting.revision, "msgid": posting.msgid, "posted": posting.posted,
         "subject": posting.subject, "author": posting.author, "cover": posting.cover,
         "base_commit": posting.base_commit, "change_id": posting.change_id,
         "attestation": {**posting.attestation, "missing": list(posting.missing)},
         "mbox_sha256": hashlib.sha256(posting.mbox).hexdigest(), "mbox_path": str(path),
         "fingerprint": posting.fingerprint, "partial": bool(posting.missing)},
        [p.to_row() for p in posting.patches])
    row = next(v for v in state.versions(name) if v.id == vid)
    return row, changed


def fetch(ws: Workspace, state: State, what: str, *, revision: int | None = None,
          check_newer: bool = False, allow_partial: bool = False, mirror: str | None = None,
          name: str | None = None, timeout: float | None = None,
          progress: Progress | None = None) -> FetchReport:
    """Fetch a tracked series (by name) or any thread (by message-id) and store it."""
    say = progress or (lambda _m: None)
    if name is not None:
        # it becomes a folder under the workspace's mbox/ and a state key: validated
        # before anything is fetched (tests/unit/test_attacks.py::test_names_fetch_name)
        user_name(name, "series")
    cfg: SeriesConfig | None = None
    if "@" not in what:
        cfg = ws.config.series(what)
    else:
        msgid = _checked(what)
        for known in ws.config.all_series():
            if any(msgid in v.msgids for v in known.versions):
                cfg = known
                break
    report = FetchReport(series=cfg.name if cfg else (name or ""))

    jobs: list[tuple[int | None, str]] = []
    if cfg is not None:
        versions = [cfg.version(revision)] if revision else list(cfg.versions)
        if "@" in what:
            versions = [v for v in cfg.versions if _checked(what) in v.msgids]
        jobs = [(v.revision, m) for v in versions for m in v.msgids]
    else:
        jobs = [(revision, _checked(what))]

    title = cfg.title if cfg else ""
    for rev, msgid in jobs:
        say(f"fetching v{rev if rev else '?'} {msgid}")
        posting, _log = fetch_posting(ws, msgid, revision=rev, mirror=mirror, timeout=timeout)
        if rev is not None and cfg is not None and posting.revision != rev:
            report.notes.append(f"{msgid}: listed as v{rev} in {cfg.path} but b4 found "
                                f"v{posting.revision}")
        if not report.series:
            report.series = slug(posting.subject)
            title = parse_subject(posting.subject)[3]
        title = title or parse_subject(posting.subject)[3]
        row, changed = _store(ws, state, report.series, title, posting, allow_partial)
        ref = PostingRef(row.revision, row.msgid, row.subject, row.mbox_path)
        (report.stored if changed else report.unchanged).append(ref)

    if check_newer:
        newest = max(state.versions(report.series), key=lambda v: (v.revision, v.posted),
                     default=None)
        if newest is not None:
            say(f"checking for revisions newer than v{newest.revision}")
            posting, _log = fetch_posting(ws, newest.msgid, check_newer=True, mirror=mirror,
                                          timeout=timeout)
            if posting.revision > newest.revision:
                row, changed = _store(ws, state, report.series, title, posting, allow_partial)
                report.newer.append(posting.revision)
                if changed:
                    report.stored.append(PostingRef(row.revision, row.msgid, row.subject,
                                                    row.mbox_path))
                report.notes.append(f"newer revision found: v{posting.revision} "
                                    f"({posting.msgid})")
            else:
                report.notes.append(f"no revision newer than v{newest.revision}")

    report.notes.extend(duplicate_notes(state.versions(report.series)))
    return report


def current_postings(rows: Sequence[VersionRow]) -> dict[int, tuple[VersionRow, list[VersionRow]]]:
    """Per revision: the posting in use (the newest) and the others."""
    by_rev: dict[int, list[VersionRow]] = {}
    for r in rows:
        by_rev.setdefault(r.revision, []).append(r)
    out = {}
    for rev, lst in by_rev.items():
        lst = sorted(lst, key=lambda r: (r.posted, r.fetched))
        out[rev] = (lst[-1], lst[:-1])
    return out


def duplicate_notes(rows: Sequence[VersionRow]) -> list[str]:
    notes = []
    for rev, (cur, others) in sorted(current_postings(rows).items()):
        for o in others:
            notes.append(f"v{rev} was posted {len(others) + 1} times: using {cur.msgid} "
                         f"({cur.posted}), not {o.msgid} ({o.posted})")
    return notes


def load_version(ws: Workspace, state: State, series: str,
                 revision: int | None = None) -> FetchedVersion:
    """The stored version later stages work on (newest revision by default)."""
    rows = state.versions(series)
    if not rows:
        raise NotFound(f"series {series!r} was never fetched "
                       f"(run: patchflow series fetch {series})")
    cur = current_postings(rows)
    rev = revision if revision is not None else max(cur)
    if rev not in cur:
        have = ", ".join(f"v{r}" for r in sorted(cur))
        raise NotFound(f"series {series!r} v{rev} was never fetched (fetched: {have})")
    row, others = cur[rev]
    path = Path(row.mbox_path)
    if not path.is_file():
        raise NotFound(f"mbox of {series} v{rev} is gone from the workspace: {path} "
                       f"(fetch it again)")
    return FetchedVersion(series=series, revision=rev, msgid=row.msgid, mbox_path=path,
                          patches=state.patches(row.id), row=row, other_postings=others)


# --------------------------------------------------------------------------
# range-diff between versions (git's own: patchflow.lore.rangediff)


def version_texts(fv: FetchedVersion) -> list[tuple[PatchRow, str]]:
    raws = split_mbox(fv.mbox_path)
    texts = [r.decode("utf-8", "replace") for r in raws]
    if len(texts) != len(fv.patches):
        raise SeriesError(f"{fv.mbox_path}: holds {len(texts)} messages, state says "
                          f"{len(fv.patches)}; fetch {fv.series} v{fv.revision} again")
    return list(zip(fv.patches, texts, strict=True))


def diff_versions_full(ws: Workspace, state: State, series: str, a: int, b: int) -> RangeDiff:
    """``git range-diff`` of two fetched versions, each applied onto its base."""
    from patchflow.lore.rangediff import range_diff
    from patchflow.trees.repo import repo_path_for

    va, vb = load_version(ws, state, series, a), load_version(ws, state, series, b)
    shared = repo_path_for(ws.cache)
    return range_diff(ws, (a, va.row.base_commit, version_texts(va)),
                      (b, vb.row.base_commit, version_texts(vb)),
                      objects_from=shared if (shared / "objects").is_dir() else None)


def diff_versions(ws: Workspace, state: State, series: str, a: int,
                  b: int) -> list[RangeDiffEntry]:
    return list(diff_versions_full(ws, state, series, a, b).entries)


def format_range_diff(entries: Sequence[RangeDiffEntry], a: int, b: int) -> str:
    from patchflow.lore.rangediff import format_text

    return format_text(entries, a, b)


def _patch_json(p: PatchRow) -> dict[str, Any]:
    """A patch as JSON: trailers as {name, value} objects, not "Name: value" strings."""
    d: dict[str, Any] = json.loads(json.dumps(p.__dict__))
    d["trailers"] = [dict(zip(("name", "value"), t.split(": ", 1), strict=False))
                     for t in p.trailers]
    return d


def to_json(rows: Sequence[VersionRow], state: State) -> list[dict[str, Any]]:
    cur = current_postings(rows)
    out = []
    for r in rows:
        used = cur[r.revision][0].id == r.id
        out.append({"revision": r.revision, "msgid": r.msgid, "posted": r.posted,
                    "subject": r.subject, "author": r.author, "in_use": used,
                    "partial": r.partial, "attestation": r.attestation,
                    "fetched": datetime.fromtimestamp(r.fetched, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "patches": [_patch_json(p) for p in state.patches(r.id)]})
    return out


def write_am_mbox(ws: Workspace, state: State, series: str, revision: int,
                  outdir: Path) -> tuple[Path, int]:
    """Copy the am-ready mbox b4 made of *series* v*revision* to ``outdir/NAME-vN.mbx``.

    The stored file is checked against the sha256 recorded when it was
    fetched, so what ``git am`` gets is what b4 delivered.
    """
    user_name(series, "series")
    fv = load_version(ws, state, series, revision)
    data = fv.mbox_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != fv.row.mbox_sha256:
        raise SeriesError(f"{fv.mbox_path} changed since it was fetched (sha256 differs); "
                          f"fetch {series} v{revision} again")
    out = outdir / f"{series}-v{revision}.mbx"
    atomic_write(out, data)
    return out, len(fv.patches)
