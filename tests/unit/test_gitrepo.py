"""gitrepo argv builders, worktree helpers, and the tree module on small repositories."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from patchflow import gitrepo
from patchflow.errors import NotFound, WorkspaceError
from patchflow.trees import repo as tree
from patchflow.workspace import Workspace


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_argv_builders() -> None:
    p = Path("/x/0001.patch")
    assert gitrepo.apply_check_argv(p) == ["apply", "--check", "--verbose", "/x/0001.patch"]
    assert gitrepo.apply_check_argv(p, cached=True, reverse=True, context=1) == [
        "apply", "--check", "--verbose", "--cached", "--reverse", "-C1", "/x/0001.patch"]
    assert gitrepo.am_argv([p], three_way=True) == [
        "am", "--keep-cr", "--rerere-autoupdate", "-3", "/x/0001.patch"]
    assert gitrepo.worktree_add_argv(Path("/w"), "v1") == [
        "worktree", "add", "--detach", "--force", "/w", "v1"]
    assert gitrepo.format_patch_argv("a", "b", Path("/o")) == [
        "format-patch", "--zero-commit", "--no-signature", "--no-stat", "-N", "-o", "/o", "a..b"]
    assert gitrepo.range_diff_argv("a", "b", "c", "d") == [
        "range-diff", "--no-color", "a..b", "c..d"]
    assert tree.apt_download_argv("linux-source-6.1", "6.1.192-2") == [
        "apt-get", "download", "linux-source-6.1=6.1.192-2"]


@pytest.mark.parametrize("text,expected", [
    ("VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\nEXTRAVERSION =\nNAME = Baby Opossum Posse\n",
     "6.12.117"),
    ("VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 0\nEXTRAVERSION = -rc3\n", "6.1-rc3"),
])
def test_makefile_version(text: str, expected: str) -> None:
    assert tree.makefile_version(text) == expected


def test_debian_helpers() -> None:
    assert tree.upstream_version("6.12.117-1~deb12u1") == "6.12.117"
    who = tree.changelog_identity(
        "linux-6.12 (6.12.117-1~deb12u1) bookworm-security; urgency=high\n\n  * Rebuild\n\n"
        " -- Ben Hutchings <benh@debian.org>  Sat, 14 Nov 2026 13:56:01 +0100\n")
    assert who == gitrepo.Identity("Ben Hutchings", "benh@debian.org", "@1794660961 +0100")


def test_commit_directory_is_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / ".gitignore").write_text("/*\n")  # what Debian's tarball ends with
    (src / "Makefile").write_text("VERSION = 6\n")
    who = gitrepo.Identity("D", "d@example.com", "@1700000000 +0000")
    shas = []
    for n in (1, 2):
        repo = tmp_path / f"r{n}.git"
        gitrepo.init_bare(repo)
        shas.append(gitrepo.commit_directory(repo, src, parent=None, message="Linux 6\n",
                                             who=who, index=tmp_path / f"idx{n}"))
    assert shas[0] == shas[1]
    assert sh(tmp_path / "r1.git", "ls-tree", "--name-only", shas[0]).split() == [
        ".gitignore", "Makefile"]


@pytest.fixture
def stable(tmp_path: Path) -> Path:
    """A stand-in for a stable remote: branch linux-9.9.y with two tagged releases."""
    r = tmp_path / "stable"
    r.mkdir()
    sh(r, "init", "-q", "-b", "linux-9.9.y")
    for sub in (1, 2):
        (r / "Makefile").write_text(f"VERSION = 9\nPATCHLEVEL = 9\nSUBLEVEL = {sub}\n"
                                    "EXTRAVERSION =\n")
        (r / "big.c").write_text("int x;\n" * 100)
        (r / f"file{sub}.c").write_text("int y;\n")
        sh(r, "add", "-A")
        sh(r, "commit", "-q", "-m", f"Linux 9.9.{sub}")
        sh(r, "tag", f"v9.9.{sub}")
    return r


def _ws(tmp_path: Path, remote: str, branch: str = "linux-9.9.y") -> Workspace:
    cfg = tmp_path / "cfg"
    (cfg / "targets").mkdir(parents=True)
    (cfg / "series").mkdir()
    (cfg / "targets/local.toml").write_text(
        f'arch = "x86_64"\nkconfig = []\n[git]\nremote = "{remote}"\nbranch = "{branch}"\n')
    return Workspace.open(tmp_path / "ws", cfg, tmp_path / "cache")


def test_git_provider_and_source_worktree(tmp_path: Path, stable: Path) -> None:
    ws = _ws(tmp_path, str(stable))
    t = tree.prepare_tree(ws, "local", upto="9.9.1")
    assert t.release == "9.9.1" and t.branch == "linux-9.9.y"
    t = tree.prepare_tree(ws, "local")
    assert t.release == "9.9.2"
    assert tree.open_tree(ws, "local").head == t.head
    wt = tree.source_worktree(ws, "local", "base")
    assert wt == tree.source_worktree(ws, "local", "base")
    assert (wt / "file2.c").exists()
    # checkout to the previous release rewrites only what differs
    past = time.time() - 3600
    os.utime(wt / "big.c", (past, past))
    tree.checkout(wt, "v9.9.1")
    assert not (wt / "file2.c").exists()
    assert (wt / "big.c").stat().st_mtime == pytest.approx(past)
    (wt / "big.c").write_text("dirty\n")
    with pytest.raises(WorkspaceError, match="local changes"):
        tree.checkout(wt, "v9.9.2")
    sh(wt, "checkout", "big.c")
    (Path(sh(wt, "rev-parse", "--absolute-git-dir")) / "index.lock").write_text("")
    with pytest.raises(WorkspaceError, match="locked"):
        tree.checkout(wt, "v9.9.2")


def test_missing_branch_and_remote(tmp_path: Path, stable: Path) -> None:
    with pytest.raises(NotFound, match="branch 'linux-0.1.y' does not exist"):
        tree.prepare_tree(_ws(tmp_path / "a", str(stable), "linux-0.1.y"), "local")
    with pytest.raises(NotFound, match="not reachable or not a repository"):
        tree.prepare_tree(_ws(tmp_path / "b", str(tmp_path / "nowhere")), "local")
    with pytest.raises(NotFound, match="not prepared"):
        tree.open_tree(_ws(tmp_path / "c", str(stable)), "local")


PATCH = """diff --git a/mm/f.c b/mm/f.c
--- a/mm/f.c
+++ b/mm/f.c
@@ -1 +1 @@
-old
+new
"""


@pytest.mark.parametrize("where", ["plain", "inside-work-tree", "same-path-in-outer-tree"])
def test_apply_to_directory_inside_a_work_tree(tmp_path: Path, where: str) -> None:
    """The state that broke the demo's live patch: a workspace inside a git work tree
    (the patchflow checkout, the user's kernel tree) made `git apply` skip every file
    and exit 0 (issue 10)."""
    top = tmp_path / "outer"
    top.mkdir()
    if where != "plain":
        sh(top, "init", "-q")
    if where == "same-path-in-outer-tree":
        (top / "mm").mkdir()
        (top / "mm" / "f.c").write_text("old\n")
    overlay = top / ".patchflow" / "livepatch" / "after"
    (overlay / "mm").mkdir(parents=True)
    (overlay / "mm" / "f.c").write_text("old\n")
    patch = tmp_path / "p.diff"
    patch.write_text(PATCH)
    # the bug, reproduced with the plain command the generator used to run
    subprocess.run(["git", "apply", "-p1", str(patch)], cwd=overlay, check=True)
    expected_by_plain_git = "old\n" if where != "plain" else "new\n"
    assert (overlay / "mm" / "f.c").read_text() == expected_by_plain_git
    (overlay / "mm" / "f.c").write_text("old\n")
    if where == "same-path-in-outer-tree":
        (top / "mm" / "f.c").write_text("old\n")

    assert gitrepo.apply_to_directory(overlay, patch) == ["mm/f.c"]
    assert (overlay / "mm" / "f.c").read_text() == "new\n"
    if where == "same-path-in-outer-tree":
        assert (top / "mm" / "f.c").read_text() == "old\n"  # the outer tree is never touched


def test_apply_to_directory_refuses_skips_and_escapes(tmp_path: Path) -> None:
    overlay = tmp_path / "o"
    (overlay / "mm").mkdir(parents=True)
    (overlay / "mm" / "f.c").write_text("other\n")
    patch = tmp_path / "p.diff"
    patch.write_text(PATCH)
    with pytest.raises(WorkspaceError, match="does not apply"):
        gitrepo.apply_to_directory(overlay, patch)
    evil = tmp_path / "evil.diff"
    evil.write_text(PATCH.replace("a/mm/f.c", "a/../../etc/f.c").replace("b/mm/f.c",
                                                                          "b/../../etc/f.c"))
    with pytest.raises(WorkspaceError, match="leaves the tree"):
        gitrepo.apply_to_directory(overlay, evil)
    with pytest.raises(WorkspaceError, match="absolute"):
        gitrepo.checked_patch_paths(PATCH.replace("+++ b/mm/f.c", "+++ /etc/passwd"))


def test_inherited_git_env_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GIT_DIR/GIT_WORK_TREE/GIT_INDEX_FILE from the caller's shell would override -C."""
    mine, other = tmp_path / "mine", tmp_path / "other"
    for r in (mine, other):
        r.mkdir()
        sh(r, "init", "-q")
        (r / "f").write_text(r.name)
        sh(r, "add", "f")
        sh(r, "commit", "-q", "-m", r.name)
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    assert gitrepo.commit_message(mine, "HEAD").strip() == "mine"
    assert gitrepo.head(mine) != subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=mine).stdout.strip()
