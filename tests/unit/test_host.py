"""Runner setup (``patchflow ci setup``): which packages, what dpkg says, the apt-get argv."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from patchflow import host, tools
from patchflow.cli import cli
from patchflow.errors import UserError


def test_gate_packages_come_from_the_tool_table() -> None:
    pkgs = tools.setup_packages()
    for needed in ("git", "gcc", "flex", "bison", "libelf-dev", "qemu-system-x86", "stress-ng",
                   "busybox-static", "cpio", "dwarves", "ccache"):
        assert needed in pkgs
    # pip and npm packages are not apt's; tools that cannot be installed here are optional
    assert not any(":" in p for p in pkgs)
    assert "kpatch-build" not in pkgs and "chromium" not in pkgs


def test_stage_groups_narrow_the_list() -> None:
    assert tools.setup_packages(["bench"]) == ["stress-ng"]
    with pytest.raises(ValueError, match="unknown stage 'nosuch'"):
        tools.setup_packages(["nosuch"])


def test_dpkg_status_parsing() -> None:
    # verbatim dpkg-query -W -f '${Package} ${Status}\n' lines (a removed package keeps its config)
    text = ("git install ok installed\nstress-ng deinstall ok config-files\n"
            "libc-bin:amd64 install ok installed\n")
    assert host.parse_dpkg_status(text) == {"git", "libc-bin"}


def test_install_argv() -> None:
    assert host.install_argv(["a", "b"]) == [
        ["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                                      "a", "b"]]


def test_missing_asks_the_real_dpkg() -> None:
    assert host.missing(["dpkg", "no-such-package-patchflow"]) == ["no-such-package-patchflow"]


def test_ci_setup_dry_run_and_bad_stage() -> None:
    runner = CliRunner()
    done = runner.invoke(cli, ["ci", "setup", "--stage", "bench", "--dry-run"])
    assert done.exit_code == 0, done.output
    assert done.output.startswith("ci setup: ")
    bad = runner.invoke(cli, ["ci", "setup", "--stage", "nosuch"])
    assert bad.exit_code == 2 and "unknown stage 'nosuch'" in bad.output


def test_install_refuses_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UserError, match=r"2 packages missing \(x y\) and this is not root"):
        host.install(["x", "y"])
