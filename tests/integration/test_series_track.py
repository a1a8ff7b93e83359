"""``series track``, ``--check-newer`` into the series file, ``series am``, ``status`` and
JSON errors, against the real lore software: public-inbox on loopback, b4 fetching, git."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchflow.demo.mirror import LocalLore
from tests import lorefixtures
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration


class Threads:
    def __init__(self, root: Path) -> None:
        self.repo = lorefixtures.base_repo(root)
        out = root / "threads"
        mk = lorefixtures.make_thread
        self.v1 = mk(self.repo, out, 1, lorefixtures.V1, "2026-11-01T10:00:00+00:00", "tr1")
        self.v2 = mk(self.repo, out, 2, lorefixtures.V2, "2026-11-05T10:00:00+00:00", "tr2",
                     blurb=f"Changes in v2:\n- split reclaim_5\n"
                           f"- Link to v1: https://lore.kernel.org/r/{self.v1.cover_msgid}")
        self.v3 = mk(self.repo, out, 3, lorefixtures.V3, "2026-11-09T10:00:00+00:00", "tr3",
                     blurb=f"Changes in v3:\n- Link to v2: "
                           f"https://lore.kernel.org/r/{self.v2.cover_msgid}")


@pytest.fixture(scope="module")
def threads(tmp_path_factory: pytest.TempPathFactory) -> Threads:
    return Threads(tmp_path_factory.mktemp("track-fixtures"))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, threads: Threads) -> LocalLore:
    """v1 and v2 on the list (v3 is injected by the tests that need a newer one)."""
    mirror = LocalLore(tmp_path_factory.mktemp("track-seed") / "lore", "linux-mm",
                       lorefixtures.LIST)
    mirror.init()
    for t in (threads.v1, threads.v2):
        for raw in t.messages:
            mirror.inject(raw)
    return mirror


@pytest.fixture(scope="module")
def seeded_all(tmp_path_factory: pytest.TempPathFactory, threads: Threads) -> LocalLore:
    """v1, v2 and v3 on the list before the server starts."""
    mirror = LocalLore(tmp_path_factory.mktemp("track-seed-all") / "lore", "linux-mm",
                       lorefixtures.LIST)
    mirror.init()
    for t in (threads.v1, threads.v2, threads.v3):
        for raw in t.messages:
            mirror.inject(raw)
    return mirror


def _serve(seed: LocalLore, where: Path) -> Iterator[LocalLore]:
    mirror = seed.copy_to(where)
    mirror.start()
    yield mirror
    mirror.stop()


@pytest.fixture
def lore(tmp_path: Path, seeded: LocalLore) -> Iterator[LocalLore]:
    yield from _serve(seeded, tmp_path / "lore")


@pytest.fixture
def lore_all(tmp_path: Path, seeded_all: LocalLore) -> Iterator[LocalLore]:
    yield from _serve(seeded_all, tmp_path / "lore")


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config dir with the checkout's targets and no series."""
    root = tmp_path / "cfg"
    (root / "series").mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "targets", root / "targets")
    monkeypatch.setenv("PATCHFLOW_CONFIG_DIR", str(root))
    return root


def publish(lore: LocalLore, thread: lorefixtures.Thread) -> None:
    """Post *thread* to a running mirror.  public-inbox-httpd keeps the search index it
    opened, so a revision posted while it runs is not found by b4's search for newer
    ones until it restarts (measured here): stop, deliver, start."""
    lore.stop()
    for raw in thread.messages:
        lore.inject(raw)
    lore.start()


