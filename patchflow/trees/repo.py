"""Kernel trees: the git repository each target's branch lives in.

One shared bare repository in the cache (``<cache>/trees/kernel.git``) holds a
branch per target, as a stable clone holds linux-6.1.y and linux-6.12.y side
by side; sharing it means a patch written against 6.12 finds its pre-image
blobs when it is 3-way merged onto 6.1.

Two providers fill a branch:

* ``git``: fetch the target's remote branch (stable tree or the user's clone).
* ``debian``: build a real stable history offline from Debian's
  ``linux-source-X`` packages, one deterministic commit and one annotated tag
  (``v6.12.117``, message records the Debian version) per release, oldest first.
  Downloads and the repository are cached, so a second run only checks tags.

:func:`prepare_tree` sets the branch to the newest requested release
(``upto``), so "the branch moved" is reproduced by preparing the next release.
Consumers should build from :attr:`TargetBranch.head`, a fixed sha.
"""

from __future__ import annotations

import fcntl
import gzip
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

from patchflow import gitrepo, runner
from patchflow.config import DebianSource, TargetConfig
from patchflow.errors import NotFound, UserError, WorkspaceError
from patchflow.result import Progress, quiet
from patchflow.workspace import Workspace


@dataclass(frozen=True)
class TargetBranch:
    """A prepared target branch."""

    target: str
    repo: Path  # the shared bare repository (a git dir)
    branch: str
    head: str  # sha of the branch head when prepared
    release: str  # kernel version at head, from the top-level Makefile ("6.12.117")

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.branch}"

    def to_json(self) -> dict[str, str]:
        return {"target": self.target, "repo": str(self.repo), "branch": self.branch,
                "head": self.head, "release": self.release}


def repo_path(ws: Workspace) -> Path:
    return ws.cache_dir("trees") / "kernel.git"


def repo_path_for(cache: Path) -> Path:
    """The shared kernel repository of an artefact cache."""
    return cache / "trees" / "kernel.git"


