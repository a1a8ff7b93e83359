"""Series tracking against the real lore software: public-inbox on loopback, b4 fetching."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchflow.demo.mirror import LocalLore
from tests import lorefixtures

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def threads(tmp_path_factory: pytest.TempPathFactory) -> lorefixtures.Fixtures:
    return lorefixtures.build(tmp_path_factory.mktemp("fixtures"))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, threads: lorefixtures.Fixtures) -> LocalLore:
    """An inbox with every fixture thread but v3, built once (public-inbox-mda is slow)."""
    mirror = LocalLore(tmp_path_factory.mktemp("seed") / "lore", "linux-mm", lorefixtures.LIST)
    mirror.init()
    for t in (threads.v1, threads.v2, threads.v2_repost, threads.partial, threads.corrupt):
        for raw in t.messages:
            mirror.inject(raw)
    mirror.inject(threads.chatter)
    return mirror


@pytest.fixture
def lore(tmp_path: Path, seeded: LocalLore) -> Iterator[LocalLore]:
    mirror = seeded.copy_to(tmp_path / "lore")
    mirror.start()
    yield mirror
    mirror.stop()


@pytest.fixture
def series_dir(tmp_path: Path, threads: lorefixtures.Fixtures, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cfg"
    (root / "series").mkdir(parents=True)
    (root / "targets").mkdir()
    (root / "series" / "fixture.toml").write_text(f"""
