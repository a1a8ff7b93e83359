"""The Debian source provider on the real linux-source-6.1/6.12 packages.

The first run downloads and imports (minutes); later runs find every release
tagged in the shared cache and only verify, which this test also checks.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from patchflow import gitrepo
from patchflow.trees.repo import makefile_version, prepare_tree, release_tags, upstream_version
from patchflow.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("target", ["linux-6.1.y", "linux-6.12.y"])
def test_debian_history(tmp_path: Path, target: str) -> None:
    ws = Workspace.open(tmp_path / "ws", REPO_ROOT)
    t = ws.config.target(target)
    assert t.debian is not None
    lines: list[str] = []
    tree = prepare_tree(ws, target, progress=lines.append)
    versions = [upstream_version(r) for r in t.debian.releases]
    assert tree.release == versions[-1]
    assert release_tags(tree) == [f"v{v}" for v in versions]
    for rel, ver in zip(t.debian.releases, versions, strict=True):
        assert f"Debian-Version: {rel}" in gitrepo.tag_message(tree.repo, f"v{ver}")
        assert makefile_version(gitrepo.show_file(tree.repo, f"v{ver}", "Makefile") or "") == ver
    # the whole tree went in despite the tarball's `/*` .gitignore
    files = gitrepo.out(tree.repo, "ls-tree", "-r", "--name-only", tree.head, git_dir=True)
    assert len(files.splitlines()) > 70_000
    # a real moving branch: mm/vmscan.c changed between the first and the last release
    assert "mm/vmscan.c" in gitrepo.diff_names(tree.repo, f"v{versions[0]}", tree.head,
                                               ["mm/vmscan.c"])
    # a second run reuses the cache and gives the same shas
    t0 = time.monotonic()
    again = prepare_tree(ws, target, upto=versions[1])
    assert time.monotonic() - t0 < 60
    assert again.head == gitrepo.rev_parse(tree.repo, f"v{versions[1]}")
    author = gitrepo.out(tree.repo, "log", "-1", "--format=%an <%ae> %aI", again.head,
                         git_dir=True)
    assert author.endswith(("+01:00", "+00:00", "+02:00")) and "@" in author
    final = prepare_tree(ws, target)
    assert final.head == tree.head
