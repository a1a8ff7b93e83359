"""The CLI skin: help, exit codes, json output, doctor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from patchflow.cli import cli


def test_help_lists_nouns_and_exit_codes() -> None:
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0
    for noun in ("series", "doctor"):
        assert noun in res.output
    assert "Exit codes:" in res.output and "2  incomplete run" in res.output


def test_help_does_not_import_heavy_modules() -> None:
    code = ("import sys; from patchflow.cli import main\n"
            "sys.argv=['patchflow','--help']\n"
            "try: main()\nexcept SystemExit: pass\n"
            "heavy=[m for m in ('git','unidiff','jinja2','rich','patchflow.lore.series') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "HEAVY []" in out


def test_unknown_series_is_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "patchflow", "series", "fetch", "no-such-series"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown series 'no-such-series'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_series_list_json_empty_workspace() -> None:
    res = CliRunner().invoke(cli, ["series", "list", "--format", "json"])
    assert res.exit_code == 0, res.output
    names = [r["name"] for r in json.loads(res.output)]
    assert "batch-tlb-flush" in names


def _fake_path(tmp_path: Path, tools: list[str]) -> str:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for t in tools:
        f = bindir / t
        f.write_text("#!/bin/sh\nexit 0\n")
        f.chmod(0o755)
    return str(bindir)


def test_doctor_names_packages_and_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _fake_path(tmp_path, ["git", "make"]))
    res = CliRunner().invoke(cli, ["doctor", "--no-kvm", "--stage", "boot", "--stage", "series"])
    assert res.exit_code == 2
    assert "MISSING  qemu-system-x86_64  -> apt-get install qemu-system-x86" in res.output
    assert "install: apt-get install" in res.output and "qemu-system-x86" in res.output


def test_doctor_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _fake_path(tmp_path, ["git", "b4"]))
    res = CliRunner().invoke(cli, ["doctor", "--no-kvm", "--stage", "series", "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["stages"] == {"series": True}
    assert data["ok"] is True and data["missing_packages"] == []


def test_kvm_probe_argv(tmp_path: Path) -> None:
    from patchflow.doctor import kvm_probe_argv

    argv = kvm_probe_argv("kvm", tmp_path / "d")
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "kvm"]
    assert "-nodefaults" in argv and f"file:{tmp_path / 'd'}" in argv
