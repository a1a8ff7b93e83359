"""End to end: ``patchflow gate`` on the offline demo (local mirror, demo series, Debian 6.12).

Real parts all the way: public-inbox serves the demo threads, b4 fetches
them, the Debian-built 6.12 tree takes the backport, kbuild builds base and
patched, QEMU boots them, stress-ng runs the A/B benchmark and the native
live patch is built and verified in a guest.  Kernel sources and builds live
in the shared cache ($PATCHFLOW_CACHE), so a second run reuses them; the
benchmark uses the short "smoke" profile and 3 boots per variant to keep CI
inside its budget.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from patchflow.cli import cli
from patchflow.demo.offline import DEMO_SERIES, publish
from patchflow.gate import run as gate
from patchflow.lore import series
from patchflow.state import State
from patchflow.trees import repo as tree
from patchflow.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
TARGET = "linux-6.12.y"
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_gate_on_offline_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHFLOW_BENCH_PROFILE", "smoke")
    monkeypatch.setenv("PATCHFLOW_BENCH_REPS", "3")
    monkeypatch.setenv("PATCHFLOW_LIVEPATCH_STRESS", "10")
    ws = Workspace.open(tmp_path / "ws", REPO)
    monkeypatch.setenv("PATCHFLOW_WORKSPACE", str(ws.root))
    cfg = ws.config.series(DEMO_SERIES)
    mirror = publish(ws, cfg, lambda _m: None)
    monkeypatch.setenv("PATCHFLOW_MIRROR", mirror.midmask)
    try:
        with State(ws.db_path) as st:
            series.fetch(ws, st, DEMO_SERIES)
        tree.prepare_tree(ws, TARGET)
        runner = CliRunner()
        args = ["-C", str(REPO), "gate", DEMO_SERIES, "-t", TARGET, "--out", str(tmp_path / "run")]
        first = runner.invoke(cli, args)
        # the demo series is correct, builds, boots and live-patches: the verdict is a pass
        assert first.exit_code == 0, first.output
        doc = json.loads((tmp_path / "run" / "results.json").read_text())
        stages = {r["stage"]: r for r in doc["results"]}
        assert set(stages) == {s.name for s in gate.default_stages()}
        assert all(r["status"] != "error" for r in doc["results"]), first.output
        assert stages["backport"]["status"] == "pass", first.output
        assert stages["build-patched"]["status"] in ("pass", "warn"), first.output
        assert stages["boot"]["status"] == "pass", first.output
        assert stages["livepatch-verify"]["status"] == "pass", first.output
        junit = (tmp_path / "run" / "junit.xml").read_text()
        assert junit.count("<testcase") == len(doc["results"])
        meta = json.loads((tmp_path / "run" / "metadata.json").read_text())
        assert meta["status"] in ("pass", "fail") and meta["stage_durations"]
        # unchanged inputs: the second gate reuses everything and gives the same verdict
        second = runner.invoke(cli, [*args[:-1], str(tmp_path / "run2")])
        assert second.exit_code == first.exit_code, second.output
        doc2 = json.loads((tmp_path / "run2" / "results.json").read_text())
        assert all(r["cached"] for r in doc2["results"]
                   if r["status"] in ("pass", "warn", "fail")), second.output
        rep = runner.invoke(cli, ["report", str(tmp_path / "run" / "results.json"), "--out",
                                  str(tmp_path / "report")])
        assert rep.exit_code == 0 and (tmp_path / "report" / "report.html").exists()
    finally:
        mirror.stop()
