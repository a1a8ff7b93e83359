"""Every git operation patchflow performs, behind one module.

Nothing else in patchflow runs git or imports GitPython.  Commands are plain
argv lists built by small pure functions (``*_argv``) that the unit tests
check directly, run through :func:`patchflow.runner.run`; GitPython is used
only for cheap read-only look-ups, always as ``with Repo(...)``.

Conventions:

* ``repo`` is a git directory (the shared bare kernel repository) or a work
  tree; git finds its way from either.
* Worktrees are disposable and detached (``git worktree add --detach``); the
  user's own checkout is never touched.
* Patches are identified by ``git patch-id --stable``, never by subject.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from patchflow import runner
from patchflow.errors import CommandFailed, NotFound, WorkspaceError

#: environment that makes git deterministic and non-interactive
BASE_ENV: dict[str, str] = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_EDITOR": "true",
    "GIT_MERGE_AUTOEDIT": "no",
    "LC_ALL": "C",
}

#: inherited variables that would override ``-C``/``--git-dir`` and point git at
#: another repository or index; only the explicit ``env`` of a call may set them
#: (tests/unit/test_gitrepo.py::test_inherited_git_env_is_ignored)
INHERITED_UNSAFE = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE",
                    "GIT_CEILING_DIRECTORIES")

#: a kernel-sized ``git add``/``worktree add`` on 2 contended cores takes minutes
SLOW = 3600.0


def run_git(args: Sequence[str], *, cwd: Path | None = None,
            env: Mapping[str, str] | None = None, check: bool = True, timeout: float = 600.0,
            input: str | None = None, log: Path | None = None) -> runner.Completed:
    """The one place that starts git: deterministic environment, inherited overrides removed."""
    return runner.run(["git", *args], cwd=cwd, env={**BASE_ENV, **(env or {})}, check=check,
                      timeout=timeout, input=input, log=log, unset=INHERITED_UNSAFE)


def git(repo: Path, *args: str, env: Mapping[str, str] | None = None, check: bool = True,
        timeout: float = 600.0, input: str | None = None, log: Path | None = None,
        git_dir: bool = False) -> runner.Completed:
    """Run ``git -C repo ARGS`` (``--git-dir=repo`` when *git_dir*)."""
    where = [f"--git-dir={repo}"] if git_dir else ["-C", str(repo)]
    return run_git([*where, *args], env=env, check=check, timeout=timeout, input=input, log=log)


def out(repo: Path, *args: str, **kw: object) -> str:
    """stdout of a git command, stripped."""
    return git(repo, *args, **kw).stdout.strip()  # type: ignore[arg-type]


# --------------------------------------------------------------------------- argv builders


def apply_check_argv(patch: Path, *, cached: bool = False, reverse: bool = False,
                     context: int | None = None, three_way: bool = False) -> list[str]:
    """``git apply --check`` with full context unless *context* reduces it (= fuzz)."""
    argv = ["apply", "--check", "--verbose"]
    if cached:
        argv.append("--cached")
    if reverse:
        argv.append("--reverse")
    if context is not None:
        argv.append(f"-C{context}")
    if three_way:
        argv.append("--3way")
    return [*argv, str(patch)]


def am_argv(patches: Sequence[Path], *, three_way: bool) -> list[str]:
    # --keep-cr keeps CRLF-carrying files byte-exact; rerere replays stored resolutions
    argv = ["am", "--keep-cr", "--rerere-autoupdate"]
    if three_way:
        argv.append("-3")
    return [*argv, *[str(p) for p in patches]]


def worktree_add_argv(path: Path, ref: str) -> list[str]:
    return ["worktree", "add", "--detach", "--force", str(path), ref]


def format_patch_argv(base: str, head: str, outdir: Path) -> list[str]:
    # --zero-commit and --no-signature make the stored queue byte-stable across runs
    return ["format-patch", "--zero-commit", "--no-signature", "--no-stat", "-N",
            "-o", str(outdir), f"{base}..{head}"]


def range_diff_argv(old_base: str, old_head: str, new_base: str, new_head: str) -> list[str]:
    return ["range-diff", "--no-color", f"{old_base}..{old_head}", f"{new_base}..{new_head}"]


# --------------------------------------------------------------------------- repositories


def init_bare(path: Path) -> None:
    if (path / "HEAD").exists():
        return
    path.mkdir(parents=True, exist_ok=True)
    run_git(["init", "--quiet", "--bare", str(path)])
    configure(path)


def configure(repo: Path) -> None:
    """Repository settings patchflow relies on.

    rerere lives in the common git dir, so every worktree shares the recorded
    resolutions; ``gc.auto=0`` because an automatic gc of a kernel repo in the
    middle of ``git am`` would take minutes.
    """
    for key, value in (("rerere.enabled", "true"), ("rerere.autoupdate", "true"),
                       ("gc.auto", "0"), ("core.looseCompression", "1"),
                       ("user.name", "patchflow"), ("user.email", "patchflow@localhost")):
        git(repo, "config", key, value)


def rev_parse(repo: Path, ref: str) -> str | None:
    """The commit sha *ref* names, or None."""
    done = git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return done.stdout.strip() if done.ok and done.stdout.strip() else None


def tags(repo: Path) -> dict[str, str]:
    """tag name -> commit sha (read through GitPython)."""
    from git import Repo

    with Repo(repo) as r:
        return {t.name: t.commit.hexsha for t in r.tags}


def tag_message(repo: Path, tag: str) -> str:
    from git import Repo

    with Repo(repo) as r:
        obj = r.tags[tag].tag
        return str(obj.message) if obj is not None else ""


def update_ref(repo: Path, ref: str, sha: str) -> None:
    git(repo, "update-ref", ref, sha)


def delete_ref(repo: Path, ref: str) -> None:
    git(repo, "update-ref", "-d", ref, check=False)


def refs(repo: Path, prefix: str) -> dict[str, str]:
    text = out(repo, "for-each-ref", "--format=%(refname) %(objectname)", prefix)
    return dict(line.split(" ", 1) for line in text.splitlines() if line)


def is_ancestor(repo: Path, a: str, b: str) -> bool:
    return git(repo, "merge-base", "--is-ancestor", a, b, check=False).ok


@dataclass(frozen=True)
class Identity:
    name: str
    email: str
    date: str  # RFC 2822 or "@epoch +zone"

    def env(self) -> dict[str, str]:
        return {"GIT_AUTHOR_NAME": self.name, "GIT_AUTHOR_EMAIL": self.email,
                "GIT_AUTHOR_DATE": self.date, "GIT_COMMITTER_NAME": self.name,
                "GIT_COMMITTER_EMAIL": self.email, "GIT_COMMITTER_DATE": self.date}


def commit_directory(repo: Path, src: Path, *, parent: str | None, message: str,
                     who: Identity, index: Path) -> str:
    """Commit the whole of *src* as one commit on top of *parent*; returns its sha.

    Uses a private index and ``--work-tree`` so that nothing is checked out.
    ``-f`` because the Debian tarball's top-level ``.gitignore`` ends with
    ``/*`` (tests/integration/test_tree_debian.py checks the file count).
    """
    env = {"GIT_INDEX_FILE": str(index), "GIT_WORK_TREE": str(src)}
    git(repo, "add", "-f", "-A", ".", env=env, timeout=SLOW, git_dir=True)
    tree = out(repo, "write-tree", env=env, git_dir=True)
    argv = ["commit-tree", tree, "-m", message]
    if parent:
        argv[2:2] = ["-p", parent]
    return out(repo, *argv, env=who.env(), git_dir=True)


def tag_annotated(repo: Path, name: str, sha: str, message: str, who: Identity) -> None:
    git(repo, "tag", "-a", "-f", name, sha, "-m", message, env=who.env())


def ls_remote_heads(remote: str, branch: str) -> str | None:
    """sha of *branch* at *remote*; None if the branch does not exist.

    Raises NotFound if the remote itself cannot be reached or is no repository.
    """
    done = run_git(["ls-remote", "--heads", "--", remote, f"refs/heads/{branch}"], check=False,
                   timeout=120)
    if not done.ok:
        last = (done.tail.strip().splitlines() or ["no answer"])[-1]
        raise NotFound(f"git remote {remote!r} is not reachable or not a repository: {last}")
    for line in done.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}":
            return sha
    return None


def fetch_branch(repo: Path, remote: str, branch: str, local_ref: str) -> str:
    done = git(repo, "fetch", "--no-tags", "--", remote, f"+refs/heads/{branch}:{local_ref}",
               timeout=SLOW, git_dir=True, check=False)
    if not done.ok:
        last = (done.tail.strip().splitlines() or ["no answer"])[-1]
        raise NotFound(f"fetching {branch} from {remote!r} failed: {last}")
    sha = rev_parse(repo, local_ref)
    assert sha is not None
    return sha


def fetch_tag(repo: Path, remote: str, tag: str) -> str | None:
    """Fetch one tag; its commit, or None when the remote has no such tag."""
    done = git(repo, "fetch", "--no-tags", "--", remote, f"+refs/tags/{tag}:refs/tags/{tag}",
               git_dir=True, timeout=SLOW, check=False)
    return rev_parse(repo, f"refs/tags/{tag}") if done.ok else None


# --------------------------------------------------------------------------- worktrees


def worktree_add(repo: Path, path: Path, ref: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    git(repo, *worktree_add_argv(path, ref), timeout=SLOW)


def worktree_remove(repo: Path, path: Path) -> None:
    if path.exists():
        git(repo, "worktree", "remove", "--force", "--force", str(path), check=False,
            timeout=SLOW)
    git(repo, "worktree", "prune")


def worktree_prune(repo: Path) -> None:
    git(repo, "worktree", "prune")


def is_worktree(path: Path) -> bool:
    return (path / ".git").is_file()


def git_path(worktree: Path, name: str) -> Path:
    """Path of a per-worktree git file such as ``rebase-apply`` or ``index.lock``."""
    p = Path(out(worktree, "rev-parse", "--git-path", name))
    return p if p.is_absolute() else worktree / p


def lock_file(worktree: Path) -> Path | None:
    """The ``index.lock`` another (or a killed) git left behind, if any."""
    p = git_path(worktree, "index.lock")
    return p if p.exists() else None


def dirty_files(worktree: Path) -> list[str]:
    text = git(worktree, "status", "--porcelain", "--untracked-files=normal").stdout
    return [line[3:] for line in text.splitlines() if line]


def checkout(worktree: Path, ref: str) -> str:
    """Move a worktree to *ref* (detached); returns the sha.

    git rewrites only the files that differ, so unchanged files keep their
    mtimes and kbuild rebuilds incrementally (test_gitrepo.py::test_checkout_keeps_mtimes).
    Refuses to throw away local changes.
    """
    lock = lock_file(worktree)
    if lock is not None:
        raise WorkspaceError(f"worktree {worktree} is locked by {lock}; is another git running? "
                             "remove the file if not")
    dirty = [f for f in dirty_files(worktree)]
    if dirty:
        raise WorkspaceError(f"worktree {worktree} has local changes: {', '.join(dirty[:8])}")
    git(worktree, "checkout", "--quiet", "--detach", ref, timeout=SLOW)
    sha = rev_parse(worktree, "HEAD")
    assert sha is not None
    return sha


def head(worktree: Path) -> str:
    sha = rev_parse(worktree, "HEAD")
    if sha is None:
        raise WorkspaceError(f"{worktree} has no HEAD")
    return sha


# --------------------------------------------------------------------------- patches


def numstat(diff: str) -> runner.Completed:
    """``git apply --numstat`` of a diff outside any repository: git's strict parser.

    Run in an empty scratch directory with discovery stopped there, so that no
    repository around the temp dir can change how the paths are read.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="patchflow-numstat-") as tmp:
        return run_git(["apply", "--numstat", "-"], cwd=Path(tmp), input=diff, check=False,
                       timeout=60, env={"GIT_CEILING_DIRECTORIES": str(Path(tmp).parent)})


def patch_id_of(patch_text: str) -> str:
    """``git patch-id --stable`` output for a patch, no repository needed."""
    return run_git(["patch-id", "--stable"], input=patch_text, timeout=60).stdout


def patch_id(repo: Path, patch_text: str) -> str:
    """``git patch-id --stable`` of a patch or mail; '' if it holds no diff."""
    text = git(repo, "patch-id", "--stable", input=patch_text).stdout.strip()
    return text.split()[0] if text else ""


def commit_patch_ids(repo: Path, rev_range: str, limit: int = 2000) -> dict[str, str]:
    """patch-id -> commit for the newest *limit* commits of *rev_range*."""
    shas = out(repo, "rev-list", f"--max-count={limit}", "--no-merges", rev_range).split()
    ids: dict[str, str] = {}
    for sha in shas:
        # a commit touching hundreds of files is a release import (Debian provider),
        # not a patch: diffing it would cost seconds and can never match
        names = git(repo, "diff-tree", "-r", "--name-only", "--no-commit-id", "--root",
                    sha).stdout.count("\n")
        if 0 < names <= 200:
            diff = git(repo, "show", "--format=", "--no-color", sha, timeout=120).stdout
            pid = patch_id(repo, diff)
            if pid:
                ids[pid] = sha
    return ids


def grep_log(repo: Path, rev_range: str, pattern: str, limit: int = 20000) -> list[str]:
    text = out(repo, "log", f"--max-count={limit}", "--format=%H", "-F", f"--grep={pattern}",
               rev_range)
    return text.split()


def apply_check(worktree: Path, patch: Path, *, env: Mapping[str, str] | None = None,
                **kw: bool | int | None) -> runner.Completed:
    return git(worktree, *apply_check_argv(patch, **kw), env=env, check=False)  # type: ignore[arg-type]


def checked_patch_paths(patch_text: str) -> list[str]:
    """Every path a patch names (old and new side), refused unless it stays inside the tree.

    Called before a patch touches the file system: a path from a mailed patch
    is data from outside, and ``../`` or an absolute path would read or write
    beyond the tree it is applied to (tests/unit/test_gitrepo.py::
    test_apply_to_directory_refuses_skips_and_escapes).
    """
    paths: list[str] = []

    def check(rel: str, shown: str) -> None:
        if not rel or rel.startswith("/") or ".." in Path(rel).parts or "\0" in rel:
            raise WorkspaceError(f"patch path {shown!r} leaves the tree: refused")
        if rel not in paths:
            paths.append(rel)

    for line in patch_text.splitlines():
        if line.startswith(("rename from ", "rename to ", "copy from ", "copy to ")):
            name = line.split(" ", 2)[2]
            check(name, name)  # these carry no a/ b/ prefix
            continue
        if line.startswith("diff --git "):
            names = line[len("diff --git "):].split(" ")
        elif line.startswith(("--- ", "+++ ")):
            names = [line[4:].split("\t")[0]]
        else:
            continue
        for name in names:
            if name == "/dev/null":
                continue
            if name.startswith("/"):
                raise WorkspaceError(f"patch path {name!r} is absolute: refused")
            check(name.split("/", 1)[1] if "/" in name else "", name)
    return paths


#: "Applied patch mm/vmscan.c cleanly." (git apply --verbose, one line per file)
_APPLIED_RE = re.compile(r"^Applied patch (.+?) cleanly\.$", re.M)


def apply_to_directory(directory: Path, patch: Path, *, log: Path | None = None) -> list[str]:
    """Apply *patch* to the plain directory *directory* (``-p1``, no fuzz); the files it changed.

    ``git apply`` run inside another repository's work tree takes the patch's
    paths relative to that repository's top and silently skips the ones
    outside the current directory, exiting 0 (a workspace inside a kernel
    checkout, or the patchflow checkout, was enough to lose the whole patch).
    ``GIT_CEILING_DIRECTORIES`` stops the repository discovery at *directory*,
    and every file the patch names must be reported as applied: anything else
    is an error, never a silent success (tests/unit/test_gitrepo.py::
    test_apply_to_directory_inside_a_work_tree).
    """
    text = patch.read_text(encoding="utf-8", errors="surrogateescape")
    checked_patch_paths(text)
    directory = directory.resolve()
    env = {"GIT_CEILING_DIRECTORIES": str(directory.parent)}
    done = run_git(["apply", "--verbose", "--whitespace=nowarn", "-p1", str(patch.resolve())],
                   cwd=directory, env=env, check=False, timeout=120, log=log)
    if not done.ok:
        raise WorkspaceError(f"{patch.name} does not apply to {directory}:\n{done.tail.strip()}")
    applied = set(_APPLIED_RE.findall(done.stdout + done.stderr))
    diffs = {m.group(2) for m in re.finditer(r"^diff --git (\S+) b/(\S+)$", text, re.M)}
    missing = sorted(diffs - applied)
    if missing or not applied:
        raise WorkspaceError(f"{patch.name}: git apply skipped {', '.join(missing) or 'every file'}"
                             f" in {directory} (nothing was applied)")
    return sorted(applied)


def apply_in_worktree(worktree: Path, patch: Path, *, reverse: bool = False, check: bool = False,
                      log: Path | None = None) -> runner.Completed:
    """``git apply`` of a whole mbox in a worktree (no fuzz, ever); the caller reads ``.ok``."""
    argv = ["apply", "--whitespace=nowarn"] + (["-R"] if reverse else []) + \
        (["--check"] if check else []) + [str(patch.resolve())]
    return git(worktree, *argv, check=False, timeout=300, log=log)


def apply_cached(repo: Path, patch: Path, index: Path, *, three_way: bool = False
                 ) -> runner.Completed:
    argv = ["apply", "--cached", "--verbose"] + (["--3way"] if three_way else []) + [str(patch)]
    return git(repo, *argv, env={"GIT_INDEX_FILE": str(index)}, check=False)


def read_tree(repo: Path, ref: str, index: Path) -> None:
    git(repo, "read-tree", ref, env={"GIT_INDEX_FILE": str(index)}, timeout=SLOW)


def am(worktree: Path, patches: Sequence[Path], *, three_way: bool) -> runner.Completed:
    return git(worktree, *am_argv(patches, three_way=three_way), check=False, timeout=SLOW)


def am_in_progress(worktree: Path) -> bool:
    return git_path(worktree, "rebase-apply").is_dir()


def am_continue(worktree: Path) -> runner.Completed:
    return git(worktree, "am", "--continue", check=False, timeout=SLOW)


def am_abort(worktree: Path) -> None:
    if am_in_progress(worktree):
        done = git(worktree, "am", "--abort", check=False, timeout=SLOW)
        if not done.ok and am_in_progress(worktree):
            # a killed `git am` can leave a rebase-apply dir git itself cannot
            # abort (no "abort-safety" file yet): drop it, then reset
            # (tests/unit/test_backport.py::test_kill_during_am_recovers)
            import shutil

            shutil.rmtree(git_path(worktree, "rebase-apply"))
    lock = git_path(worktree, "index.lock")
    lock.unlink(missing_ok=True)


def unmerged_files(worktree: Path) -> list[str]:
    return out(worktree, "diff", "--name-only", "--diff-filter=U").splitlines()


def add_paths(worktree: Path, paths: Sequence[str]) -> None:
    if paths:
        # -f: Debian-built trees ignore everything through their top-level .gitignore
        git(worktree, "add", "-f", "--", *paths)


def reset_hard(worktree: Path, ref: str) -> None:
    git(worktree, "reset", "--quiet", "--hard", ref, timeout=SLOW)
    git(worktree, "clean", "-fdq", timeout=SLOW)


def staged_changes(worktree: Path) -> bool:
    return not git(worktree, "diff", "--cached", "--quiet", check=False).ok


def amend_message(worktree: Path, message: str) -> str:
    git(worktree, "commit", "--amend", "--no-verify", "--allow-empty", "-q", "-F", "-",
        input=message)
    return head(worktree)


def commit_message(repo: Path, ref: str) -> str:
    return git(repo, "log", "-1", "--format=%B", ref).stdout


def rerere_remaining(worktree: Path) -> list[str]:
    return out(worktree, "rerere", "remaining").splitlines()


def format_patch(repo: Path, base: str, head_: str, outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    names = out(repo, *format_patch_argv(base, head_, outdir)).splitlines()
    return [Path(n) if os.path.isabs(n) else repo / n for n in names]


def range_diff(repo: Path, old_base: str, old_head: str, new_base: str, new_head: str) -> str:
    done = git(repo, *range_diff_argv(old_base, old_head, new_base, new_head), check=False,
               timeout=SLOW)
    if not done.ok:
        raise CommandFailed(done.argv, done.returncode, done.tail)
    return done.stdout


def diff_names(repo: Path, a: str, b: str, paths: Sequence[str] = ()) -> list[str]:
    return out(repo, "diff", "--name-only", a, b, "--", *paths).splitlines()


def diff(repo: Path, a: str, b: str, paths: Sequence[str] = (), context: int = 3) -> str:
    return git(repo, "diff", "--no-color", f"-U{context}", a, b, "--", *paths,
               timeout=SLOW).stdout


def show_file(repo: Path, ref: str, path: str) -> str | None:
    done = git(repo, "show", f"{ref}:{path}", check=False)
    return done.stdout if done.ok else None


def blob_sha(repo: Path, abbrev: str) -> str | None:
    """The full id of the blob *abbrev* names, or None when the repository lacks it."""
    done = git(repo, "rev-parse", "--verify", "--quiet", f"{abbrev}^{{blob}}", check=False)
    return done.stdout.strip() if done.ok and done.stdout.strip() else None


def index_add(repo: Path, env: Mapping[str, str], path: str, blob: str) -> None:
    """Put *blob* at *path* in the index named by ``env["GIT_INDEX_FILE"]``."""
    git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)


def index_file(repo: Path, index: Path, path: str) -> str | None:
    """The text of *path* as a scratch index holds it, or None."""
    done = git(repo, "show", f":{path}", env={"GIT_INDEX_FILE": str(index)}, check=False)
    return done.stdout if done.ok else None


def mailsplit(mbox: Path, outdir: Path) -> list[Path]:
    """Split an mbox into one file per message, in order (``git mailsplit``)."""
    if outdir.exists():
        import shutil

        shutil.rmtree(outdir)
    outdir.mkdir(parents=True)
    run_git(["mailsplit", "-b", "-d4", f"-o{outdir}", str(mbox)])
    return sorted(p for p in outdir.iterdir() if re.fullmatch(r"\d{4}", p.name))


def mailinfo(repo: Path, mail: Path, workdir: Path) -> tuple[str, str, dict[str, str]]:
    """(commit message body, diff, headers) of one mail, as ``git am`` sees them."""
    msg, patch = workdir / "msg", workdir / "patch"
    text = mail.read_text(encoding="utf-8", errors="surrogateescape")
    done = git(repo, "mailinfo", str(msg), str(patch), input=text)
    headers: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(": ")
        headers[key] = value
    return msg.read_text(errors="replace"), patch.read_text(errors="replace"), headers


def config_file_set(path: Path, key: str, value: str) -> None:
    """``git config -f PATH KEY VALUE``: a git-format config file that is not a repository's."""
    run_git(["config", "-f", str(path), key, value])


def config_value(key: str, cwd: Path | None = None) -> str:
    """``git config --get KEY`` (the user's global/system config); '' when unset."""
    done = run_git(["config", "--get", key], cwd=cwd, check=False, timeout=10)
    return done.stdout.strip() if done.ok else ""


def identity(cwd: Path | None = None) -> str | None:
    """``Name <email>`` from ``sendemail.from``, else ``user.name``/``user.email``; None if unset."""
    sender = config_value("sendemail.from", cwd)
    if sender:
        return sender
    name, email = config_value("user.name", cwd), config_value("user.email", cwd)
    return f"{name} <{email}>" if name and email else None


# --------------------------------------------------------------------------- scratch repositories


def init_scratch(path: Path, alternate: Path | None = None) -> None:
    """A bare throwaway repository; *alternate* (a git dir) lends it its objects, read-only."""
    run_git(["init", "--quiet", "--bare", str(path)])
    configure(path)
    if alternate is not None and (alternate / "objects").is_dir():
        (path / "objects" / "info" / "alternates").write_text(f"{alternate / 'objects'}\n")


def write_blob(repo: Path, text: str) -> str:
    """Store *text* as a blob (``git hash-object -w``); its id."""
    return out(repo, "hash-object", "-w", "--stdin", input=text)


def write_tree(repo: Path, index: Path) -> str:
    return out(repo, "write-tree", env={"GIT_INDEX_FILE": str(index)})


def commit_tree(repo: Path, tree: str, parent: str | None, message: str, who: Identity,
                committer: Identity | None = None) -> str:
    env = who.env()
    if committer is not None:
        env.update({"GIT_COMMITTER_NAME": committer.name, "GIT_COMMITTER_EMAIL": committer.email,
                    "GIT_COMMITTER_DATE": committer.date})
    argv = ["commit-tree", tree, "-F", "-"] + (["-p", parent] if parent else [])
    return out(repo, *argv, env=env, input=message)
