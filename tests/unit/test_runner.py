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
