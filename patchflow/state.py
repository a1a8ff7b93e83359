"""The state database: one SQLite file per workspace.

Owns the schema and every SQL statement.  Writes happen in
``BEGIN IMMEDIATE`` transactions (:meth:`State.tx`), so a process killed
mid-write leaves the previous state, and two patchflow processes serialise on
SQLite's lock instead of corrupting each other (WAL journal, busy timeout).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchflow.errors import StateError
from patchflow.result import StageResult

#: 2: the backports table (patchflow.backport) joined the schema; a version-1 database
#: is migrated in place (tests/unit/test_state.py::test_migrates_schema_1)
SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    id INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL REFERENCES series(id) ON DELETE CASCADE,
    revision INTEGER NOT NULL,
    msgid TEXT NOT NULL,
    posted TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL DEFAULT '',
    author TEXT NOT NULL DEFAULT '',
    cover TEXT NOT NULL DEFAULT '',
    base_commit TEXT NOT NULL DEFAULT '',
    change_id TEXT NOT NULL DEFAULT '',
    attestation TEXT NOT NULL DEFAULT '{}',
    mbox_sha256 TEXT NOT NULL DEFAULT '',
    mbox_path TEXT NOT NULL DEFAULT '',
    fingerprint TEXT NOT NULL DEFAULT '',
    partial INTEGER NOT NULL DEFAULT 0,
    fetched REAL NOT NULL,
    UNIQUE (series_id, msgid)
);
CREATE TABLE IF NOT EXISTS patches (
    id INTEGER PRIMARY KEY,
    version_id INTEGER NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    total INTEGER NOT NULL,
    subject TEXT NOT NULL,
    author TEXT NOT NULL,
    msgid TEXT NOT NULL,
    patch_id TEXT NOT NULL,
    trailers TEXT NOT NULL DEFAULT '[]',
    attestation TEXT NOT NULL DEFAULT '',
    files TEXT NOT NULL DEFAULT '[]',
    UNIQUE (version_id, idx)
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    cmdline TEXT NOT NULL DEFAULT '',
    started REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL DEFAULT 'running',
    dir TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS stage_results (
    id INTEGER PRIMARY KEY,
    run_id TEXT REFERENCES runs(id) ON DELETE SET NULL,
    series TEXT,
    revision INTEGER,
    target TEXT,
    stage TEXT NOT NULL,
    status TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '',
    duration REAL NOT NULL DEFAULT 0,
    details TEXT NOT NULL DEFAULT '{}',
    log TEXT,
    input_hash TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS stage_lookup ON stage_results(series, target, stage, created);
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
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY,
    result_id INTEGER NOT NULL REFERENCES stage_results(id) ON DELETE CASCADE,
    variant TEXT NOT NULL,
    rep INTEGER NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL
);
"""


@dataclass(frozen=True)
class VersionRow:
    id: int
    series: str
    revision: int
    msgid: str
    posted: str
    subject: str
    author: str
    cover: str
    base_commit: str
    change_id: str
    attestation: dict[str, Any]
    mbox_sha256: str
    mbox_path: str
    fingerprint: str
    partial: bool
    fetched: float


@dataclass(frozen=True)
class PatchRow:
    idx: int
    total: int
    subject: str
    author: str
    msgid: str
    patch_id: str
    trailers: list[str]
    attestation: str
    files: list[str]


@dataclass(frozen=True)
class BackportRow:
    """The last state of one backport (series, revision, target)."""

    series: str
    revision: int
    target: str
    status: str  # applying | conflict | review | done | aborted | stale
    base: str = ""
    head: str = ""
    worktree: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)
    updated: float = 0.0