def run(*args: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "patchflow", *args], capture_output=True,
                          text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def test_track_writes_every_version_and_commands_use_the_name(
        lore_all: LocalLore, cfg: Path, threads: Threads) -> None:
    lore = lore_all
    # v2 given: v1 comes from the cover letter's "Link to v1:", v3 from b4's check for newer
    rc, out, err = run("series", "track", threads.v2.cover_msgid, "--name", "fx",
                       "--target", "linux-6.12.y", "--mirror", lore.midmask, "--format", "json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["schema"] == "patchflow.track/1" and doc["created"] is True
    assert [(v["revision"], v["msgids"]) for v in doc["versions"]] == [
        (1, [threads.v1.cover_msgid]), (2, [threads.v2.cover_msgid]),
        (3, [threads.v3.cover_msgid])]
    assert all(Path(s["mbox"]).is_file() for s in doc["stored"])
    # the cover letter's recipients (b4 am drops them) come from the raw thread (b4 mbox)
    side = json.loads(Path(doc["stored"][0]["mbox"]).with_suffix(".recipients.json").read_text())
    assert side["to"] == [lorefixtures.LIST] and side["cc"] == []
    data = tomllib.loads((cfg / "series" / "fx.toml").read_text())
    assert data["targets"] == ["linux-6.12.y"]
    assert data["title"] == "mm: batch things in the fixture"
    assert data["list_address"] == lorefixtures.LIST  # the recipient public-inbox's List-Id names
    assert set(data["versions"]) == {"v1", "v2", "v3"}
    assert not list((cfg / "series").glob(".track-*"))  # the validation folder is gone

    # every command finds it by name now
    rc, out, err = run("series", "fetch", "fx", "--mirror", lore.midmask)
    assert rc == 0 and out.count("unchanged fx") == 3, out + err
    rc, out, err = run("status", "fx", "--format", "json")
    assert rc == 0, err
    st = json.loads(out)
    assert st["schema"] == "patchflow.status/2"
    assert {(r["revision"], r["state"]) for r in st["rows"]} == {
        (1, "not-backported"), (2, "not-backported"), (3, "not-backported")}
    rc, out, err = run("ci", "generate", "fx", "--engine", "gitlab")
    assert rc == 0 and "linux-6.12.y" in out, err
    rc, out, err = run("gate", "fx", "--dry-run")  # the file's targets: linux-6.12.y
    assert rc == 0 and "linux-6.12.y" in out and "dry run" in out, out + err
    rc, out, err = run("series", "list", "--format", "json")
    row = next(r for r in json.loads(out)["series"] if r["name"] == "fx")
    assert row["configured"] is True and row["revisions"] == [1, 2, 3]


def test_check_newer_adds_to_the_series_file(lore: LocalLore, cfg: Path,
                                             threads: Threads) -> None:
    # a lore URL works as well as a message-id
    rc, out, err = run("series", "track", f"{lore.url}/{threads.v2.cover_msgid}/", "--name",
                       "fx", "--mirror", lore.midmask)
    assert rc == 0, err
    assert "wrote" in out and "v1 (1 posting), v2 (1 posting)" in out
    publish(lore, threads.v3)
    rc, out, err = run("series", "fetch", "fx", "--check-newer", "--mirror", lore.midmask)
    assert rc == 0, err
    assert f"added v3 <{threads.v3.cover_msgid}> to {cfg / 'series' / 'fx.toml'}" in out
    assert "mbox: " in out
    data = tomllib.loads((cfg / "series" / "fx.toml").read_text())
    assert data["versions"]["v3"] == [threads.v3.cover_msgid]
    # a second look finds nothing new and leaves the file alone
    before = (cfg / "series" / "fx.toml").read_bytes()
    rc, out, err = run("series", "fetch", "fx", "--check-newer", "--mirror", lore.midmask)
    assert rc == 0 and "added" not in out and "no revision newer than v3" in out
    assert (cfg / "series" / "fx.toml").read_bytes() == before


def test_check_newer_keeps_a_hand_written_file(lore: LocalLore, cfg: Path,
                                               threads: Threads) -> None:
    path = cfg / "series" / "hand.toml"
    path.write_text(f"""# kept by hand: this comment must survive
title = "mm: batch things in the fixture"
upstream_base = "base"
targets = []

[versions]
v2 = "{threads.v2.cover_msgid}"  # the one we test
""")
    publish(lore, threads.v3)
    rc, out, err = run("series", "fetch", "hand", "--check-newer", "--mirror", lore.midmask)
    assert rc == 0, err
    text = path.read_text()
    assert "# kept by hand: this comment must survive" in text and "# the one we test" in text
    assert tomllib.loads(text)["versions"]["v3"] == [threads.v3.cover_msgid]


@pytest.mark.parametrize(("args", "needle"), [
    (["no-at-sign"], "not a valid message-id"),
    (["x@y", "--name", "../evil"], "invalid series name"),
    (["{v2}", "--target", "no-such-target"], "unknown target 'no-such-target'"),
    (["missing-{v2}"], "not found on the mirror"),
])
def test_track_refuses_bad_input_and_writes_nothing(
        lore: LocalLore, cfg: Path, threads: Threads, args: list[str], needle: str) -> None:
    args = [a.format(v2=threads.v2.cover_msgid) for a in args]
    rc, out, err = run("series", "track", *args, "--mirror", lore.midmask)
    assert rc == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert list((cfg / "series").iterdir()) == []
    # the same failure under --format json: one patchflow.error/1 object on stdout
    rc, out, err = run("series", "track", *args, "--mirror", lore.midmask, "--format", "json")
    doc = json.loads(out)
    assert rc == 2 and doc["schema"] == "patchflow.error/1" and doc["exit_code"] == 2
    assert needle in doc["message"]


def test_track_refuses_a_name_taken_by_another_series(lore: LocalLore, cfg: Path,
                                                      threads: Threads) -> None:
    (cfg / "series" / "taken.toml").write_text(
        'title = "other"\nupstream_base = ""\ntargets = []\n[versions]\n'
        'v1 = "other-1@example.com"\n')
    before = (cfg / "series" / "taken.toml").read_bytes()
    rc, _out, err = run("series", "track", threads.v1.cover_msgid, "--name", "taken",
                        "--mirror", lore.midmask)
    assert rc == 2 and "does not list" in err, err
    assert (cfg / "series" / "taken.toml").read_bytes() == before
    db = Path(__import__("os").environ["PATCHFLOW_WORKSPACE"]) / "state.db"
    if db.exists():
        assert sqlite3.connect(db).execute("SELECT count(*) FROM versions").fetchone()[0] == 0


def test_series_am_writes_an_mbox_git_am_applies(lore: LocalLore, cfg: Path,
                                                 threads: Threads, tmp_path: Path) -> None:
    assert run("series", "track", threads.v2.cover_msgid, "--name", "fx", "-q",
               "--mirror", lore.midmask)[0] == 0
    rc, out, err = run("series", "am", "fx", "-v", "2", "-o", str(tmp_path / "out"),
                       "--format", "json")
    assert rc == 0, err
    mbox = Path(json.loads(out)["mbox"])
    assert mbox == tmp_path / "out" / "fx-v2.mbx" and json.loads(out)["patches"] == 3
    work = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(threads.repo), str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "checkout", "-q", "base"], check=True)
    subprocess.run(["git", "-C", str(work), "am", "-q", str(mbox)], check=True)
    log = subprocess.run(["git", "-C", str(work), "log", "--format=%s", "base..HEAD"],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    assert log[:3] == ["mm: batch reclaim_7", "mm: split reclaim_5", "mm: refactor reclaim_3"]
    rc, _out, err = run("series", "am", "fx", "-v", "7", "-o", str(tmp_path / "out"))
    assert rc == 2 and "v7 was never fetched" in err


def test_quiet_prints_results_only(lore: LocalLore, cfg: Path, threads: Threads) -> None:
    rc, out, err = run("-q", "series", "fetch", threads.v1.cover_msgid, "--name", "q",
                       "--mirror", lore.midmask)
    assert rc == 0 and err == "", err
    assert out.startswith("stored q v1") and "mbox: " in out
    rc, out, err = run("series", "fetch", threads.v1.cover_msgid, "--name", "q", "--quiet",
                       "--mirror", lore.midmask)
    assert rc == 0 and err == "" and out.startswith("unchanged q v1"), out + err
    assert "mbox: " not in out


def test_gate_and_mail_draft_of_a_tracked_series(lore_all: LocalLore, cfg: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipients b4 mbox found reach the gate's record and the reply-all draft."""
    lore = lore_all
    msgid = "20261101-fixture-v3-0-tr3@example.com"
    assert run("series", "track", msgid, "--name", "fx", "-q", "--mirror", lore.midmask)[0] == 0
    rc, out, err = run("series", "show", "fx", "-v", "3", "--format", "json")
    author = json.loads(out)["versions"][0]["author"]
    monkeypatch.setenv("PATCHFLOW_MIRROR", lore.midmask)  # the gate's check-newer reads it
    rc, out, err = run("gate", "fx", "--stage", "check-newer", "--out", str(tmp_path / "run"))
    assert rc == 0, out + err
    series = json.loads((tmp_path / "run" / "results.json").read_text())["series"]
    assert series["cc"] == [lorefixtures.LIST] and series["msgid"] == msgid
    rc, out, err = run("report", str(tmp_path / "run" / "results.json"), "--mail", "--out",
                       str(tmp_path / "rep"))
    assert rc == 0, err
    head = (tmp_path / "rep" / "mail.txt").read_text().split("\n\n", 1)[0].splitlines()
    assert head == ["From: Test User <user@example.com>", f"To: {author}",
                    f"Cc: {lorefixtures.LIST}",
                    "Subject: Re: [PATCH v3 0/3] mm: batch things in the fixture",
                    f"In-Reply-To: <{msgid}>", f"References: <{msgid}>"]
