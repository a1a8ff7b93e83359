"""Shared fixtures: every test gets its own HOME, XDG dirs, git config and workspace.

Expensive, content-addressed artefacts (Debian downloads, kernel repositories,
kernel builds) live in the shared cache ``$PATCHFLOW_CACHE`` so that a second
run reuses them; everything else is per test.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Take SIGINT back when the suite was started with it ignored.

    A background job of a non-interactive shell (``bash .ci/run &``, nohup)
    starts with SIGINT ignored, Python then installs no KeyboardInterrupt
    handler, and every command a test starts inherits the ignore: the signal
    tests would wait forever for an interrupt that never arrives.  A caught
    signal is reset to its default on exec, so children get SIGINT back too.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

REAL_CACHE = Path(os.environ.get("PATCHFLOW_CACHE")
                  or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "patchflow")
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local/share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    # the shared artefact cache stays where it was (see module docstring)
    monkeypatch.setenv("PATCHFLOW_CACHE", str(REAL_CACHE))
    monkeypatch.setenv("PATCHFLOW_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("PATCHFLOW_CONFIG_DIR", str(REPO_ROOT))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test Author")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "author@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test Committer")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "committer@example.com")
    monkeypatch.delenv("GIT_CONFIG_COUNT", raising=False)
    monkeypatch.delenv("PI_CONFIG", raising=False)
    (home / ".gitconfig").write_text("[user]\n\tname = Test User\n\temail = user@example.com\n"
                                     "[init]\n\tdefaultBranch = main\n")
    yield tmp_path
