"""The state database: transactions, concurrent writers, killed writers."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from patchflow.result import ErrorDetails, StageResult, Status, details_from_json
from patchflow.state import State


def _version(msgid: str, fp: str = "f1") -> dict[str, object]:
    return {"revision": 1, "msgid": msgid, "fingerprint": fp, "posted": "2026-11-01T00:00:00Z"}


def _patches(n: int) -> list[dict[str, object]]:
    return [{"idx": i, "total": n, "subject": f"p{i}", "author": "a", "msgid": f"{i}@x",
             "patch_id": f"{i:040x}"} for i in range(1, n + 1)]


def test_store_version_is_idempotent(tmp_path: Path) -> None:
    with State(tmp_path / "s.db") as st:
        vid, changed = st.store_version("s", "t", _version("a@x"), _patches(3))
        assert changed
        vid2, changed2 = st.store_version("s", "t", _version("a@x"), _patches(3))
        assert (vid2, changed2) == (vid, False)
        # same posting, new content (a trailer arrived): replaced, not duplicated
        vid3, changed3 = st.store_version("s", "t", _version("a@x", "f2"), _patches(3))
        assert changed3
        assert len(st.versions("s")) == 1
        assert len(st.patches(vid3)) == 3


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    with State(tmp_path / "s.db") as st:
        bad = _patches(3)
        bad[2]["idx"] = 1  # violates UNIQUE(version_id, idx) after two rows went in
        with pytest.raises(sqlite3.IntegrityError):
            st.store_version("s", "t", _version("a@x"), bad)
        assert st.versions("s") == []
        assert st.db.execute("SELECT count(*) FROM patches").fetchone()[0] == 0


def test_concurrent_writers_serialise(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    State(path).close()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with State(path) as st:
                for i in range(25):
                    st.store_version("s", "t", _version(f"{n}-{i}@x"), _patches(4))
                    st.record(StageResult("build", Status.PASS, "ok", target=f"t{n}"), series="s")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with State(path) as st:
        assert st.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert st.db.execute("SELECT count(*) FROM versions").fetchone()[0] == 100
        assert st.db.execute("SELECT count(*) FROM patches").fetchone()[0] == 400
        assert len(st.results(limit=1000)) == 100


def test_process_killed_inside_a_transaction(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    State(path).close()
    code = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from patchflow.state import State
        st = State(Path({str(path)!r}))
        with st.tx() as db:
            db.execute("INSERT INTO series (name, title, created) VALUES ('half', '', 0)")
            print("inside", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ})
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "inside"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with State(path) as st:
        assert st.series_names() == []
        st.ensure_series("after", "")  # the lock is gone with the process
        assert st.series_names() == ["after"]


def test_results_and_samples(tmp_path: Path) -> None:
    with State(tmp_path / "s.db") as st:
        rid = st.record(StageResult("bench", Status.PASS, "improved", duration=3.5, target="t",
                                    details=ErrorDetails("X", "improved")),
                        series="s", revision=2, input_hash="h1",
                        samples=[("base", 0, "bogo_ops_s", 10.0), ("patched", 0, "bogo_ops_s", 12.0)])
        last = st.last_result(series="s", target="t", stage="bench", input_hash="h1")
        assert last is not None and last["id"] == rid
        assert details_from_json(last["details"]) == ErrorDetails("X", "improved")
        assert st.last_result(series="s", target="t", stage="bench", input_hash="other") is None
        assert st.samples(rid) == [("base", 0, "bogo_ops_s", 10.0),
                                   ("patched", 0, "bogo_ops_s", 12.0)]


def test_migrates_schema_1(tmp_path: Path) -> None:
    """A version-1 database (backports table made outside the schema) is brought to 2."""
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                      "INSERT INTO meta VALUES ('schema', '1');"
                      "CREATE TABLE backports (series TEXT NOT NULL, revision INTEGER NOT NULL,"
                      " target TEXT NOT NULL, status TEXT NOT NULL, base TEXT NOT NULL DEFAULT '',"
                      " head TEXT NOT NULL DEFAULT '', worktree TEXT NOT NULL DEFAULT '',"
                      " results TEXT NOT NULL DEFAULT '[]', updated REAL NOT NULL,"
                      " PRIMARY KEY (series, revision, target));"
                      "INSERT INTO backports VALUES ('s', 1, 't', 'done', 'b', 'h', 'w', '[]', 1.0);")
    con.commit()
    con.close()
    with State(db) as st:
        assert [(r.series, r.status) for r in st.backports()] == [("s", "done")]
        assert st.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == "2"


@pytest.mark.parametrize("value", ["two", "99"])
def test_unknown_schema_versions_are_refused(tmp_path: Path, value: str) -> None:
    from patchflow.errors import StateError

    db = tmp_path / "x.db"
    with State(db):
        pass
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value=? WHERE key='schema'", (value,))
    con.commit()
    con.close()
    with pytest.raises(StateError, match="schema version"):
        State(db)
