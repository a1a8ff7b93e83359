"""``backport --build-check``: compile the objects each applied patch touches, with the target's flags.

Owns mapping a patch's files to kbuild objects, finding the target's prepared
build dir, rerunning the compile command kbuild recorded there against the
backport worktree, and reading the compiler's errors back as ``file:line``
lines of the patch that caused them (:class:`Compiled`).

Why not ``make O=B path/file.o`` from the backport worktree: kbuild records the
absolute source path in every command it saves (``savedcmd_...`` in
``dir/.file.o.cmd``), so compiling a second tree in the target's one build dir
would make the next base build re-prepare and recompile, and would leave a
half-done backport's objects where the gate's builds look.  So the recorded
command is run again, unchanged except for three things: the target's source
path becomes the backport worktree, the object and its dependency file go to a
scratch dir, and the commands chained after the compiler (objtool, symbol
versions) are dropped.  That is the target's ``.config``, generated headers and
flags, one compiler run per object: seconds, not a kernel build
(benchmarks/bench_build_check.py measures it).  A ``.c`` without a recorded
command is not compiled by the target's config (tinyconfig builds a subset) and
is reported as not built, never as a pass.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from patchflow.errors import UserError
from patchflow.runner import run

COMPILE_TIMEOUT = 600.0
#: source suffixes kbuild turns into ``.o`` with a recorded command
SOURCES = (".c", ".S")
# savedcmd_kernel/ptrace.o := gcc -Wp,-MMD,kernel/.ptrace.o.d -nostdinc ...   (6.2 and later)
# cmd_kernel/ptrace.o := gcc -Wp,-MMD,kernel/.ptrace.o.d -nostdinc ...        (6.1 and earlier)
CMD_RE = re.compile(r"^(?:saved)?cmd_(?P<obj>\S+) := (?P<cmd>.*)$", re.M)
# /wt/kernel/ptrace.c:1090:29: error: 'PF_USER_WORKER' undeclared (first use in this function)
ERROR_RE = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?:\d+:)? (?:fatal )?error: (?P<msg>.*)$")


@dataclass(frozen=True)
class BuildTree:
    """A target's prepared ``O=`` dir and the source tree kbuild recorded for it."""

    build_dir: Path
    srctree: Path


@dataclass(frozen=True)
class Compiled:
    """What compiling one patch's objects gave."""

    status: str  # ok | failed | not-built
    built: tuple[str, ...]
    not_built: tuple[str, ...]
    errors: tuple[str, ...]  # "kernel/ptrace.c:1090: error: 'PF_USER_WORKER' undeclared ..."
    seconds: float


def objects_for(files: Sequence[str]) -> list[str]:
    """kbuild objects of the sources among *files* (``kernel/ptrace.c`` -> ``kernel/ptrace.o``)."""
    out: list[str] = []
    for f in files:
        stem, suffix = os.path.splitext(f)
        if suffix in SOURCES and f"{stem}.o" not in out:
            out.append(f"{stem}.o")
    return out


def prepared(build_dir: Path, target: str) -> BuildTree:
    """The target's build dir if it was configured and built; a user error saying what to run."""
    source = build_dir / "source"
    if not (build_dir / ".config").is_file() or not source.is_symlink():
        raise UserError(f"--build-check: {target} has no prepared build dir ({build_dir}); "
                        f"run `patchflow build SERIES --target {target} --variant base` first")
    return BuildTree(build_dir, Path(os.readlink(source)))


def recorded_command(build_dir: Path, obj: str) -> str | None:
    """The compile command kbuild saved for *obj*, unescaped, or None if it never built it."""
    d, name = os.path.split(obj)
    cmd_file = build_dir / d / f".{name}.cmd"
    try:
        text = cmd_file.read_text(errors="replace")
    except FileNotFoundError:
        return None
    m = CMD_RE.search(text)
    if m is None or m.group("obj") != obj:
        return None
    # kbuild escapes '$' as '$$' and '#' as '$(pound)' when it writes the file
    return m.group("cmd").replace("$(pound)", "#").replace("$$", "$")


def compile_argv(cmd: str, tree: BuildTree, worktree: Path, obj: str, out_dir: Path) -> list[str]:
    """The recorded *cmd* as an argv that compiles *worktree*'s source into *out_dir*.

    Pure; tests/unit/test_backport.py::test_build_check_argv checks it on a
    recorded 6.1 command line.
    """
    words = shlex.split(cmd)
    if ";" in words:  # objtool and friends, chained after the compiler
        words = words[:words.index(";")]
    src = f"{tree.srctree}".rstrip("/")
    dep = f"{os.path.dirname(obj)}/.{os.path.basename(obj)}.d".lstrip("/")
    out: list[str] = []
    for w in words:
        if w == obj:
            w = str(out_dir / os.path.basename(obj))
        elif w.endswith(f",{dep}") and w.startswith("-Wp,"):
            w = w[: -len(dep)] + str(out_dir / os.path.basename(dep))
        if w.endswith(src):  # "-I/src" itself (ccflags-y += -I$(srctree))
            w = w[: -len(src)] + str(worktree)
        out.append(w.replace(src + "/", f"{worktree}/"))
    return out


def errors_of(output: str, worktree: Path, limit: int = 8) -> list[str]:
    """The compiler's error lines, paths relative to the tree (``kernel/ptrace.c:1090: error: ...``)."""
    prefix = f"{worktree}/"
    out: list[str] = []
    for line in output.splitlines():
        m = ERROR_RE.match(line.strip())
        if m:
            path = m.group("file").removeprefix(prefix)
            out.append(f"{os.path.normpath(path)}:{m.group('line')}: error: {m.group('msg')}")
    return out[:limit]


def compile_patch(tree: BuildTree, worktree: Path, files: Sequence[str], log: Path) -> Compiled:
    """Compile the objects of *files* from *worktree* with the target's recorded commands."""
    start = time.monotonic()
    built: list[str] = []
    not_built: list[str] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="patchflow-buildcheck-") as tmp:
        for obj in objects_for(files):
            cmd = recorded_command(tree.build_dir, obj)
            if cmd is None:
                not_built.append(obj)
                continue
            argv = compile_argv(cmd, tree, worktree, obj, Path(tmp))
            # LC_ALL=C: gcc's messages in ASCII quotes, the same on every host
            done = run(argv, cwd=tree.build_dir, env={"LC_ALL": "C"}, timeout=COMPILE_TIMEOUT,
                       log=log, check=False)
            built.append(obj)
            if not done.ok:
                errors += errors_of(done.stdout + done.stderr, worktree) or [
                    f"{obj}: compiler exited {done.returncode}: {done.tail.strip()[-300:]}"]
    status = "failed" if errors else "ok" if built else "not-built"
    return Compiled(status, tuple(built), tuple(not_built), tuple(errors),
                    round(time.monotonic() - start, 2))
