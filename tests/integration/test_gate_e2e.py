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
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from patchflow.bench.ab import BenchDetails
from patchflow.cli import cli
from patchflow.demo.offline import DEMO_SERIES, publish
from patchflow.gate import records
from patchflow.livepatch.results import LivepatchBuildDetails, LivepatchVerifyDetails
from patchflow.lore import series
from patchflow.state import State
from patchflow.trees import repo as tree
from patchflow.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
TARGET = "linux-6.12.y"
pytestmark = [pytest.mark.integration, pytest.mark.slow]


#: what every stage of the demo series on 6.12 must say (measured on real runs): the
#: stored queue applies cleanly, both kernels build, boot clean, 3 rounds of smoke boots
#: cannot reach a verdict (so "inconclusive": a warning, exit 0), the live patch
#: replaces shrink_folio_list and its helpers and verifies in the guest
EXPECTED = {"check-newer": "pass", "backport": "pass", "build-base": "pass",
            "build-patched": "pass", "boot": "pass", "bench": "warn", "livepatch-build": "pass",
            "livepatch-verify": "pass"}


def test_gate_on_offline_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHFLOW_BENCH_PROFILE", "smoke")
    monkeypatch.setenv("PATCHFLOW_BENCH_REPS", "3")
    monkeypatch.setenv("PATCHFLOW_LIVEPATCH_STRESS", "10")
    # a copy of the config dir: a gate stores its backport queue there, and the
    # checkout's own series/ must not change under a test
    cfg_dir = tmp_path / "cfg"
    for sub in ("series", "targets"):
        shutil.copytree(REPO / sub, cfg_dir / sub)
    ws = Workspace.open(tmp_path / "ws", cfg_dir)
    monkeypatch.setenv("PATCHFLOW_WORKSPACE", str(ws.root))
    cfg = ws.config.series(DEMO_SERIES)
    mirror = publish(ws, cfg, lambda _m: None)
    monkeypatch.setenv("PATCHFLOW_MIRROR", mirror.midmask)
    try:
        with State(ws.db_path) as st:
            series.fetch(ws, st, DEMO_SERIES)
        tree.prepare_tree(ws, TARGET)
        runner = CliRunner()
        args = ["-C", str(cfg_dir), "gate", DEMO_SERIES, "-t", TARGET, "--out", str(tmp_path / "run")]
        first = runner.invoke(cli, args)
        # the demo series is correct, builds, boots and live-patches: the verdict is a pass
        assert first.exit_code == 0, first.output
        assert "verdict: PASS (exit 0)" in first.output
        [(_path, doc)] = records.load_results([tmp_path / "run" / "results.json"])
        assert doc.verdict == records.Verdict(0, "pass")
        got = {e.result.stage: e.result.status.value for e in doc.entries}
        assert got == EXPECTED, first.output
        by = {e.result.stage: e.result for e in doc.entries}
        lp = by["livepatch-build"].detail(LivepatchBuildDetails)
        assert lp is not None and "shrink_folio_list" in [f.name for f in lp.functions]
        verify = by["livepatch-verify"].detail(LivepatchVerifyDetails)
        assert verify is not None and verify.enabled and not verify.failed
        bench = by["bench"].detail(BenchDetails)
        assert bench is not None and bench.environment.accel == "tcg"
        assert len(bench.samples) == 2 * 3 * 8  # 3 boots per variant, 8 metrics each
        if os.environ.get("PATCHFLOW_RECORD_REPORT"):
            _record(tmp_path / "run", Path(os.environ["PATCHFLOW_RECORD_REPORT"]))
        junit = (tmp_path / "run" / "junit.xml").read_text()
        assert junit.count("<testcase") == len(doc.entries) == len(EXPECTED)
        assert "<failure" not in junit and "<error" not in junit
        meta = json.loads((tmp_path / "run" / "metadata.json").read_text())
        assert meta["status"] == "pass" and len(meta["stage_durations"]) == len(EXPECTED)
        # unchanged inputs: the second gate reuses everything and gives the same verdict
        second = runner.invoke(cli, [*args[:-1], str(tmp_path / "run2")])
        assert second.exit_code == 0, second.output
        [(_p2, doc2)] = records.load_results([tmp_path / "run2" / "results.json"])
        assert all(e.cached for e in doc2.entries), second.output
        rep = runner.invoke(cli, ["report", str(tmp_path / "run" / "results.json"), "--out",
                                  str(tmp_path / "report")])
        assert rep.exit_code == 0, rep.output
        html = (tmp_path / "report" / "report.html").read_text()
        # what the report must show for this run, read from the stages' own records
        assert "shrink_folio_list" in html and "emulated QEMU guest (TCG" in html
        assert 'class="st pass">pass</span>' in html
        assert "stress-ng throughput" in html and "bogo ops/s" in html
    finally:
        mirror.stop()


def _record(run: Path, dest: Path) -> None:
    """Keep this run's results.json as the report tests' fixture (tests/data/report/README.md)."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(run / "results.json", dest / "results.json")
