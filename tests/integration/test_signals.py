"""SIGINT and SIGTERM to real patchflow commands: no orphans, and a record of the interrupt.

Issue 13: children ran in their own sessions and were never killed (b4, make
and QEMU outlived Ctrl-C), and a SIGTERM during ``gate`` left no
results.json or junit.xml with the run "running" forever.  Each test starts
the real command, waits until the child it names is running (read from the
process tree in /proc), signals patchflow alone (as a CI runner or systemd
does: the children are in other sessions and never see it), and then checks
that every process of that tree is gone and what was recorded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..attacklib import REPO_ROOT
from ..conftest import REAL_CACHE
from .conftest import TARGET_612, BuiltKernel

pytestmark = [pytest.mark.integration]
DATA = Path(__file__).parent.parent / "data" / "livepatch"
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of *pid*, or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), fields[0]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def descendants(root: int) -> dict[int, str]:
    """Every live process below *root* (children in other sessions too), with its cmdline."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _stat(int(d.name))) is not None:
            parents[int(d.name)] = st[0]
    out: dict[int, str] = {}
    frontier = [root]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in out:
                out[child] = _cmdline(child)
                frontier.append(child)
    return out


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] != "Z"


def _wait_for(what: str, pred: Callable[[], dict[int, str]], proc: subprocess.Popen[str],
              timeout: float) -> dict[int, str]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = pred()
        if found:
            return found
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"patchflow ended before {what} ran:\n{out}\n{err}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"{what} never ran")


@contextmanager
def blackhole() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: a lore mirror that hangs."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join(timeout=5)
        for c in held:
            c.close()
        srv.close()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HOME": str(home),
            "PATCHFLOW_CACHE": str(REAL_CACHE), "PATCHFLOW_WORKSPACE": str(tmp_path / "ws"),
            "PATCHFLOW_CONFIG_DIR": str(REPO_ROOT), "CI": "1", **extra}


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "patchflow", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _interrupt(proc: subprocess.Popen[str], sig: int, child: str, timeout: float,
               settle: float = 0.5) -> tuple[dict[int, str], str, str]:
    """Wait for *child* below *proc*, signal *proc*; (the tree as it was, stdout, stderr).

    The gate first asks each tool for its version (``b4 --version``, ...): those
    probes are not the child this waits for.  On a loaded machine they last long
    enough to be caught, and the real b4 had not started 0.5 s later.
    """
    def working(c: str) -> bool:
        return child in c and "--version" not in c

    _wait_for(child, lambda: {p: c for p, c in descendants(proc.pid).items() if working(c)},
              proc, timeout)
    time.sleep(settle)  # let it get going (b4 connected, QEMU booting, make compiling)
    tree = descendants(proc.pid)
    assert any(working(c) for c in tree.values()), tree
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return tree, out, err


def _no_orphans(tree: dict[int, str]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in tree):
        time.sleep(0.1)
    left = {p: c for p, c in tree.items() if alive(p)}
    assert not left, f"left running: {left}"


def _runs(ws: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(ws / "state.db") as db:
        return [(r[0], r[1]) for r in db.execute("SELECT command, status FROM runs")]


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_gate_interrupted_while_b4_fetches(tmp_path: Path, name: str) -> None:
    """The gate's first stage runs b4 against a mirror that hangs; then the signal."""
    out_dir = tmp_path / "run"
    with blackhole() as port:
        env = _env(tmp_path, PATCHFLOW_MIRROR=f"http://127.0.0.1:{port}/linux-mm/%s")
        proc = _start(["gate", "batch-tlb-flush-demo", "-t", TARGET_612, "--out", str(out_dir)],
                      env)
        tree, out, err = _interrupt(proc, SIGNALS[name], "b4", timeout=60)
    assert proc.returncode == 2, out + err
    assert "Traceback" not in err
    assert "verdict: interrupted (exit 2)" in out, out + err
    _no_orphans(tree)
    results = json.loads((out_dir / "results.json").read_text())
    assert results["verdict"] == {"exit_code": 2, "status": "interrupted"}
    junit = (out_dir / "junit.xml").read_text()
    assert "<testsuite" in junit
    assert json.loads((out_dir / "metadata.json").read_text())["status"] == "interrupted"
    assert _runs(tmp_path / "ws") == [("gate", "interrupted")]


def test_gate_interrupted_then_resumed_records_both(tmp_path: Path) -> None:
    """The same command after an interrupt runs again and is recorded on its own."""
    with blackhole() as port:
        env = _env(tmp_path, PATCHFLOW_MIRROR=f"http://127.0.0.1:{port}/linux-mm/%s")
        first = _start(["gate", "batch-tlb-flush-demo", "-t", TARGET_612, "--out",
                        str(tmp_path / "r1")], env)
        tree, _out, _err = _interrupt(first, signal.SIGTERM, "b4", timeout=60)
        _no_orphans(tree)
        second = _start(["gate", "batch-tlb-flush-demo", "-t", TARGET_612, "--out",
                         str(tmp_path / "r2")], env)
        tree, _out, _err = _interrupt(second, signal.SIGINT, "b4", timeout=60)
        _no_orphans(tree)
    assert _runs(tmp_path / "ws") == [("gate", "interrupted"), ("gate", "interrupted")]


def test_series_fetch_interrupted_kills_b4(tmp_path: Path) -> None:
    with blackhole() as port:
        proc = _start(["series", "fetch", "batch-tlb-flush-demo", "--mirror",
                       f"http://127.0.0.1:{port}/linux-mm/%s"], _env(tmp_path))
        tree, out, err = _interrupt(proc, signal.SIGINT, "b4", timeout=60)
    assert proc.returncode == 2 and "interrupted" in err, out + err
    assert "Traceback" not in err
    _no_orphans(tree)


@pytest.mark.slow
def test_livepatch_build_interrupted_kills_make(base_612: BuiltKernel, tmp_path: Path) -> None:
    """`livepatch build` runs gcc and make (kbuild M=); SIGINT while make runs."""
    env = _env(tmp_path)
    proc = _start(["livepatch", "build", "cmdline", "-t", TARGET_612, "--patch",
                   str(DATA / "patches" / "cmdline.patch"), "--out", str(tmp_path / "lp")], env)
    tree, out, err = _interrupt(proc, signal.SIGINT, "make", timeout=600, settle=0.2)
    assert proc.returncode == 2 and "interrupted" in err, out + err
    assert "Traceback" not in err
    _no_orphans(tree)
    assert _runs(tmp_path / "ws") == [("livepatch-build", "interrupted")]


@pytest.mark.slow
def test_boot_interrupted_kills_qemu(base_612: BuiltKernel, tmp_path: Path) -> None:
    env = _env(tmp_path)
    proc = _start(["boot", "-t", TARGET_612, "--variant", "base", "--accel", "tcg"], env)
    tree, out, err = _interrupt(proc, signal.SIGTERM, "qemu-system-x86_64", timeout=600,
                                settle=1.0)
    assert proc.returncode == 2 and "interrupted" in err, out + err
    assert "Traceback" not in err
    _no_orphans(tree)
    assert _runs(tmp_path / "ws") == [("boot", "interrupted")]
