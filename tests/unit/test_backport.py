"""The backport engine on small synthetic repositories built by each test.

Each case builds an "upstream" line (where the patches are written) and a
"stable" branch that differs in a controlled way, then applies
``git format-patch`` output with the real git.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from patchflow import gitrepo
from patchflow.backport import check as bpc
from patchflow.backport import patches as bpp
from patchflow.backport import queue as bpq
from patchflow.backport import session as bps
from patchflow.backport.patches import Outcome

FUNCS = [f"static int func{i}(int x)\n{{\n\tint y = x + {i};\n\n\ty *= 2;\n\treturn y;\n}}\n"
         for i in range(8)]
BASE = "#include <linux/mm.h>\n\n" + "\n".join(FUNCS)


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def commit(repo: Path, text: str, msg: str, path: str = "mm/vmscan.c") -> str:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    sh(repo, "add", path)
    sh(repo, "commit", "-q", "-m", msg)
    return sh(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    sh(r, "init", "-q", "-b", "main")
    commit(r, BASE, "base")
    sh(r, "tag", "base")
    return r


def upstream_patch(repo: Path, tmp: Path, old: str, new: str, subject: str,
                   body: str = "Reclaim less.\n\nSigned-off-by: A U Thor <a@example.com>") -> Path:
    """A patch written on 'upstream' (branched from base), as format-patch output."""
    sh(repo, "checkout", "-q", "-B", "upstream", "base")
    text = (repo / "mm/vmscan.c").read_text()
    assert old in text
    commit(repo, text.replace(old, new, 1), f"{subject}\n\n{body}")
    out = tmp / "patches"
    names = sh(repo, "format-patch", "-1", "-o", str(out), "HEAD").split()
    sh(repo, "checkout", "-q", "main")
    return Path(names[0])


def stable(repo: Path, old: str, new: str, msg: str = "stable change") -> str:
    sh(repo, "checkout", "-q", "main")
    text = (repo / "mm/vmscan.c").read_text()
    assert old in text
    return commit(repo, text.replace(old, new, 1), msg)


def load(repo: Path, tmp: Path, patch: Path) -> list[bpp.PatchInput]:
    return bpp.load_patches(repo, patch, tmp / f"load-{patch.name}")


def session(repo: Path, tmp: Path, patches: list[bpp.PatchInput], name: str = "wt") -> bps.Session:
    base = sh(repo, "rev-parse", "main")
    return bps.start(series="demo", revision=1, target="stable", repo=repo,
                    worktree=tmp / name, base=base, base_ref="refs/heads/main", patches=patches,
                    known=bpc.known_in(repo, base))


def test_clean(repo: Path, tmp_path: Path) -> None:
    p = upstream_patch(repo, tmp_path, "y *= 2;\n\treturn y;\n}\n\nstatic int func3",
                       "y *= 3;\n\treturn y;\n}\n\nstatic int func3", "mm: triple")
    s = session(repo, tmp_path, load(repo, tmp_path, p))
    assert s.phase == "done"
    [r] = s.results
    assert r.outcome is Outcome.CLEAN and not r.offsets
    msg = sh(s.worktree, "log", "-1", "--format=%B")
    assert "Link: https://lore.kernel.org/r/" not in msg  # format-patch mail has no msgid
    assert "Signed-off-by: A U Thor" in msg


def test_offset_is_reported(repo: Path, tmp_path: Path) -> None:
    p = upstream_patch(repo, tmp_path, "x + 5;\n\n\ty *= 2;", "x + 5;\n\n\ty *= 5;", "mm: five")
    stable(repo, "#include <linux/mm.h>\n", "#include <linux/mm.h>\n#include <a.h>\n#include <b.h>\n")
    s = session(repo, tmp_path, load(repo, tmp_path, p))
    [r] = s.results
    assert r.outcome is Outcome.OFFSET
    assert r.offsets == ["mm/vmscan.c:46 (+2 lines) func5()"]


def test_already_present_by_patch_id_and_by_content(repo: Path, tmp_path: Path) -> None:
    p = upstream_patch(repo, tmp_path, "x + 6;\n\n\ty *= 2;", "x + 6;\n\n\ty *= 7;", "mm: seven")
    sh(repo, "cherry-pick", "upstream")
    s = session(repo, tmp_path, load(repo, tmp_path, p))
    assert s.results[0].outcome is Outcome.PRESENT
    assert "same patch-id" in s.results[0].detail
    # the same content reached stable in a squashed commit: found by reverse-apply
    sh(repo, "reset", "-q", "--hard", "base")
    text = (repo / "mm/vmscan.c").read_text().replace("x + 6;\n\n\ty *= 2;", "x + 6;\n\n\ty *= 7;")
    commit(repo, text.replace("x + 1;", "x + 11;"), "squashed stable update")
    s = session(repo, tmp_path, load(repo, tmp_path, p), name="wt2")
    assert s.results[0].outcome is Outcome.PRESENT
    assert s.results[0].detail == "content already in the tree"


def test_threeway_merge_is_flagged(repo: Path, tmp_path: Path) -> None:
    # stable changed a context line inside the hunk, not the changed line
    p = upstream_patch(repo, tmp_path, "x + 2;\n\n\ty *= 2;", "x + 2;\n\n\ty *= 9;", "mm: nine")
    stable(repo, "\tint y = x + 2;\n", "\tint y = x + 2; /* stable */\n")
    s = session(repo, tmp_path, load(repo, tmp_path, p))
    [r] = s.results
    assert r.outcome is Outcome.THREEWAY
    assert "[ patchflow: 3-way merged, context differs in mm/vmscan.c:func2() ]" in \
        sh(s.worktree, "log", "-1", "--format=%B")
    assert "y *= 9;" in (s.worktree / "mm/vmscan.c").read_text()


def test_fuzz_only_stops_for_review(repo: Path, tmp_path: Path) -> None:
    # written in another repository: no pre-image blobs here, so no 3-way
    other = tmp_path / "other"
    sh(tmp_path, "clone", "-q", str(repo), str(other))
    text = (other / "mm/vmscan.c").read_text()
    commit(other, text.replace("\tint y = x + 4;\n", "\tint y = x + 4; /* o */\n"), "other: note")
    text = (other / "mm/vmscan.c").read_text()
    commit(other, text.replace("x + 4; /* o */\n\n\ty *= 2;", "x + 4; /* o */\n\n\ty *= 44;"),
           "mm: forty-four")
    p = Path(sh(other, "format-patch", "-1", "-o", str(tmp_path / "p"), "HEAD"))
    s = session(repo, tmp_path, load(repo, tmp_path, p))
    [r] = s.results
    assert r.outcome is Outcome.FUZZ and s.phase == "review"
    assert r.detail == "applies only with -C1"
    s = bps.Session.load(s.worktree).continue_("checked the context by hand")
    assert s.phase == "done"
    assert "[ patchflow: applied with reduced context in mm/vmscan.c:func4(), reviewed ]" in \
        sh(s.worktree, "log", "-1", "--format=%B")


def conflict_case(repo: Path, tmp_path: Path) -> bps.Session:
    p1 = upstream_patch(repo, tmp_path, "x + 3;\n\n\ty *= 2;", "x + 3;\n\n\ty *= 30;",
                        "mm: thirty")
    p2 = upstream_patch(repo, tmp_path, "x + 7;\n\n\ty *= 2;", "x + 7;\n\n\ty *= 70;",
                        "mm: seventy")
    stable(repo, "x + 3;\n\n\ty *= 2;", "x + 3;\n\n\ty <<= 1;")
    patches = load(repo, tmp_path, p1) + [
        bpp.PatchInput(**{**vars(q), "idx": 2}) for q in load(repo, tmp_path, p2)]
    return session(repo, tmp_path, patches)


def test_conflict_report_continue_and_store(repo: Path, tmp_path: Path) -> None:
    s = conflict_case(repo, tmp_path)
    assert s.phase == "conflict" and len(s.results) == 1
    r = s.results[0]
    assert r.outcome is Outcome.CONFLICT
    assert r.files == ["mm/vmscan.c"]
    assert [str(x) for x in r.spots] == ["mm/vmscan.c:31:func3()"]
    assert gitrepo.am_in_progress(s.worktree)
    with pytest.raises(Exception, match="conflict markers left"):
        bps.Session.load(s.worktree).continue_("x")
    # the maintainer resolves: keep stable's shift, apply the new factor
    f = s.worktree / "mm/vmscan.c"
    text = f.read_text()
    start, end = text.index("<<<<<<< "), text.index(">>>>>>> ")
    f.write_text(text[:start] + "\ty *= 30;\n" + text[text.index("\n", end) + 1:])
    with pytest.raises(Exception, match="--note"):
        bps.Session.load(s.worktree).continue_(None)
    s = bps.Session.load(s.worktree).continue_("kept the multiply, stable has a shift")
    assert s.phase == "done"
    assert [r.outcome for r in s.results] == [Outcome.RESOLVED, Outcome.CLEAN]
    msg = sh(s.worktree, "log", "-1", "--format=%B", "HEAD~1")
    assert ("[ patchflow: resolved conflict in mm/vmscan.c:func3(): kept the multiply, stable "
            "has a shift ]") in msg
    dest = bpq.store(s, tmp_path / "config")
    assert (dest / "series").read_text().splitlines() == [
        "0001-mm-thirty.patch", "0002-mm-seventy.patch"]
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["base"] == s.base and manifest["patches"][0]["outcome"] == "resolved"
    assert sh(repo, "rev-parse", bpq.backport_ref("demo", 1, "stable")) == gitrepo.head(s.worktree)


def test_abort_restores_base(repo: Path, tmp_path: Path) -> None:
    s = conflict_case(repo, tmp_path)
    bps.Session.load(s.worktree).abort()
    assert not gitrepo.am_in_progress(s.worktree)
    assert gitrepo.head(s.worktree) == s.base
    assert bps.Session.load(s.worktree).phase == "aborted"


def test_start_refuses_over_unfinished_session(repo: Path, tmp_path: Path) -> None:
    s = conflict_case(repo, tmp_path)
    with pytest.raises(Exception, match="in progress"):
        session(repo, tmp_path, s.patches)


def test_kill_during_am_recovers(repo: Path, tmp_path: Path) -> None:
    """The on-disk state a `kill -9` during `git am` leaves: journal says
    applying, a rebase-apply dir blocks the next am."""
    s = conflict_case(repo, tmp_path)
    bps.Session.load(s.worktree).abort()
    s = session(repo, tmp_path, s.patches[1:], name="wt-kill")
    sh(s.worktree, "reset", "-q", "--hard", s.base)
    s.results.clear()
    s.phase, s.head = "applying", s.base
    s.save()
    # git am stopped half way (what the killed process left)
    subprocess.run(["git", "-C", str(s.worktree), "am", "--keep-cr", "/dev/null"],
                   capture_output=True)
    (gitrepo.git_path(s.worktree, "rebase-apply")).mkdir(exist_ok=True)
    blocked = subprocess.run(["git", "-C", str(s.worktree), "am", str(s.patches[0].path)],
                             capture_output=True, text=True)
    assert blocked.returncode != 0
    s2 = bps.Session.load(s.worktree).run()
    assert s2.recovered and s2.phase == "done"
    assert [r.outcome for r in s2.results] == [Outcome.CLEAN]
    assert not gitrepo.am_in_progress(s.worktree)


def test_rebase_reuses_resolution_with_rerere(repo: Path, tmp_path: Path) -> None:
    s = conflict_case(repo, tmp_path)
    f = s.worktree / "mm/vmscan.c"
    text = f.read_text()
    start, end = text.index("<<<<<<< "), text.index(">>>>>>> ")
    f.write_text(text[:start] + "\ty *= 30;\n" + text[text.index("\n", end) + 1:])
    s = bps.Session.load(s.worktree).continue_("kept the multiply")
    config = tmp_path / "config"
    bpq.store(s, config)
    manifest = bpq.read_manifest(config, "demo", "stable")
    assert manifest is not None
    # the stable branch moves: a line in the stored patch's context changes
    # (one untouched line between it and the conflict, so the conflict stays the same)
    moved = stable(repo, "\ty <<= 1;\n\treturn y;\n}\n", "\ty <<= 1;\n\treturn y;\n} /* end */\n",
                   "stable: mark the end of func3")
    stale = bpq.check_stored(repo, manifest, bpq.stored_patches(config, "demo", "stable"), moved)
    assert [x.patch for x in stale] == ["0001-mm-thirty.patch"]
    assert stale[0].moved == ("mm/vmscan.c:33 func3()",)
    # re-apply the series: rerere replays the recorded resolution
    s2 = bps.start(series="demo", revision=1, target="stable", repo=repo,
                  worktree=tmp_path / "wt-rebase", base=moved, base_ref="refs/heads/main",
                  patches=s.patches, notes=s.notes, previous=manifest)
    assert s2.phase == "done"
    assert [r.outcome for r in s2.results] == [Outcome.RESOLVED, Outcome.CLEAN]
    assert s2.results[0].detail == "kept the multiply"
    text = (s2.worktree / "mm/vmscan.c").read_text()
    assert "\ty *= 30;\n\treturn y;\n} /* end */" in text and "<<<<<<<" not in text
    report = bpq.range_diff_report(repo, manifest, s2)
    assert report.new_conflicts == () and report.now_clean == ()
    assert "mm: thirty" in report.range_diff


def test_check_without_worktree(repo: Path, tmp_path: Path) -> None:
    p1 = upstream_patch(repo, tmp_path, "x + 3;\n\n\ty *= 2;", "x + 3;\n\n\ty *= 30;", "mm: a")
    p2 = upstream_patch(repo, tmp_path, "x + 2;\n\n\ty *= 2;", "x + 2;\n\n\ty *= 9;", "mm: b")
    stable(repo, "x + 3;\n\n\ty *= 2;", "x + 3;\n\n\ty <<= 1;")
    stable(repo, "\tint y = x + 2;\n", "\tint y = x + 2; /* stable */\n")
    patches = load(repo, tmp_path, p1) + [
        bpp.PatchInput(**{**vars(q), "idx": 2}) for q in load(repo, tmp_path, p2)]
    base = sh(repo, "rev-parse", "main")
    results = bpc.check_series(repo, base, patches, bpc.known_in(repo, base))
    assert [r.outcome for r in results] == [Outcome.CONFLICT, Outcome.THREEWAY]
    # the target's line, the same one the real run reports (test_conflict_report_continue_and_store)
    assert [str(x) for x in results[0].spots] == ["mm/vmscan.c:31:func3()"]
    assert sh(repo, "status", "--porcelain") == ""


@pytest.mark.parametrize("lines,index,expected", [
    (["static int foo(int x)", "{", "\treturn x;", "}"], 2, "foo"),
    (["static unsigned int shrink_folio_list(struct list_head *l,", "\t\tint y)", "{",
      "\tint a;", "out:", "\treturn a;"], 5, "shrink_folio_list"),
    (["int a(void)", "{", "}", "", "struct s {", "\tint x;"], 5, ""),
    (["extern int x(void);", "\tfoo();"], 1, ""),
])
def test_enclosing_function(lines: list[str], index: int, expected: str) -> None:
    assert bpp.enclosing_function(lines, index) == expected


def test_backport_message_upstream_and_link(tmp_path: Path) -> None:
    p = bpp.PatchInput(1, tmp_path, "mm: x", "m@id", "0" * 40,
                      "mm: x\n\nBody.\n\nSigned-off-by: A <a@b>\n", "", upstream=None)
    assert bpp.backport_message(p, "resolved conflict in mm/vmscan.c:f()") == (
        "mm: x\n\nBody.\n\nSigned-off-by: A <a@b>\nLink: https://lore.kernel.org/r/m@id\n"
        "[ patchflow: resolved conflict in mm/vmscan.c:f() ]\n")
    up = bpp.PatchInput(**{**vars(p), "upstream": "a" * 40})
    assert bpp.backport_message(up, "").startswith(f"mm: x\n\n[ Upstream commit {'a' * 40} ]\n\n")


def test_cli_backport_check_continue_status(tmp_path: Path, repo: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI glue end to end on a synthetic 'stable' remote (git provider)."""
    from dataclasses import dataclass

    from click.testing import CliRunner

    import patchflow.lore.series
    from patchflow.cli import cli
    from patchflow.errors import NotFound

    p1 = upstream_patch(repo, tmp_path, "x + 3;\n\n\ty *= 2;", "x + 3;\n\n\ty *= 30;", "mm: a")
    stable(repo, "x + 3;\n\n\ty *= 2;", "x + 3;\n\n\ty <<= 1;")
    cfg = tmp_path / "cfg"
    (cfg / "targets").mkdir(parents=True)
    (cfg / "series").mkdir()
    (cfg / "targets/local.toml").write_text(
        f'arch = "x86_64"\nkconfig = []\n[git]\nremote = "{repo}"\nbranch = "main"\n')

    @dataclass(frozen=True)
    class Fetched:
        series: str
        revision: int
        mbox_path: Path

    def load_version(ws: object, state: object, series: str, revision: int | None) -> Fetched:
        if revision not in (None, 1):
            raise NotFound(f"series {series!r} v{revision} was never fetched")
        return Fetched(series, 1, p1)

    monkeypatch.setattr(patchflow.lore.series, "load_version", load_version)
    monkeypatch.setenv("PATCHFLOW_CACHE", str(tmp_path / "cache"))
    base = ["-w", str(tmp_path / "ws"), "-C", str(cfg)]
    runner = CliRunner()
    res = runner.invoke(cli, [*base, "tree", "prepare", "local", "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "patchflow.trees/1" and doc["trees"][0]["branch"] == "main"
    res = runner.invoke(cli, [*base, "backport", "demo", "-t", "local", "-v", "2"])
    # a user error: one line on stderr, exit 2, no traceback
    assert res.exit_code == 2 and res.exception is None or isinstance(res.exception, SystemExit)
    assert "v2 was never fetched" in res.output
    res = runner.invoke(cli, [*base, "backport", "demo", "-t", "local", "--check",
                              "--format", "json"])
    assert res.exit_code == 1
    check = json.loads(res.stdout)
    assert check["targets"]["local"][0]["outcome"] == "conflict"
    # --check and the real run report the same (target) line
    assert check["targets"]["local"][0]["spots"][0]["line"] == 31
    res = runner.invoke(cli, [*base, "backport", "demo", "-t", "local"])
    assert res.exit_code == 1 and ("conflict in patch 1 (mm: a): mm/vmscan.c:31:func3() "
                                   "(target line numbers)") in res.output
    wt = tmp_path / "ws/worktrees/backport/demo--local"
    text = (wt / "mm/vmscan.c").read_text()
    start, end = text.index("<<<<<<< "), text.index(">>>>>>> ")
    (wt / "mm/vmscan.c").write_text(text[:start] + "\ty *= 30;\n" +
                                    text[text.index("\n", end) + 1:])
    res = runner.invoke(cli, [*base, "backport", "demo", "--continue", "--note", "kept it"])
    assert res.exit_code == 0, res.output
    assert (cfg / "series/demo/backports/local/0001-mm-a.patch").exists()
    res = runner.invoke(cli, [*base, "status", "demo", "--format", "json"])
    assert [(r["revision"], r["target"], r["state"]) for r in json.loads(res.stdout)["rows"]
            ] == [(1, "local", "done")]
    res = runner.invoke(cli, [*base, "status", "nosuch"])
    assert res.exit_code == 2 and "unknown series 'nosuch'" in res.output


def _written_elsewhere(repo: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A two-patch series written in a clone: the repository has none of its blobs."""
    other = tmp_path / "elsewhere"
    sh(tmp_path, "clone", "-q", str(repo), str(other))
    text = (other / "mm/vmscan.c").read_text()
    commit(other, text.replace("\tint y = x + 5;\n", "\tint y = x + 5; /* up */\n"),
           "upstream: a comment")
    sh(other, "tag", "series-base")
    text = (other / "mm/vmscan.c").read_text()
    commit(other, text.replace("\tint y = x + 3;\n", "\tint y = x + 33;\n"), "mm: thirty-three")
    text = (other / "mm/vmscan.c").read_text()
    commit(other, text.replace("x + 6;\n\n\ty *= 2;", "x + 6;\n\n\ty *= 60;"), "mm: sixty")
    out = tmp_path / "series"
    sh(other, "format-patch", "-q", "-o", str(out), "series-base..HEAD")
    mbox = tmp_path / "series.mbox"
    mbox.write_bytes(b"".join(p.read_bytes() for p in sorted(out.iterdir())))
    return other, mbox


def test_conflict_spot_without_preimage_blobs(repo: Path, tmp_path: Path) -> None:
    """The state that broke the fresh-machine run: whether the repository holds the
    series' pre-image blobs changed the reported conflict location (issue 10)."""
    other, mbox = _written_elsewhere(repo, tmp_path)
    stable(repo, "\tint y = x + 3;\n", "\tint y = x + 3 + 0;\n")
    patches = bpp.load_patches(repo, mbox, tmp_path / "load")
    assert bpc.ensure_preimages(repo, patches)  # the base blob is not here: no 3-way
    without = session(repo, tmp_path, patches, name="wt-without")
    assert without.phase == "conflict"
    spots_without = [str(x) for x in without.results[0].spots]
    bps.Session.load(without.worktree).abort()

    sh(repo, "fetch", "-q", str(other), "refs/tags/series-base:refs/tags/series-base")
    assert bpc.ensure_preimages(repo, patches) == {}
    # the second patch's pre-image was never in any repository: built from the first
    pre = bpc.preimages(patches[1].diff)["mm/vmscan.c"]
    assert gitrepo.blob_sha(repo, pre) is not None
    with_ = session(repo, tmp_path, patches, name="wt-with")
    assert with_.phase == "conflict" and with_.results[0].markers
    assert [str(x) for x in with_.results[0].spots] == spots_without == [
        "mm/vmscan.c:29:func3()"]