@contextmanager
def repo_lock(ws: Workspace) -> Iterator[Path]:
    """Serialise writers of the shared repository (two prepares, two processes)."""
    repo = repo_path(ws)
    with open(ws.cache_dir("trees") / "kernel.git.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            gitrepo.init_bare(repo)
            yield repo
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _target(ws: Workspace, target: TargetConfig | str) -> TargetConfig:
    return target if isinstance(target, TargetConfig) else ws.config.target(target)


# --------------------------------------------------------------------------- Debian provider


def upstream_version(debian_version: str) -> str:
    """``6.12.117-1~deb12u1`` -> ``6.12.117``."""
    return debian_version.split(":")[-1].split("-")[0]


def makefile_version(text: str) -> str:
    """Kernel version stated by a top-level Makefile.

    # VERSION = 6
    # PATCHLEVEL = 12
    # SUBLEVEL = 117
    # EXTRAVERSION =
    """
    vals = {}
    for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL", "EXTRAVERSION"):
        m = re.search(rf"^{key}\s*=[ \t]*(\S*)", text, re.M)
        vals[key] = m.group(1) if m else ""
    ver = f"{vals['VERSION']}.{vals['PATCHLEVEL']}"
    if vals["SUBLEVEL"] not in ("", "0"):
        ver += f".{vals['SUBLEVEL']}"
    return ver + vals["EXTRAVERSION"]


def changelog_identity(text: str) -> gitrepo.Identity:
    """Author and date of the newest Debian changelog entry.

    #  -- Ben Hutchings <benh@debian.org>  Sat, 14 Nov 2026 13:56:01 +0100
    """
    m = re.search(r"^ -- (.+?) <([^>]+)>  (.+)$", text, re.M)
    if not m:
        raise UserError("Debian changelog has no maintainer line")
    when = parsedate_to_datetime(m.group(3).strip())
    return gitrepo.Identity(m.group(1), m.group(2), f"@{int(when.timestamp())} "
                            f"{when.strftime('%z')}")


def apt_download_argv(package: str, version: str) -> list[str]:
    return ["apt-get", "download", f"{package}={version}"]


def download(ws: Workspace, package: str, version: str) -> Path:
    """The cached .deb for package=version, downloaded on first use."""
    dl = ws.cache_dir("trees", "debian", "downloads")
    found = sorted(dl.glob(f"{package}_{version.replace(':', '%3a')}_*.deb"))
    if found:
        return found[0]
    done = runner.run(apt_download_argv(package, version), cwd=dl, check=False, timeout=1800)
    found = sorted(dl.glob(f"{package}_{version.replace(':', '%3a')}_*.deb"))
    if not done.ok or not found:
        raise NotFound(f"cannot download {package}={version} (apt-get update? is the version "
                       f"in `apt-cache policy {package}`?):\n{done.tail.strip()}")
    return found[0]


def _scratch_dir(ws: Workspace) -> Path:
    # unpacking 1.7 GB of sources is much faster on tmpfs; fall back to the cache
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 6 * 2**30:
        return shm
    return ws.cache_dir("tmp")


def import_release(ws: Workspace, repo: Path, src: DebianSource, release: str,
                   parent: str | None, progress: Progress) -> str:
    """Commit and tag one Debian release on top of *parent*; returns the commit."""
    ver = upstream_version(release)
    deb = download(ws, src.package, release)
    with tempfile.TemporaryDirectory(prefix="patchflow-import-", dir=_scratch_dir(ws)) as tmp:
        t = Path(tmp)
        progress(f"{src.package} {release}: unpacking {deb.name}")
        runner.run(["dpkg-deb", "-x", str(deb), str(t / "deb")], timeout=1800)
        tarballs = sorted((t / "deb/usr/src").glob("linux-source-*.tar.xz"))
        if not tarballs:
            raise UserError(f"{deb} has no usr/src/linux-source-*.tar.xz")
        (t / "src").mkdir()
        runner.run(["tar", "-xJf", str(tarballs[0]), "-C", str(t / "src"),
                    "--strip-components=1"], timeout=3600)
        found = makefile_version((t / "src/Makefile").read_text())
        if found != ver:
            raise UserError(f"{deb.name}: Makefile says {found}, expected {ver}")
        logs = sorted((t / "deb/usr/share/doc").glob("*/changelog.Debian.gz"))
        who = changelog_identity(gzip.decompress(logs[0].read_bytes()).decode(
            errors="replace")) if logs else gitrepo.Identity(
            "Debian Kernel Team", "debian-kernel@lists.debian.org", "@0 +0000")
        progress(f"{src.package} {release}: committing {ver} (git add -f -A)")
        sha = gitrepo.commit_directory(
            repo, t / "src", parent=parent, who=who, index=t / "index",
            message=f"Linux {ver}\n\nImported from Debian {src.package} {release}.\n")
    gitrepo.tag_annotated(repo, f"v{ver}", sha,
                          f"Linux {ver}\n\nDebian-Package: {src.package}\n"
                          f"Debian-Version: {release}\n", who)
    progress(f"{src.package} {release}: tagged v{ver} at {sha[:12]}")
    return sha


def _releases_upto(t: TargetConfig, upto: str | None) -> tuple[str, ...]:
    assert t.debian is not None
    rels = t.debian.releases
    if upto is None:
        return rels
    for i, r in enumerate(rels):
        if upto in (r, upstream_version(r), f"v{upstream_version(r)}"):
            return rels[: i + 1]
    known = ", ".join(upstream_version(r) for r in rels)
    raise NotFound(f"target {t.name} has no release {upto!r} (known: {known})")


def _prepare_debian(ws: Workspace, t: TargetConfig, repo: Path, upto: str | None,
                    progress: Progress) -> tuple[str, str]:
    assert t.debian is not None
    have = gitrepo.tags(repo)
    parent: str | None = None
    ver = ""
    for release in _releases_upto(t, upto):
        ver = upstream_version(release)
        sha = have.get(f"v{ver}")
        # a tag counts only if it sits on the same history (same parent)
        if sha is not None and gitrepo.rev_parse(repo, f"{sha}^") == parent:
            progress(f"{t.name}: v{ver} cached at {sha[:12]}")
            parent = sha
            continue
        parent = import_release(ws, repo, t.debian, release, parent, progress)
    assert parent is not None
    return parent, ver


# --------------------------------------------------------------------------- git provider


class BranchRewritten(WorkspaceError):
    """The remote branch was force-pushed: its new head does not descend from the old one."""


def _prepare_git(t: TargetConfig, repo: Path, upto: str | None, progress: Progress,
                 allow_rewrite: bool = False) -> tuple[str, str]:
    """Fetch the target's branch; a force-pushed branch is reported, never silently taken.

    The fetch lands in a scratch ref first.  Only when the new head descends
    from what was fetched last time (or with *allow_rewrite*) does the
    remote-tracking ref move, so a refused fetch changes nothing
    (tests/integration/test_tree_git.py).
    """
    if t.git is None:
        raise UserError(f"target {t.name} is a distribution kernel: run `patchflow distro "
                        f"prepare {t.name}` instead")
    progress(f"{t.name}: checking {t.git.remote} {t.git.branch}")
    if gitrepo.ls_remote_heads(t.git.remote, t.git.branch) is None:
        raise NotFound(f"target {t.name}: branch {t.git.branch!r} does not exist at "
                       f"{t.git.remote}")
    progress(f"{t.name}: fetching {t.git.branch}")
    tracking = f"refs/remotes/{t.name}/{t.git.branch}"
    incoming = f"refs/patchflow/incoming/{t.name}"
    before = gitrepo.rev_parse(repo, tracking)
    try:
        sha = gitrepo.fetch_branch(repo, t.git.remote, t.git.branch, incoming)
        if before and sha != before and not gitrepo.is_ancestor(repo, before, sha):
            if not allow_rewrite:
                raise BranchRewritten(
                    f"target {t.name}: {t.git.branch} at {t.git.remote} was force-pushed "
                    f"({before[:12]} is not an ancestor of the new head {sha[:12]}); nothing "
                    f"changed here: run `patchflow tree prepare {t.name} --allow-rewrite` to "
                    "take the rewritten history")
            progress(f"{t.name}: taking the rewritten branch ({before[:12]} -> {sha[:12]})")
        gitrepo.update_ref(repo, tracking, sha)
    finally:
        gitrepo.delete_ref(repo, incoming)
    if upto:
        tag = upto if upto.startswith("v") else f"v{upto}"
        tagged = gitrepo.fetch_tag(repo, t.git.remote, tag)
        if tagged is None:
            raise NotFound(f"target {t.name}: no tag {tag} at {t.git.remote}")
        sha = tagged
    text = gitrepo.show_file(repo, sha, "Makefile") or ""
    return sha, makefile_version(text) if text else ""


# --------------------------------------------------------------------------- public API


def prepare_tree(ws: Workspace, target: TargetConfig | str, upto: str | None = None,
                 progress: Progress | None = None, allow_rewrite: bool = False) -> TargetBranch:
    """Make the target's branch exist (fetch or import) and point at *upto* (default newest)."""
    t = _target(ws, target)
    say = progress or quiet
    with repo_lock(ws) as repo:
        gitrepo.worktree_prune(repo)
        if t.provider == "debian":
            sha, ver = _prepare_debian(ws, t, repo, upto, say)
        else:
            sha, ver = _prepare_git(t, repo, upto, say, allow_rewrite)
        gitrepo.update_ref(repo, f"refs/heads/{t.branch}", sha)
    return TargetBranch(t.name, repo, t.branch, sha, ver)


def ensure_release(ws: Workspace, version: str, progress: Progress | None = None) -> str | None:
    """Make the tag of kernel *version* (``v6.12.117``) exist in the shared repository.

    A series' pre-image blobs come from its base; for a base that a Debian
    target provides, the release is imported (and its predecessors on that
    branch) without moving any branch.  Returns the commit, or None when no
    configured target provides that release (a base such as ``mm-unstable``).
    """
    tag = version if version.startswith("v") else f"v{version}"
    repo = repo_path(ws)
    if (repo / "HEAD").exists() and (sha := gitrepo.rev_parse(repo, f"refs/tags/{tag}")):
        return sha
    for t in ws.config.all_targets():
        if t.debian is None:
            continue
        if any(f"v{upstream_version(r)}" == tag for r in t.debian.releases):
            with repo_lock(ws) as locked:
                sha, _ver = _prepare_debian(ws, t, locked, tag[1:], progress or quiet)
            return sha
    return None


def open_tree(ws: Workspace, target: TargetConfig | str) -> TargetBranch:
    """The already prepared tree of *target*; NotFound if it was never prepared."""
    t = _target(ws, target)
    repo = repo_path(ws)
    sha = gitrepo.rev_parse(repo, f"refs/heads/{t.branch}") if (repo / "HEAD").exists() \
        else None
    if sha is None:
        raise NotFound(f"target {t.name}: branch {t.branch} is not prepared; run "
                       f"`patchflow tree prepare {t.name}`")
    text = gitrepo.show_file(repo, sha, "Makefile") or ""
    return TargetBranch(t.name, repo, t.branch, sha, makefile_version(text) if text else "")


def list_trees(ws: Workspace) -> list[tuple[TargetConfig, TargetBranch | None]]:
    rows: list[tuple[TargetConfig, TargetBranch | None]] = []
    for t in ws.config.all_targets():
        try:
            rows.append((t, open_tree(ws, t)))
        except NotFound:
            rows.append((t, None))
    return rows


def release_tags(tree: TargetBranch) -> list[str]:
    """Tags reachable from the branch head, oldest first."""
    text = gitrepo.out(tree.repo, "tag", "--merged", tree.head, "--sort=creatordate", "v*",
                       git_dir=True)
    return text.split()


def source_worktree(ws: Workspace, target: TargetConfig | str, name: str = "base") -> Path:
    """A persistent worktree of *target* for building, in the cache.

    Created at the branch head on first use; afterwards it is left where the
    caller last moved it with :func:`checkout`, so kbuild can build incrementally.
    """
    tree = open_tree(ws, target)
    path = ws.cache_dir("trees", "src", tree.target) / name
    if gitrepo.is_worktree(path):
        return path
    if path.exists() and any(path.iterdir()):
        raise WorkspaceError(f"{path} exists but is not a worktree of {tree.repo}")
    with repo_lock(ws) as repo:
        gitrepo.worktree_prune(repo)
        gitrepo.worktree_add(repo, path, tree.head)
    return path


def checkout(worktree: Path, ref: str) -> str:
    """Move a source worktree to *ref*, keeping unchanged files' mtimes; returns the sha."""
    return gitrepo.checkout(worktree, ref)


def branch_head(ws: Workspace, target: TargetConfig | str) -> str:
    """The sha the prepared target branch points at; NotFound if never prepared.

    The gate hashes it into every stage's inputs (and falls back to the
    configured release when the tree does not exist yet), so a demo or CI job
    prepares the trees before its first gate to keep the hashes stable.
    """
    return open_tree(ws, target).head
