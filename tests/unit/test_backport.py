"""The backport engine on small synthetic repositories built by each test.

Each case builds an "upstream" line (where the patches are written) and a
"stable" branch that differs in a controlled way, then applies
``git format-patch`` output with the real git.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from patchflow import gitrepo
from patchflow.backport import buildcheck as bpb
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


def test_skip_records_and_goes_on(repo: Path, tmp_path: Path) -> None:
    from patchflow.errors import UserError

    s = conflict_case(repo, tmp_path)
    with pytest.raises(UserError, match="--skip --note"):
        bps.Session.load(s.worktree).skip("  ")
    s = bps.Session.load(s.worktree).skip("6.1 has no such code")
    assert s.phase == "done" and not gitrepo.am_in_progress(s.worktree)
    assert [(r.outcome, r.detail) for r in s.results] == [
        (Outcome.SKIPPED, "6.1 has no such code"), (Outcome.CLEAN, "")]
    assert sh(s.worktree, "log", "--format=%s", f"{s.base}..HEAD") == "mm: seventy"
    with pytest.raises(UserError, match="nothing to skip"):
        bps.Session.load(s.worktree).skip("again")
    dest = bpq.store(s, tmp_path / "config")
    assert (dest / "series").read_text().split() == ["0001-mm-seventy.patch"]
    manifest = bpq.read_manifest(tmp_path / "config", "demo", "stable")
    assert manifest is not None and manifest["format"] == bpq.MANIFEST_FORMAT
    assert bpq.skips_of(manifest) == [
        bpq.Skip(1, "mm: thirty", s.results[0].patch_id, "6.1 has no such code")]
    # the next backport of the series skips it again, with the same reason
    again = bps.start(series="demo", revision=1, target="stable", repo=repo,
                      worktree=s.worktree, base=s.base, base_ref="refs/heads/main",
                      patches=s.patches, skips={k.patch_id: k.note for k in bpq.skips_of(manifest)})
    assert again.phase == "done" and again.results[0].outcome is Outcome.SKIPPED


def test_manifest_formats_read_and_refused(tmp_path: Path) -> None:
    from patchflow.errors import StateError

    d = bpq.queue_dir(tmp_path, "demo", "stable")
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"series": "demo", "patches": []}))
    old = bpq.read_manifest(tmp_path, "demo", "stable")  # format 1: no key, no skips
    assert old is not None and bpq.skips_of(old) == []
    (d / "manifest.json").write_text(json.dumps({"format": 99, "series": "demo"}))
    with pytest.raises(StateError, match="format 99 is newer"):
        bpq.read_manifest(tmp_path, "demo", "stable")


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
    # a queue committed on another machine: its head was never in this repository
    elsewhere = {**manifest, "head": "0123456789abcdef0123456789abcdef01234567"}
    report = bpq.range_diff_report(repo, elsewhere, s2)
    assert report.range_diff == ("no range-diff: the stored queue's commit 0123456789ab is not "
                                 "in this repository (stored on another machine)\n")


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
    # the archive's public form is configurable; a posting is linked once
    mirror = bpp.backport_message(p, "", "https://lists.example.org/r/%s")
    assert mirror.endswith("Signed-off-by: A <a@b>\nLink: https://lists.example.org/r/m@id\n")
    again = bpp.PatchInput(**{**vars(p), "message": mirror})
    assert bpp.backport_message(again, "", "https://lists.example.org/r/%s") == mirror
    # stable_kernel_rules: "commit <sha40> upstream." is the first body line, and no Link
    up = bpp.PatchInput(**{**vars(p), "upstream": "a" * 40})
    assert bpp.backport_message(up, "3-way merged") == (
        f"mm: x\n\ncommit {'a' * 40} upstream.\n\nBody.\n\nSigned-off-by: A <a@b>\n"
        "[ patchflow: 3-way merged ]\n")
    # a 6.12 stable commit taken to 6.1: its own upstream line (either form) moves to the top,
    # once; a cherry-pick line stays
    body = (f"mm: x\n\nBody.\n\n[ Upstream commit {'b' * 40} ]\n\n(cherry picked from commit "
            f"{'b' * 40})\nSigned-off-by: A <a@b>\n")
    mail = tmp_path / "m.patch"
    mail.write_text(f"From {'c' * 40} Mon Sep 17 00:00:00 2001\nFrom: A <a@b>\n"
                    "Subject: [PATCH 6.12] mm: x\nMessage-Id: <m@id>\n\n" + body.split("\n\n", 1)[1]
                    + "---\n f | 1 +\n\ndiff --git a/f b/f\nindex 0000000..1111111 100644\n"
                    "--- a/f\n+++ b/f\n@@ -1 +1,2 @@\n a\n+b\n")
    [stable] = bpp.load_patches(tmp_path, mail, tmp_path / "load")
    assert stable.upstream == "b" * 40
    msg = bpp.backport_message(stable, "")
    assert msg.startswith(f"mm: x\n\ncommit {'b' * 40} upstream.\n\nBody.\n\n(cherry picked")
    assert msg.count("b" * 40) == 2 and "Upstream commit" not in msg and "Link:" not in msg


def test_conflict_line_is_the_targets_in_check_and_run(repo: Path, tmp_path: Path) -> None:
    """One line per conflict: --check and the real run name the same target line, and say so."""
    s = conflict_case(repo, tmp_path)
    [checked, _] = bpc.check_series(repo, s.base, s.patches, bpc.known_in(repo, s.base))
    assert checked.outcome is Outcome.CONFLICT
    assert [x.where() for x in checked.spots] == [x.where() for x in s.results[0].spots] == [
        "mm/vmscan.c:31 (target) in func3()"]
    # a file the target does not have: the patch's own line, and it says so
    assert bpp.ConflictSpot("mm/new.c", 12, "f", side="patch").where() == "mm/new.c:12 (patch) in f()"
    # the line really is the target's: the hunk's change goes there in the stable file
    assert sh(s.worktree, "show", "HEAD:mm/vmscan.c").splitlines()[30] == "\ty <<= 1;"


def cli_setup(tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
              ) -> tuple[Any, list[str], Path]:
    """A synthetic 'stable' remote as a git-provider target, a one-patch series that
    conflicts on it, and fetching faked away: (runner, global args, config dir)."""
    from dataclasses import dataclass

    from click.testing import CliRunner

    import patchflow.lore.series
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
    return CliRunner(), ["-w", str(tmp_path / "ws"), "-C", str(cfg)], cfg


def test_cli_backport_check_continue_status(tmp_path: Path, repo: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI glue end to end on a synthetic 'stable' remote (git provider)."""
    from patchflow.cli import cli

    runner, base, cfg = cli_setup(tmp_path, repo, monkeypatch)
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
    # --check and the real run report the same (target) line, and say whose line it is
    assert check["targets"]["local"][0]["spots"][0]["line"] == 31
    assert check["targets"]["local"][0]["spots"][0]["side"] == "target"
    res = runner.invoke(cli, [*base, "backport", "demo", "-t", "local", "--check"])
    assert res.exit_code == 1 and "mm/vmscan.c:31 (target) in func3()" in res.output
    res = runner.invoke(cli, [*base, "backport", "demo", "-t", "local"])
    assert res.exit_code == 1 and ("conflict in patch 1 (mm: a): mm/vmscan.c:31 (target) in "
                                   "func3()") in res.output
    assert "        mm/vmscan.c:31 (target) in func3()" in res.output
    wt = tmp_path / "ws/worktrees/backport/demo--local"
    text = (wt / "mm/vmscan.c").read_text()
    start, end = text.index("<<<<<<< "), text.index(">>>>>>> ")
    (wt / "mm/vmscan.c").write_text(text[:start] + "\ty *= 30;\n" +
                                    text[text.index("\n", end) + 1:])
    res = runner.invoke(cli, [*base, "backport", "demo", "--continue", "--note", "kept it"])
    assert res.exit_code == 0, res.output
    assert (cfg / "series/demo/backports/local/0001-mm-a.patch").exists()
    mpath = cfg / "series/demo/backports/local/manifest.json"
    first = json.loads(mpath.read_text())["patches"]
    assert first[0]["outcome"] == "resolved" and first[0]["note"].endswith("kept it")
    assert first[0]["files"] == ["mm/vmscan.c"]
    # a second run re-applies the stored queue (the resolved patch applies "clean" from
    # its file): the manifest keeps how each patch first went in, never loses the note
    res = runner.invoke(cli, [*base, "backport", "demo", "-t", "local", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["results"][0]["details"]["source"] == "stored queue"
    again = json.loads(mpath.read_text())["patches"]
    keep = ("idx", "patch_id", "outcome", "detail", "note", "spots", "files", "source_msgid")
    assert [{k: p[k] for k in keep} for p in again] == [{k: p[k] for k in keep} for p in first]
    res = runner.invoke(cli, [*base, "status", "demo", "--format", "json"])
    assert [(r["revision"], r["target"], r["state"]) for r in json.loads(res.stdout)["rows"]
            ] == [(1, "local", "done")]
    res = runner.invoke(cli, [*base, "status", "nosuch"])
    assert res.exit_code == 2 and "unknown series 'nosuch'" in res.output


def test_cli_skip_status_and_build_check_refusal(tmp_path: Path, repo: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from patchflow.cli import cli

    runner, base, cfg = cli_setup(tmp_path, repo, monkeypatch)
    assert runner.invoke(cli, [*base, "tree", "prepare", "local"]).exit_code == 0
    # no build of the target yet: one line naming it and what to run, exit 2, nothing started
    res = runner.invoke(cli, [*base, "backport", "demo", "-t", "local", "--build-check"])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)
    assert "--build-check: local has no prepared build dir" in res.output
    assert "patchflow build SERIES --target local --variant base" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "ws/worktrees/backport/demo--local").exists()
    res = runner.invoke(cli, [*base, "backport", "demo", "-t", "local"])
    assert res.exit_code == 1 and "--skip --target local --note" in res.output
    res = runner.invoke(cli, [*base, "backport", "demo", "-t", "local", "--skip"])
    assert res.exit_code == 2 and "--skip --note 'WHY'" in res.output
    res = runner.invoke(cli, [*base, "backport", "demo", "-t", "local", "--skip", "--note",
                              "stable already shifts instead"])
    assert res.exit_code == 0, res.output
    assert "WARN applied with changes: 1 skipped" in res.output
    assert "[1] skipped         mm: a  (stable already shifts instead)" in res.output
    manifest = json.loads((cfg / "series/demo/backports/local/manifest.json").read_text())
    assert [k["note"] for k in manifest["skipped"]] == ["stable already shifts instead"]
    res = runner.invoke(cli, [*base, "status", "demo"])
    assert "demo v1 local: skipped patch 1 (mm: a): stable already shifts instead" in res.output
    res = runner.invoke(cli, [*base, "status", "demo", "--format", "json"])
    assert json.loads(res.stdout)["rows"][0]["skipped"] == [
        "patch 1 (mm: a): stable already shifts instead"]
    # a second run re-applies the stored queue: the skip is carried, never lost
    res = runner.invoke(cli, [*base, "backport", "demo", "-t", "local", "--format", "json"])
    [doc] = json.loads(res.stdout)["results"]
    assert doc["status"] == "warn" and doc["details"]["source"] == "stored queue"
    assert doc["summary"] == "applied with changes: 1 skipped"
    assert [k["note"] for k in doc["details"]["skipped"]] == ["stable already shifts instead"]
    manifest = json.loads((cfg / "series/demo/backports/local/manifest.json").read_text())
    assert len(manifest["skipped"]) == 1


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


# the form kbuild 6.1 writes (cmd_, objtool chained after the compiler, '#' escaped), shortened
SRC = "/cache/trees/src/linux-6.1.y/base"
CMD_61 = (
    f"cmd_kernel/ptrace.o := ccache gcc -Wp,-MMD,kernel/.ptrace.o.d -nostdinc -I{SRC}/arch/x86/"
    f"include -I./arch/x86/include/generated -I{SRC}/include -I./include -include {SRC}/include/"
    f"linux/kconfig.h -D__KERNEL__ -fmacro-prefix-map={SRC}/= -I{SRC} "
    "-DKBUILD_MODFILE='\"kernel/ptrace\"'"
    " -DKBUILD_BASENAME='\"ptrace\"' -DKBUILD_MODNAME='\"ptrace\"' -DX='\"$(pound)$$\"'"
    f" -c -o kernel/ptrace.o {SRC}/kernel/ptrace.c ; ./tools/objtool/objtool --hacks=jump_label"
    " --mcount --orc --retpoline --uaccess kernel/ptrace.o\n\nsource_kernel/ptrace.o := ...\n")


def test_build_check_argv(tmp_path: Path) -> None:
    """The recorded command, made to compile the backport worktree into a scratch dir."""
    build = tmp_path / "obj"
    (build / "kernel").mkdir(parents=True)
    (build / "kernel/.ptrace.o.cmd").write_text(CMD_61)
    assert bpb.objects_for(["kernel/ptrace.c", "include/linux/sched.h", "arch/x86/entry/a.S",
                            "kernel/ptrace.c"]) == ["kernel/ptrace.o", "arch/x86/entry/a.o"]
    assert bpb.recorded_command(build, "kernel/signal.o") is None  # not built by this config
    cmd = bpb.recorded_command(build, "kernel/ptrace.o")
    assert cmd is not None and "-DX='\"#$\"'" in cmd
    tree = bpb.BuildTree(build, Path(SRC))
    wt, out = Path("/ws/worktrees/backport/s--linux-6.1.y"), Path("/tmp/out")
    argv = bpb.compile_argv(cmd, tree, wt, "kernel/ptrace.o", out)
    assert argv[:4] == ["ccache", "gcc", "-Wp,-MMD,/tmp/out/.ptrace.o.d", "-nostdinc"]
    assert argv[-4:] == ["-c", "-o", "/tmp/out/ptrace.o", f"{wt}/kernel/ptrace.c"]
    assert f"-I{wt}/include" in argv and "-I./include" in argv  # generated headers: the build dir's
    assert f"-fmacro-prefix-map={wt}/=" in argv and '-DKBUILD_MODNAME="ptrace"' in argv
    assert f"-I{wt}" in argv
    assert not any(SRC in a or "objtool" in a for a in argv)


def test_build_check_errors_name_the_file_and_line() -> None:
    wt = Path("/ws/wt")
    # verbatim gcc 12 output, the worktree's absolute path first
    out = ("/ws/wt/kernel/ptrace.c: In function 'ptrace_request':\n"
           "/ws/wt/kernel/ptrace.c:1090:36: error: 'PF_USER_WORKER' undeclared (first use in "
           "this function); did you mean 'PF_IO_WORKER'?\n"
           "/ws/wt/kernel/ptrace.c:1090:36: note: each undeclared identifier is reported only once\n")
    assert bpb.errors_of(out, wt) == [
        "kernel/ptrace.c:1090: error: 'PF_USER_WORKER' undeclared (first use in this function); "
        "did you mean 'PF_IO_WORKER'?"]


def test_build_check_without_a_build_dir(tmp_path: Path) -> None:
    from patchflow.errors import UserError

    with pytest.raises(UserError, match="linux-6.1.y has no prepared build dir .* run "
                                        "`patchflow build SERIES --target linux-6.1.y "
                                        "--variant base` first"):
        bpb.prepared(tmp_path / "nosuch", "linux-6.1.y")


def test_lore_link_setting(tmp_path: Path) -> None:
    from patchflow.config import ConfigError, load_workspace_config

    path = tmp_path / "config.toml"
    path.write_text('[lore]\nmidmask = "http://127.0.0.1:8080/linux-mm/%s"\n'
                    'link = "https://lists.example.org/r/%s"\n')
    assert load_workspace_config(path).lore.link == "https://lists.example.org/r/%s"
    path.write_text('[lore]\nlink = "http://127.0.0.1:8080/linux-mm/"\n')
    with pytest.raises(ConfigError, match="lore.link"):
        load_workspace_config(path)
    assert load_workspace_config(tmp_path / "none.toml").lore.link == bpp.LORE_LINK


def test_journal_of_an_older_patchflow_still_loads(repo: Path, tmp_path: Path) -> None:
    """A session stopped by the previous release (no link, build_dir, skips) goes on."""
    s = conflict_case(repo, tmp_path)
    path = bps.Session.journal_path(s.worktree)
    d = json.loads(path.read_text())
    for key in ("link", "build_dir", "skips"):
        del d[key]
    for r in d["results"]:
        for key in ("build", "built", "build_errors", "build_seconds"):
            del r[key]
    path.write_text(json.dumps(d))
    old = bps.Session.load(s.worktree)
    assert (old.link, old.build_dir, old.skips) == (bpp.LORE_LINK, "", {})
    assert old.skip("not for this branch").phase == "done"
