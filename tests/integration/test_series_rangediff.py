"""``series diff`` is git's own range-diff: checked against ``git range-diff`` run on the
very commits the series was made from, with the threads fetched by b4 from a real
public-inbox on loopback."""

from __future__ import annotations

import email
import email.policy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchflow.demo.mirror import LocalLore
from tests import lorefixtures
from tests.lorefixtures import git

pytestmark = pytest.mark.integration

A = ("mm: refactor reclaim_3", 3, "\treturn x + 3 + 0;\n")
B = ("mm: split reclaim_5", 5, "\treturn x - 5;\n")
C = ("mm: batch reclaim_7", 7, "\treturn x * 7;\n")
# a new patch on the same file as C, which v3 drops: git reports one dropped, one added
D = ("mm: clamp reclaim_9 to the low watermark", 9,
     "\tif (x < 0)\n\t\treturn 0;\n\treturn x > 900 ? 900 : x + 9;\n")
C2 = ("mm: batch reclaim_7", 7, "\treturn x * 7 + 1;\n")
VERSIONS = {1: [A, B, C], 3: [A, B, D], 4: [B, A, D], 5: [A, B, C2, D]}


def with_base_commit(thread: lorefixtures.Thread, sha: str) -> lorefixtures.Thread:
    """The cover letter gets b4's ``base-commit:`` line."""
    msg = email.message_from_bytes(thread.messages[0], policy=email.policy.compat32)
    msg.set_payload(str(msg.get_payload()) + f"\nbase-commit: {sha}\n")
    return lorefixtures.Thread(thread.revision, thread.cover_msgid,
                               [msg.as_bytes(), *thread.messages[1:]])


class Threads:
    def __init__(self, root: Path) -> None:
        self.repo = lorefixtures.base_repo(root)
        self.base = git(self.repo, "rev-parse", "base").strip()
        self.t: dict[int, lorefixtures.Thread] = {}
        for rev, changes in VERSIONS.items():
            th = lorefixtures.make_thread(self.repo, root / "threads", rev, changes,
                                          f"2026-11-0{rev}T10:00:00+00:00", f"rd{rev}")
            self.t[rev] = with_base_commit(th, self.base)

    def branch(self, rev: int) -> str:
        return f"v{rev}-rd{rev}"


@pytest.fixture(scope="module")
def threads(tmp_path_factory: pytest.TempPathFactory) -> Threads:
    return Threads(tmp_path_factory.mktemp("rd-fixtures"))


@pytest.fixture(scope="module")
def lore(tmp_path_factory: pytest.TempPathFactory, threads: Threads) -> Iterator[LocalLore]:
    mirror = LocalLore(tmp_path_factory.mktemp("rd-lore") / "lore", "linux-mm",
                       lorefixtures.LIST)
    mirror.init()
    for th in threads.t.values():
        for raw in th.messages:
            mirror.inject(raw)
    mirror.start()
    yield mirror
    mirror.stop()


def run(*args: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "patchflow", *args], capture_output=True,
                          text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def fetched(lore: LocalLore, threads: Threads) -> str:
    for th in threads.t.values():
        rc, _out, err = run("series", "fetch", th.cover_msgid, "--name", "rd", "-q",
                            "--mirror", lore.midmask)
        assert rc == 0, err
    return "rd"


def git_pairs(threads: Threads, a: int, b: int) -> list[tuple[int | None, int | None, str]]:
    """What ``git range-diff`` says about the commits the threads were formatted from."""
    from patchflow.lore.rangediff import parse_range_diff

    text = git(threads.repo, "range-diff", "--no-color", f"base..{threads.branch(a)}",
               f"base..{threads.branch(b)}")
    return [(e.old, e.new, e.mark) for e in parse_range_diff(text)]