title = "mm: batch things in the fixture"
upstream_base = "base"
targets = ["linux-6.12.y"]
[versions]
v1 = "{threads.v1.cover_msgid}"
v2 = ["{threads.v2.cover_msgid}", "{threads.v2_repost.cover_msgid}"]
""")
    monkeypatch.setenv("PATCHFLOW_CONFIG_DIR", str(root))
    return root


def _invoke(args: list[str]) -> tuple[int, str]:
    """Run the real console entry point (exit codes included)."""
    proc = subprocess.run([sys.executable, "-m", "patchflow", *args], capture_output=True,
                          text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_fetch_all_versions_and_duplicates(lore: LocalLore, series_dir: Path,
                                           threads: lorefixtures.Fixtures) -> None:
    rc, out = _invoke(["series", "fetch", "fixture", "--mirror", lore.midmask])
    assert rc == 0, out
    assert "stored fixture v1" in out and "stored fixture v2" in out
    # both v2 postings are recorded; the newest is used and the other reported
    assert f"using {threads.v2_repost.cover_msgid}" in out
    assert f"not {threads.v2.cover_msgid}" in out

    rc, out = _invoke(["series", "show", "fixture", "--format", "json"])
    assert rc == 0, out
    doc = json.loads(out)
    assert doc["schema"] == "patchflow.series-show/2"
    data = doc["versions"]
    # one time format: ISO 8601 UTC
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", d[k]) for d in data
               for k in ("posted", "fetched"))
    assert [(d["revision"], d["in_use"]) for d in data] == [(1, True), (2, False), (2, True)]
    v2 = data[2]
    assert [p["subject"] for p in v2["patches"]] == [
        "mm: refactor reclaim_3", "mm: split reclaim_5", "mm: batch reclaim_7"]
    assert all(len(p["patch_id"]) == 40 for p in v2["patches"])
    assert v2["patches"][0]["trailers"] == [{"name": "Signed-off-by",
                                             "value": "Ada Dev <ada@example.com>"}]
    assert v2["attestation"]["overall"] == "none"  # unsigned fixture: recorded as such

    # idempotent: a second fetch stores nothing new
    rc, out = _invoke(["series", "fetch", "fixture", "--mirror", lore.midmask])
    assert rc == 0, out
    assert "stored" not in out.replace("unchanged", "")
    assert out.count("unchanged fixture") == 3
    db = sqlite3.connect(os.environ["PATCHFLOW_WORKSPACE"] + "/state.db")
    assert db.execute("SELECT count(*) FROM versions").fetchone()[0] == 3
    assert db.execute("SELECT count(*) FROM patches").fetchone()[0] == 2 + 3 + 3


def test_diff_between_versions(lore: LocalLore, series_dir: Path) -> None:
    assert _invoke(["series", "fetch", "fixture", "--mirror", lore.midmask])[0] == 0
    rc, out = _invoke(["series", "diff", "fixture", "v1", "v2", "--format", "json"])
    assert rc == 0, out
    entries = json.loads(out)["entries"]
    marks = [(e["old"], e["new"], e["mark"]) for e in entries]
    assert marks == [(1, 1, "="), (None, 2, ">"), (2, 3, "!")]
    assert "-+\treturn x * 7;" in entries[2]["interdiff"]
    assert "++\treturn x * 7 + 1;" in entries[2]["interdiff"]
    rc, text = _invoke(["series", "diff", "fixture", "v1", "v2"])
    assert "  1: v1 =   1: v2  mm: refactor reclaim_3" in text


def test_check_newer_finds_v3(lore: LocalLore, series_dir: Path,
                              threads: lorefixtures.Fixtures) -> None:
    assert _invoke(["series", "fetch", "fixture", "--mirror", lore.midmask])[0] == 0
    rc, out = _invoke(["series", "fetch", "fixture", "--check-newer", "--mirror", lore.midmask])
    assert rc == 0, out
    assert "no revision newer than v2" in out
    for raw in threads.v3.messages:
        lore.inject(raw)
    rc, out = _invoke(["series", "fetch", "fixture", "--check-newer", "--mirror", lore.midmask])
    assert rc == 0, out
    assert f"newer revision found: v3 ({threads.v3.cover_msgid})" in out
    rc, out = _invoke(["series", "list", "--format", "json"])
    assert json.loads(out)["series"][0]["revisions"] == [1, 2, 3]


def test_fetch_by_msgid(lore: LocalLore, threads: lorefixtures.Fixtures) -> None:
    rc, out = _invoke(["series", "fetch", threads.v1.cover_msgid, "--mirror", lore.midmask])
    assert rc == 0, out
    assert "stored mm-batch-things-in-the-fixture v1" in out


@pytest.mark.parametrize("case,expect", [
    ("unknown", "not found on the mirror"),
    ("chatter", "is not a patch series"),
    ("partial", "patch 2 of 1..3 missing"),
    ("corrupt", "corrupt diff"),
    ("hostile", "not a valid message-id"),
    ("unreachable", "lore mirror unreachable"),
])
def test_bad_input_is_refused_and_nothing_stored(
        lore: LocalLore, threads: lorefixtures.Fixtures, case: str, expect: str,
        tmp_path: Path) -> None:
    msgid = {"unknown": "no-such-thread@example.com", "chatter": "chatter-1@example.com",
             "partial": threads.partial.cover_msgid, "corrupt": threads.corrupt.cover_msgid,
             "hostile": "x$(touch pwned)@../../etc", "unreachable": "any@example.com"}[case]
    mirror = lore.midmask if case != "unreachable" else "http://127.0.0.1:9/nothing/%s"
    rc, out = _invoke(["series", "fetch", msgid, "--mirror", mirror])
    assert rc == 2, out
    assert expect in out
    assert "Traceback" not in out
    assert not (tmp_path / "pwned").exists()
    db = Path(os.environ["PATCHFLOW_WORKSPACE"]) / "state.db"
    if db.exists():
        assert sqlite3.connect(db).execute("SELECT count(*) FROM versions").fetchone()[0] == 0


def test_corrupt_patch_is_named(lore: LocalLore, threads: lorefixtures.Fixtures) -> None:
    rc, out = _invoke(["series", "fetch", threads.corrupt.cover_msgid, "--mirror", lore.midmask])
    assert rc == 2
    assert 'patch 1/2 "mm: refactor reclaim_3": corrupt diff' in out


def test_allow_partial(lore: LocalLore, threads: lorefixtures.Fixtures) -> None:
    rc, out = _invoke(["series", "fetch", threads.partial.cover_msgid, "--mirror", lore.midmask,
                       "--allow-partial", "--name", "part"])
    assert rc == 0, out
    rc, out = _invoke(["series", "show", "part", "--format", "json"])
    data = json.loads(out)["versions"][0]
    assert data["partial"] is True
    assert data["attestation"]["missing"] == [2]
    assert [p["idx"] for p in data["patches"]] == [1, 3]


def _fetch_worker(midmask: str, ws: str, cfg: str) -> int:
    env = {**os.environ, "PATCHFLOW_WORKSPACE": ws, "PATCHFLOW_CONFIG_DIR": cfg}
    return subprocess.run([sys.executable, "-m", "patchflow", "series", "fetch", "fixture",
                           "--mirror", midmask], env=env, capture_output=True).returncode


def test_two_processes_at_once(lore: LocalLore, series_dir: Path) -> None:
    ws = os.environ["PATCHFLOW_WORKSPACE"]
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        rcs = pool.starmap(_fetch_worker, [(lore.midmask, ws, str(series_dir))] * 3)
    assert rcs == [0, 0, 0]
    db = sqlite3.connect(Path(ws) / "state.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT count(*) FROM versions").fetchone()[0] == 3
    assert db.execute("SELECT count(*) FROM patches").fetchone()[0] == 8


def test_killed_fetch_leaves_no_half_rows(lore: LocalLore, series_dir: Path) -> None:
    """SIGKILL at random points of a fetch: the state is either before or after, never between."""
    ws = Path(os.environ["PATCHFLOW_WORKSPACE"])
    for delay in (0.3, 0.8, 1.5, 2.5):
        proc = subprocess.Popen([sys.executable, "-m", "patchflow", "series", "fetch", "fixture",
                                 "--mirror", lore.midmask], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        db_path = ws / "state.db"
        if not db_path.exists():
            continue
        db = sqlite3.connect(db_path)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name='versions'").fetchone():
            continue  # killed before the schema transaction committed: nothing there yet
        # every stored version has all of its patches
        for vid, mbox in db.execute("SELECT id, mbox_path FROM versions"):
            n = db.execute("SELECT count(*), max(total) FROM patches WHERE version_id=?",
                           (vid,)).fetchone()
            assert n[0] == n[1]
            assert Path(mbox).is_file()
        db.close()
    rc, out = _invoke(["series", "fetch", "fixture", "--mirror", lore.midmask])
    assert rc == 0, out


def test_silent_mirror_times_out() -> None:
    """A mirror that accepts the connection and never answers: a timeout, named as such."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    try:
        start = time.monotonic()
        rc, out = _invoke(["series", "fetch", "a@example.com", "--timeout", "3",
                           "--mirror", f"http://127.0.0.1:{port}/x/%s"])
        assert rc == 2, out
        assert "lore mirror timed out after 3s" in out
        assert time.monotonic() - start < 30
    finally:
        srv.close()