def _writable(path: Path) -> bool:
    """Whether this process may write *path* and create files (the WAL) beside it."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)


class State:
    """A connection to the workspace state database."""

    def __init__(self, path: Path, timeout: float = 60.0) -> None:
        self.path = path
        #: opened read-only: the workspace (or the file) is not writable; reads still work
        #: (tests/unit/test_attacks.py::test_read_only_workspace_still_reads)
        self.read_only = False
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if path.exists() and not _writable(path):
                self._open_read_only(timeout)
                return
            self.db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self._check_pages()
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            with self.tx():
                for stmt in SCHEMA.split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
                row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if row is None:
                    self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                else:
                    self._migrate(str(row[0]))
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state database {path} is unusable: {exc}") from exc

    def _open_read_only(self, timeout: float) -> None:
        """Open without writing anything: no schema changes, no WAL switch, no migration."""
        self.read_only = True
        uri = self.path.absolute().as_uri()
        try:
            self.db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout,
                                      isolation_level=None)
            self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            # a WAL database in a read-only folder without its -shm file: nobody can be
            # writing it (they could not either), so it is read as immutable
            self.db = sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=timeout,
                                      isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self._check_pages()
        row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        found = str(row[0]) if row is not None else "none"
        if found != str(SCHEMA_VERSION):
            raise StateError(f"{self.path}: schema version {found!r} in a read-only workspace; "
                             f"this patchflow reads {SCHEMA_VERSION} and cannot migrate it here")

    def _check_pages(self) -> None:
        """Refuse a database with a corrupt page now, naming the file, not in a later query.

        ``PRAGMA quick_check`` reads every page of every table and index (a
        corrupt index page otherwise surfaced as a traceback from the first
        query that used it: tests/unit/test_attacks.py::test_corrupt_state_page).
        """
        rows = [str(r[0]) for r in self.db.execute("PRAGMA quick_check(3)")]
        if rows != ["ok"]:
            what = " ".join(rows[0].replace("*** in database main ***", "").split())
            raise StateError(f"state database {self.path} is corrupt ({what}); move it "
                             "aside and fetch again, or restore a backup")

    def _migrate(self, found: str) -> None:
        """Bring an older schema up to :data:`SCHEMA_VERSION` (inside the open transaction)."""
        if not found.isdigit():
            raise StateError(f"{self.path}: schema version {found!r} is not a number; "
                             "this file was not written by patchflow")
        version = int(found)
        if version > SCHEMA_VERSION:
            raise StateError(f"{self.path}: schema version {version}, this patchflow expects "
                             f"{SCHEMA_VERSION} or older; use a newer patchflow")
        # 1 -> 2: the backports table, which version 1 created outside the schema with
        # the same columns; CREATE TABLE IF NOT EXISTS above made it exist either way
        self.db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: all of it lands, or none of it."""
        if self.read_only:
            raise StateError(f"state database {self.path} is read-only (the workspace is not "
                             "writable): this command needs to write")
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StateError(f"state database {self.path} cannot be written: {exc}") from exc
        try:
            yield self.db
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.DatabaseError):
                self.db.execute("ROLLBACK")
            # a broken file or disk (corrupt, read-only, I/O error) is infrastructure; a
            # constraint or SQL error stays a bug with its traceback
            if type(exc) in (sqlite3.DatabaseError, sqlite3.OperationalError):
                raise StateError(f"state database {self.path}: {exc}") from exc
            raise
        except BaseException:
            with contextlib.suppress(sqlite3.DatabaseError):
                self.db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------ series

    def ensure_series(self, name: str, title: str) -> int:
        with self.tx() as db:
            return self._ensure_series(db, name, title)

    @staticmethod
    def _ensure_series(db: sqlite3.Connection, name: str, title: str) -> int:
        row = db.execute("SELECT id FROM series WHERE name=?", (name,)).fetchone()
        if row:
            if title:
                db.execute("UPDATE series SET title=? WHERE id=?", (title, row[0]))
            return int(row[0])
        cur = db.execute("INSERT INTO series (name, title, created) VALUES (?, ?, ?)",
                         (name, title, time.time()))
        return int(cur.lastrowid or 0)

    def store_version(self, series: str, title: str, version: dict[str, Any],
                      patches: list[dict[str, Any]]) -> tuple[int, bool]:
        """Store one posting and its patches in one transaction.

        Returns (version id, changed).  Storing the same posting again with the
        same content is a no-op, which makes fetching idempotent.
        """
        with self.tx() as db:
            sid = self._ensure_series(db, series, title)
            row = db.execute("SELECT id, fingerprint FROM versions WHERE series_id=? AND msgid=?",
                             (sid, version["msgid"])).fetchone()
            if row and row["fingerprint"] == version["fingerprint"]:
                return int(row["id"]), False
            if row:
                db.execute("DELETE FROM versions WHERE id=?", (row["id"],))
            cur = db.execute(
                "INSERT INTO versions (series_id, revision, msgid, posted, subject, author, cover,"
                " base_commit, change_id, attestation, mbox_sha256, mbox_path, fingerprint,"
                " partial, fetched) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (sid, version["revision"], version["msgid"], version.get("posted", ""),
                 version.get("subject", ""), version.get("author", ""), version.get("cover", ""),
                 version.get("base_commit", ""), version.get("change_id", ""),
                 json.dumps(version.get("attestation", {})), version.get("mbox_sha256", ""),
                 version.get("mbox_path", ""), version["fingerprint"],
                 int(bool(version.get("partial"))), time.time()))
            vid = int(cur.lastrowid or 0)
            for p in patches:
                db.execute(
                    "INSERT INTO patches (version_id, idx, total, subject, author, msgid, patch_id,"
                    " trailers, attestation, files) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (vid, p["idx"], p["total"], p["subject"], p["author"], p["msgid"],
                     p["patch_id"], json.dumps(p.get("trailers", [])), p.get("attestation", ""),
                     json.dumps(p.get("files", []))))
            return vid, True

    def series_names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM series ORDER BY name")]

    def versions(self, series: str) -> list[VersionRow]:
        rows = self.db.execute(
            "SELECT v.*, s.name AS series FROM versions v JOIN series s ON s.id=v.series_id"
            " WHERE s.name=? ORDER BY v.revision, v.posted, v.id", (series,)).fetchall()
        return [self._version(r) for r in rows]

    @staticmethod
    def _version(r: sqlite3.Row) -> VersionRow:
        return VersionRow(
            id=r["id"], series=r["series"], revision=r["revision"], msgid=r["msgid"],
            posted=r["posted"], subject=r["subject"], author=r["author"], cover=r["cover"],
            base_commit=r["base_commit"], change_id=r["change_id"],
            attestation=json.loads(r["attestation"]), mbox_sha256=r["mbox_sha256"],
            mbox_path=r["mbox_path"], fingerprint=r["fingerprint"], partial=bool(r["partial"]),
            fetched=r["fetched"])

    def patches(self, version_id: int) -> list[PatchRow]:
        rows = self.db.execute("SELECT * FROM patches WHERE version_id=? ORDER BY idx",
                               (version_id,)).fetchall()
        return [PatchRow(idx=r["idx"], total=r["total"], subject=r["subject"],
                         author=r["author"], msgid=r["msgid"], patch_id=r["patch_id"],
                         trailers=json.loads(r["trailers"]), attestation=r["attestation"],
                         files=json.loads(r["files"])) for r in rows]

    # ------------------------------------------------------------ runs and results

    def start_run(self, command: str, cmdline: str, run_dir: Path | None = None) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        with self.tx() as db:
            db.execute("INSERT INTO runs (id, command, cmdline, started, dir) VALUES (?,?,?,?,?)",
                       (run_id, command, cmdline, time.time(), str(run_dir or "")))
        return run_id

    def finish_run(self, run_id: str, status: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE runs SET finished=?, status=? WHERE id=?",
                       (time.time(), status, run_id))

    def record(self, result: StageResult, *, run_id: str | None = None, series: str | None = None,
               revision: int | None = None, input_hash: str = "",
               samples: list[tuple[str, int, str, float]] | None = None) -> int:
        """Store a stage result (and optional benchmark samples) atomically."""
        with self.tx() as db:
            cur = db.execute(
                "INSERT INTO stage_results (run_id, series, revision, target, stage, status,"
                " summary, duration, details, log, input_hash, created)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, series, revision, result.target, result.stage, result.status.value,
                 result.summary, result.duration,
                 json.dumps(result.details.to_json() if result.details is not None else None),
                 result.log, input_hash, time.time()))
            rid = int(cur.lastrowid or 0)
            for variant, rep, metric, value in samples or []:
                db.execute("INSERT INTO samples (result_id, variant, rep, metric, value)"
                           " VALUES (?,?,?,?,?)", (rid, variant, rep, metric, value))
            return rid

    def results(self, *, series: str | None = None, target: str | None = None,
                stage: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        q = "SELECT * FROM stage_results WHERE 1=1"
        args: list[Any] = []
        for col, val in (("series", series), ("target", target), ("stage", stage)):
            if val is not None:
                q += f" AND {col}=?"
                args.append(val)
        q += " ORDER BY created DESC, id DESC LIMIT ?"
        args.append(limit)
        out = []
        for r in self.db.execute(q, args):
            d = dict(r)
            d["details"] = json.loads(d["details"])
            out.append(d)
        return out

    def last_result(self, *, series: str | None, target: str | None, stage: str,
                    input_hash: str | None = None) -> dict[str, Any] | None:
        q = "SELECT * FROM stage_results WHERE stage=? AND series IS ? AND target IS ?"
        args: list[Any] = [stage, series, target]
        if input_hash is not None:
            q += " AND input_hash=?"
            args.append(input_hash)
        r = self.db.execute(q + " ORDER BY created DESC, id DESC LIMIT 1", args).fetchone()
        if r is None:
            return None
        d = dict(r)
        d["details"] = json.loads(d["details"])
        return d

    # ------------------------------------------------------------ backports

    def save_backport(self, row: BackportRow) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO backports VALUES (?,?,?,?,?,?,?,?,?)",
                       (row.series, row.revision, row.target, row.status, row.base, row.head,
                        row.worktree, json.dumps(row.results), row.updated or time.time()))

    def backports(self, series: str | None = None) -> list[BackportRow]:
        q = "SELECT * FROM backports" + (" WHERE series=?" if series else "") + \
            " ORDER BY series, revision, target"
        return [BackportRow(series=r["series"], revision=r["revision"], target=r["target"],
                            status=r["status"], base=r["base"], head=r["head"],
                            worktree=r["worktree"], results=json.loads(r["results"]),
                            updated=r["updated"])
                for r in self.db.execute(q, (series,) if series else ())]

    def samples(self, result_id: int) -> list[tuple[str, int, str, float]]:
        return [(r[0], r[1], r[2], r[3]) for r in self.db.execute(
            "SELECT variant, rep, metric, value FROM samples WHERE result_id=? ORDER BY id",
            (result_id,))]