def our_pairs(name: str, a: int, b: int) -> tuple[list[tuple[int | None, int | None, str]],
                                                  dict[str, object]]:
    rc, out, err = run("series", "diff", name, f"v{a}", f"v{b}", "--format", "json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["schema"] == "patchflow.range-diff/2" and doc["engine"] == "git range-diff"
    return [(e["old"], e["new"], e["mark"]) for e in doc["entries"]], doc


@pytest.mark.parametrize(("a", "b", "expect"), [
    # v3 drops patch 3 (reclaim_7) and adds a new one on the same file (reclaim_9)
    (1, 3, [(1, 1, "="), (2, 2, "="), (3, None, "<"), (None, 3, ">")]),
    # reordered
    (3, 4, [(2, 1, "="), (1, 2, "="), (3, 3, "=")]),
    # a changed patch plus an added one
    (1, 5, [(1, 1, "="), (2, 2, "="), (3, 3, "!"), (None, 4, ">")]),
])
def test_pairing_is_gits(fetched: str, threads: Threads, a: int, b: int,
                         expect: list[tuple[int | None, int | None, str]]) -> None:
    ours, doc = our_pairs(fetched, a, b)
    assert ours == git_pairs(threads, a, b)
    entries = doc["entries"]
    assert isinstance(entries, list)
    for e in entries:  # each side's own subject, None on the side a patch is missing from
        assert (e["old_subject"] is None) == (e["old"] is None)
        assert (e["new_subject"] is None) == (e["new"] is None)
    assert sorted(ours, key=str) == sorted(expect, key=str)
    # the shared kernel repository does not hold the fixture's base: fake ancestors
    bases = doc["bases"]
    assert isinstance(bases, dict)
    assert {bases["old"]["kind"], bases["new"]["kind"]} == {"reconstructed"}
    assert bases["old"]["reconstructed"] == ["mm/vmscan.c"]


def test_text_output_keeps_the_marks(fetched: str) -> None:
    rc, out, err = run("series", "diff", fetched, "v1", "v5")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "  1: v1 =   1: v5  mm: refactor reclaim_3"
    assert "  3: v1 !   3: v5  mm: batch reclaim_7" in lines
    assert "  -: v1 >   4: v5  mm: clamp reclaim_9 to the low watermark" in lines
    assert "    -+\treturn x * 7;" in lines and "    ++\treturn x * 7 + 1;" in lines
    assert "pre-images rebuilt from the patches' context for mm/vmscan.c" in err
    rc, out, err = run("series", "diff", fetched, "v1", "v5", "-q")
    assert rc == 0 and err == ""


def test_real_base_commit_gives_the_same_pairing(fetched: str, threads: Threads) -> None:
    """With the base in the repository the throwaway one borrows objects from, each
    version is applied onto the cover letter's base-commit."""
    from patchflow.lore import series
    from patchflow.lore.rangediff import range_diff
    from patchflow.state import State
    from patchflow.workspace import Workspace

    ws = Workspace.open()
    st = State(ws.db_path)
    try:
        v1, v3 = (series.load_version(ws, st, fetched, r) for r in (1, 3))
        assert v1.row.base_commit == threads.base
        rd = range_diff(ws, (1, v1.row.base_commit, series.version_texts(v1)),
                        (3, v3.row.base_commit, series.version_texts(v3)),
                        objects_from=threads.repo / ".git")
    finally:
        st.close()
    assert (rd.old.kind, rd.new.kind) == ("base-commit", "base-commit")
    assert rd.old.commit == threads.base
    assert [(e.old, e.new, e.mark) for e in rd.entries] == git_pairs(threads, 1, 3)
    assert not list((ws.root / "tmp").iterdir())  # the throwaway repository is gone


def test_unknown_version_is_one_line_exit_2(fetched: str) -> None:
    rc, out, err = run("series", "diff", fetched, "v1", "v9")
    assert rc == 2 and err.strip().splitlines() == [
        "error: series 'rd' v9 was never fetched (fetched: v1, v3, v4, v5)"], err