def test_gate_check_newer_stage(lore: LocalLore, series_dir: Path, threads: lorefixtures.Fixtures,
                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from patchflow.config import ConfigDir
    from patchflow.context import StageContext
    from patchflow.lore.stage import CheckNewerDetails, check_newer
    from patchflow.result import Status
    from patchflow.state import State
    from patchflow.workspace import Workspace

    monkeypatch.setenv("PATCHFLOW_MIRROR", lore.midmask)
    ws = Workspace.open(tmp_path / "gws", series_dir)
    cfg = ConfigDir(series_dir).series("fixture")
    with State(ws.db_path) as st:
        ctx = StageContext.make(ws, st, log=tmp_path / "cn.log", series=cfg)
        res = check_newer(ctx)
        assert res.status is Status.PASS, res.summary
        d = res.detail(CheckNewerDetails)
        assert d is not None and d.revisions == (1, 2)
        for raw in threads.v3.messages:
            lore.inject(raw)
        res = check_newer(StageContext.make(ws, st, log=tmp_path / "cn.log", series=cfg,
                                            revision=2))
        assert res.status is Status.WARN
        assert res.summary == "v3 is newer than the gated v2"
    monkeypatch.setenv("PATCHFLOW_MIRROR", "http://127.0.0.1:9/x/%s")
    ws = Workspace.open(tmp_path / "gws", series_dir)  # settings are read when a run starts
    with State(ws.db_path) as st:
        res = check_newer(StageContext.make(ws, st, log=tmp_path / "cn.log", series=cfg,
                                            revision=2))
        assert res.status is Status.ERROR and "unreachable" in res.summary
