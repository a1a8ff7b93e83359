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

from patchflow import tools
from patchflow.errors import CommandFailed, CommandTimeout, ToolNotFound

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
        raise ToolNotFound(tool, tools.package_of(tool))
    return path


class _Output:
    """Where a child's output goes: the log file (capped), the kept text, the tail."""

    def __init__(self, log: Path | None, args: Sequence[str], capture: bool,
                 log_limit: int | None) -> None:
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.out: list[str] = []
        self.err: list[str] = []
        self.capture = capture
        self.limit = log_limit
        self.written = 0
        self.lock = threading.Lock()
        self.closed = False
        self.logf: IO[str] | None = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            self.logf = open(log, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
            self.logf.write(f"$ {' '.join(args)}\n")
            self.logf.flush()

    def add(self, line: str, stderr: bool) -> None:
        with self.lock:
            if self.closed:
                return
            self.tail.append(line)
            if stderr:
                self.err.append(line)
            elif self.capture:
                self.out.append(line)
            if self.logf is None:
                return
            if self.limit is not None and self.written + len(line) > self.limit:
                if self.written <= self.limit:
                    self.logf.write(f"\n[patchflow: log truncated at {self.limit} bytes]\n")
                    self.written = self.limit + 1
                return
            self.written += len(line)
            self.logf.write(line)
            self.logf.flush()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            if self.logf is not None:
                self.logf.close()


def _kill_group(proc: subprocess.Popen[str], grace: float = 5.0) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever of it is left.

    The leader gets *grace* seconds to end (QEMU, make pass SIGTERM on); the
    SIGKILL that follows also takes members that outlived it or ignored the
    signal, and a second interrupt arriving meanwhile does not skip it
    (tests/integration/test_signals.py checks the process tree).
    """
    try:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5.0)


def _start(exe: str, args: list[str], cwd: Path | str | None, env: dict[str, str],
           has_input: bool) -> subprocess.Popen[str]:
    try:
        return subprocess.Popen(  # noqa: S603 - argv list, no shell
            [exe, *args[1:]],
            cwd=os.fspath(cwd) if cwd is not None else None,
            env=env,
            stdin=subprocess.PIPE if has_input else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            # its own process group, so that a timeout or an interrupt ends the
            # whole tree (make's children, b4's git) and nothing is orphaned
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise ToolNotFound(args[0], tools.package_of(args[0])) from exc


def _feed(proc: subprocess.Popen[str], text: str) -> None:
    def feed() -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(text)
            proc.stdin.close()
        except BrokenPipeError:
            pass

    threading.Thread(target=feed, daemon=True).start()


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
    log_limit: int | None = None,
) -> Completed:
    """Run *argv* (never through a shell).

    ``env`` is merged over the current environment, after removing the
    variables named in ``unset`` from it.  Output (stdout and stderr
    interleaved) is appended to *log* as it arrives, at most *log_limit*
    bytes of it.  With ``check=True`` a non-zero exit raises
    :class:`CommandFailed` carrying the output tail; with ``check=False`` it
    is returned for the caller to interpret as a result.  A timeout kills the
    whole process group and raises :class:`CommandTimeout`; so does an
    interrupt (SIGINT, or SIGTERM turned into one by the CLI), which is then
    re-raised (tests/unit/test_runner.py::test_interrupt_kills_the_group).
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("empty argv")
    exe = which(args[0]) if os.sep not in args[0] else args[0]
    full_env = {k: v for k, v in os.environ.items() if k not in unset}
    if env:
        full_env.update(env)
    start = time.monotonic()
    output = _Output(log, args, capture, log_limit)
    try:
        proc = _start(exe, args, cwd, full_env, input is not None)
    except BaseException:
        output.close()
        raise
    if input is not None:
        _feed(proc, input)

    def pump_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            output.add(line, stderr=True)

    err_thread = threading.Thread(target=pump_stderr, daemon=True)
    err_thread.start()
    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, on_timeout)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.add(line, stderr=False)
        rc = proc.wait()
        err_thread.join(timeout=5)
    except BaseException:
        _kill_group(proc)
        # the stderr pump may still be writing: let it see EOF before the log closes
        # (a closed log then made the pump thread print a traceback on an interrupt)
        err_thread.join(timeout=5)
        raise
    finally:
        timer.cancel()
        output.close()
    duration = time.monotonic() - start
    tail_text = "".join(output.tail)
    if timed_out.is_set():
        raise CommandTimeout(args, timeout, tail_text)
    done = Completed(args, rc, "".join(output.out), "".join(output.err), tail_text, duration)
    if check and rc != 0:
        raise CommandFailed(args, rc, tail_text)
    return done
