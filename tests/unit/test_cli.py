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
    doc = json.loads(res.output)
    assert doc["schema"] == "patchflow.series-list/2"
    assert "batch-tlb-flush" in [r["name"] for r in doc["series"]]


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
    from patchflow.boot.qemu import kvm_probe_argv

    argv = kvm_probe_argv(tmp_path / "d")
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "kvm"]
    assert "-nodefaults" in argv and f"file:{tmp_path / 'd'}" in argv


def _results_with(tmp_path: Path, status: str) -> Path:
    """A results.json of one stage with *status*, written by the gate's own records code."""
    from patchflow.gate.records import Entry, ResultsDoc, SeriesBlock, Verdict, write_records
    from patchflow.result import StageResult, Status

    st = Status(status)
    doc = ResultsDoc("r1", "0", SeriesBlock("s", revision=1), ("t",), ("boot",),
                     "2026-12-01T00:00:00Z", "2026-12-01T00:01:00Z", "patchflow gate s",
                     Verdict(st.exit_code, status), (Entry(StageResult("boot", st, "x", 1.0, "t")),))
    write_records(tmp_path, doc)
    return tmp_path / "results.json"


CONTRACT = [
    # (args, expected exit code): success, a real failure, bad input, bad usage
    (["series", "list"], 0),
    (["report", "--verdict", "RESULTS_FAIL"], 1),
    (["series", "fetch", "no-such-series"], 2),
    (["report", "NOT_RESULTS"], 2),
    (["serise", "list"], 2),
    (["series", "list", "--format", "yaml"], 2),
]


def _args(args: list[str], tmp_path: Path) -> list[str]:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    fail = _results_with(tmp_path / "r", "fail")
    return [str(fail) if a == "RESULTS_FAIL" else str(bad) if a == "NOT_RESULTS" else a
            for a in args]


@pytest.mark.parametrize(("args", "code"), CONTRACT, ids=lambda x: str(x))
def test_exit_codes_through_clirunner(tmp_path: Path, args: list[str], code: int) -> None:
    res = CliRunner().invoke(cli, ["-w", str(tmp_path / "ws"), *_args(args, tmp_path)])
    assert res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "Traceback" not in res.output


@pytest.mark.parametrize("how", ["script", "module"])
@pytest.mark.parametrize(("args", "code"), CONTRACT, ids=lambda x: str(x))
def test_exit_codes_through_the_installed_script(tmp_path: Path, args: list[str], code: int,
                                                 how: str) -> None:
    import shutil

    exe = [shutil.which("patchflow") or "patchflow"] if how == "script" else [
        sys.executable, "-m", "patchflow"]
    proc = subprocess.run([*exe, "-w", str(tmp_path / "ws"), *_args(args, tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    if code == 2 and args[0] != "serise" and "--format" not in args:
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_top_level_typo_gets_a_suggestion() -> None:
    res = CliRunner().invoke(cli, ["serise", "list"])
    assert res.exit_code == 2 and "Did you mean 'series'?" in res.output


@pytest.mark.parametrize(("args", "kind"), [
    (["status", "NOSUCH", "--format", "json"], "NotFound"),
    (["series", "diff", "x", "v1", "vx", "--format=json"], "BadParameter"),
    (["series", "list", "--bogus", "--format", "json"], "NoSuchOption"),
    (["statsu", "--format", "json"], "UsageError"),
])
def test_json_errors(args: list[str], kind: str) -> None:
    """Under --format json an error is one patchflow.error/1 object on stdout, same exit code."""
    proc = subprocess.run([sys.executable, "-m", "patchflow", *args], capture_output=True,
                          text=True)
    assert proc.returncode == 2, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "patchflow.error/1" and doc["exit_code"] == 2
    assert doc["kind"] == kind and doc["message"]
    assert "Traceback" not in proc.stderr
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2 and json.loads(res.stdout)["kind"] == kind


def test_wants_json_stops_at_double_dash() -> None:
    from patchflow.cli import wants_json

    assert wants_json(["series", "show", "x", "--format", "json"])
    assert not wants_json(["series", "fetch", "--", "--format", "json"])
    assert not wants_json(["series", "show", "json"])


@pytest.mark.parametrize(("line", "number"), [
    # first lines of `TOOL --version`, recorded on Debian 12
    ("git version 2.39.5", "2.39.5"),
    ("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)", "7.2.22"),
    ("gcc (Debian 12.2.0-14+deb12u1) 12.2.0", "12.2.0"),
    ("stress-ng, version 0.15.06 (gcc 12.2.0, x86_64 Linux 6.18.44-fc-v1098)", "0.15.06"),
    ("0.16.0", "0.16.0"),
    ("GNU Make 4.3", "4.3"),
    ("no number here", ""),
])
def test_doctor_short_versions(line: str, number: str) -> None:
    from patchflow.doctor import short_version

    assert short_version(line) == number


def test_doctor_stage_list_versions_and_cache_json() -> None:
    """The real host tools: --stage build,boot checks those two, with versions and free space."""
    res = CliRunner().invoke(cli, ["doctor", "--no-kvm", "--stage", "build,boot", "--format",
                                   "json"])
    doc = json.loads(res.stdout)
    assert doc["schema"] == "patchflow.doctor/2"
    assert sorted(doc["stages"]) == ["boot", "build"]
    assert {"gcc", "qemu-system-x86_64"} <= set(doc["versions"])
    assert doc["cache"]["free_bytes"] > 0
    assert doc["checked"].endswith("Z") and "T" in doc["checked"]
    res = CliRunner().invoke(cli, ["doctor", "--no-kvm", "--stage", "build,boot"])
    assert "versions   " in res.output and "GiB free" in res.output


def test_status_unknown_series_is_one_line_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "patchflow", "status", "NOSUCH"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["error: unknown series 'NOSUCH' (fetched: none)"]
