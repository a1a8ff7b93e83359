"""The git provider against a real git remote on loopback (``git daemon``).

The served repository carries the Debian-built linux-6.1.y history (6.1.187,
6.1.190, 6.1.192 as imported by the Debian provider into the shared cache);
its objects are borrowed through ``objects/info/alternates``, so nothing is
copied on the server side.  The client is a workspace with an empty cache of
its own, so the first fetch really transfers a kernel tree.  Covered: a first
fetch, a branch that moved (a new release on top), a force-pushed branch
(reported with exit 2, the local branch untouched, taken only with
``--allow-rewrite``), and an unreachable remote (exit 2, nothing changed).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchflow import gitrepo
from patchflow.cli import main
from patchflow.errors import NotFound
from patchflow.trees import repo as tree
from patchflow.trees.repo import BranchRewritten
from patchflow.workspace import Workspace

from ..conftest import REAL_CACHE, REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """tag -> commit of the Debian-built 6.1 releases in the shared repository."""
    ws = Workspace.open(tmp_path_factory.mktemp("shared") / "ws", REPO_ROOT, cache=REAL_CACHE)
    kt = tree.prepare_tree(ws, "linux-6.1.y")
    tags = gitrepo.tags(kt.repo)
    return {t: tags[t] for t in ("v6.1.187", "v6.1.190", "v6.1.192")}


class Served:
    """A bare repository under ``git daemon`` whose branch the test moves."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repo = root / "stable.git"
        subprocess.run(["git", "init", "-q", "--bare", str(self.repo)], check=True)
        (self.repo / "objects" / "info" / "alternates").write_text(
            str(tree.repo_path_for(REAL_CACHE) / "objects") + "\n")
        # no delta search over 80,000 loose objects: a served repo would be packed
        subprocess.run(["git", "--git-dir", str(self.repo), "config", "pack.window", "0"],
                       check=True)
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"git://127.0.0.1:{self.port}/stable.git"

    def start(self) -> None:
        # its own process group: "git daemon" runs git-daemon as a child, and the
        # whole group must go when the test takes the remote away
        self.proc = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={self.port}",
             "--export-all", f"--base-path={self.root}", str(self.root)],
            start_new_session=True)
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("git daemon did not start")

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
            self.proc = None
            for _ in range(100):  # until nothing listens on the port any more
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", self.port)) != 0:
                        return
                time.sleep(0.1)

    def push(self, sha: str, tag: str | None = None) -> None:
        subprocess.run(["git", "--git-dir", str(self.repo), "update-ref",
                        "refs/heads/linux-6.1.y", sha], check=True)
        if tag:
            subprocess.run(["git", "--git-dir", str(self.repo), "update-ref",
                            f"refs/tags/{tag}", sha], check=True)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path / "served")
    s.start()
    yield s
    s.stop()


def _client(tmp_path: Path, url: str) -> Workspace:
    cfg = tmp_path / "cfg"
    (cfg / "targets").mkdir(parents=True)
    (cfg / "series").mkdir()
    (cfg / "targets" / "stable-6.1.toml").write_text(
        'description = "6.1 from a git remote"\narch = "x86_64"\nkconfig = []\n'
        f'provider = "git"\n\n[git]\nremote = "{url}"\nbranch = "linux-6.1.y"\n')
    return Workspace.open(tmp_path / "ws", cfg, tmp_path / "client-cache")


def _cli(ws: Workspace, *args: str) -> int:
    try:
        main(["-w", str(ws.root), "-C", str(ws.config_root), *args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_git_provider_fetch_move_rewrite_unreachable(
        tmp_path: Path, served: Served, releases: dict[str, str],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    ws = _client(tmp_path, served.url)
    monkeypatch.setenv("PATCHFLOW_CACHE", str(ws.cache))  # the CLI calls below use it too
    assert not tree.repo_path(ws).exists() or not gitrepo.tags(tree.repo_path(ws))

    # a first fetch into an empty cache
    served.push(releases["v6.1.187"], "v6.1.187")
    first = tree.prepare_tree(ws, "stable-6.1")
    assert (first.head, first.release) == (releases["v6.1.187"], "6.1.187")
    assert gitrepo.rev_parse(first.repo, "refs/heads/linux-6.1.y") == releases["v6.1.187"]

    # the branch moved: a new stable release on top
    served.push(releases["v6.1.190"], "v6.1.190")
    moved = tree.prepare_tree(ws, "stable-6.1")
    assert (moved.head, moved.release) == (releases["v6.1.190"], "6.1.190")
    # an older release by tag, fetched on demand
    old = tree.prepare_tree(ws, "stable-6.1", upto="6.1.187")
    assert old.head == releases["v6.1.187"]
    tree.prepare_tree(ws, "stable-6.1")

    # force-pushed: 6.1.192's tree re-committed straight on 6.1.187 (190 dropped)
    who = {"GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@example.org",
           "GIT_COMMITTER_NAME": "x", "GIT_COMMITTER_EMAIL": "x@example.org",
           "GIT_AUTHOR_DATE": "@1800000000 +0000", "GIT_COMMITTER_DATE": "@1800000000 +0000"}
    rewritten = gitrepo.out(tree.repo_path_for(REAL_CACHE), "commit-tree",
                            f"{releases['v6.1.192']}^{{tree}}", "-p", releases["v6.1.187"],
                            "-m", "Linux 6.1.192 (rebased)", env=who, git_dir=True)
    served.push(rewritten)
    with pytest.raises(BranchRewritten, match="force-pushed"):
        tree.prepare_tree(ws, "stable-6.1")
    assert tree.open_tree(ws, "stable-6.1").head == releases["v6.1.190"]  # untouched
    assert _cli(ws, "tree", "prepare", "stable-6.1") == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("... ")]
    assert len(err) == 1 and "force-pushed" in err[0] and "--allow-rewrite" in err[0], err
    assert tree.open_tree(ws, "stable-6.1").head == releases["v6.1.190"]
    assert _cli(ws, "tree", "prepare", "stable-6.1", "--allow-rewrite") == 0
    assert tree.open_tree(ws, "stable-6.1").head == rewritten

    # the remote goes away: exit 2, one line naming it, nothing changed
    served.stop()
    with pytest.raises(NotFound, match="not reachable"):
        tree.prepare_tree(ws, "stable-6.1")
    capsys.readouterr()
    assert _cli(ws, "tree", "prepare", "stable-6.1") == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("... ")]
    assert len(err) == 1 and served.url in err[0] and err[0].startswith("error: "), err
    assert tree.open_tree(ws, "stable-6.1").head == rewritten
