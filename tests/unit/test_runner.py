"""The one subprocess runner: errors carry the tool's package or the output tail."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchflow.errors import CommandFailed, CommandTimeout, ToolNotFound
from patchflow.runner import run


def test_stdout_and_stderr_kept_apart_and_logged(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    res = run(["sh", "-c", "echo out; echo err >&2"], log=log)
    assert res.stdout == "out\n"
    assert res.stderr == "err\n"
    text = log.read_text()
    assert "out" in text and "err" in text and text.startswith("$ sh -c")


def test_missing_tool_names_package() -> None:
    with pytest.raises(ToolNotFound, match=r"qemu-system-x86_64 .*apt-get install qemu-system-x86"):
        run(["qemu-system-x86_64", "--version"])


@pytest.fixture(autouse=True)
def _empty_path_for_missing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.name == "test_missing_tool_names_package":
        monkeypatch.setenv("PATH", "/nonexistent")


def test_failure_carries_tail() -> None:
    with pytest.raises(CommandFailed) as err:
        run(["sh", "-c", "for i in $(seq 1 100); do echo line$i; done; exit 3"])
    assert err.value.returncode == 3
    assert "line100" in str(err.value) and "line1\n" not in err.value.output_tail


def test_check_false_returns_result() -> None:
    assert run(["sh", "-c", "exit 4"], check=False).returncode == 4


def test_timeout_kills_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "child-survived"
    with pytest.raises(CommandTimeout):
        run(["sh", "-c", f"(sleep 2; touch {marker}) & sleep 30"], timeout=0.5)
    import time

    time.sleep(2.5)
    assert not marker.exists()


def test_no_shell_interpretation(tmp_path: Path) -> None:
    res = run(["echo", "$(touch pwned)", ";", "|"], cwd=tmp_path)
    assert res.stdout.strip() == "$(touch pwned) ; |"
    assert not (tmp_path / "pwned").exists()


def test_input_is_fed() -> None:
    assert run(["cat"], input="hello\n").stdout == "hello\n"


def test_log_limit(tmp_path: Path) -> None:
    """A child printing without end cannot fill the disk with its log (a guest console)."""
    log = tmp_path / "console.log"
    run(["sh", "-c", "i=0; while [ $i -lt 20000 ]; do echo 0123456789abcdef; i=$((i+1)); done"],
        log=log, log_limit=10_000, capture=False)
    text = log.read_text()
    assert len(text) < 10_200 and text.rstrip().endswith("[patchflow: log truncated at 10000 bytes]")


def test_interrupt_kills_the_group(tmp_path: Path) -> None:
    """An interrupt (SIGINT, or SIGTERM as the CLI turns it into one) ends the child and its
    children: nothing is orphaned, and the interrupt goes on up to the caller."""
    import os
    import signal
    import threading
    import time

    pidfile = tmp_path / "grandchild"
    script = f"sleep 300 & echo $! > {pidfile}; wait"
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        run(["sh", "-c", script], timeout=60)
    grandchild = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the grandchild {grandchild} survived the interrupt")
