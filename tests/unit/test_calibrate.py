"""Unit tests of patchflow.bench.calibrate (A/A rates, measured noise, power) and the fixture."""

from __future__ import annotations

import random
import statistics
from pathlib import Path
from typing import Any

import pytest

from patchflow import stats
from patchflow.bench import ab as bench
from patchflow.bench import calibrate
from patchflow.bench.metrics import METRICS
from patchflow.boot import qemu
from patchflow.config import ConfigDir
from patchflow.result import Status

REPO = Path(__file__).resolve().parents[2]


def _aa_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> bench.BenchDetails:
    rng = random.Random(seed)

    def fake_run_once(kernel: Path, profile: Any, **kw: Any) -> bench.Rep:
        m = {k: 100 * (1 + rng.gauss(0, 0.05)) for k in METRICS}
        return bench.Rep(str(kw["variant"]), int(kw["rep"]), Status.PASS, "", m, "x.log")

    monkeypatch.setattr(bench, "run_once", fake_run_once)
    res = bench.run_ab({v: Path("a") for v in bench.AA_VARIANTS},
                       ConfigDir(REPO).profile("reclaim"), cache=tmp_path,
                       run_dir=tmp_path / f"run{seed}", accel=qemu.AccelChoice("tcg", "t"),
                       aa=True)
    d = res.detail(bench.BenchDetails)
    assert d is not None
    return d


def test_false_positive_rates_and_noise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    benches = [_aa_bench(tmp_path, monkeypatch, s) for s in range(3)]
    rows = {r.metric: r for r in calibrate.false_positive_rates(benches)}
    assert set(rows) == {m for m, v in METRICS.items() if v.better != "none"}
    row = rows["bogo_ops_per_s"]
    assert row.benches == 3 and row.alpha == 0.05
    assert row.false_positives + row.no_difference + row.inconclusive == 3
    noise = calibrate.paired_noise(benches, "bogo_ops_per_s")
    assert len(noise) == sum(d.rounds for d in benches)
    assert 0.03 < statistics.stdev(noise) < 0.12  # sqrt(2) * 5%


def test_power_from_noise_grows_with_the_shift() -> None:
    rng = random.Random(0)
    noise = [rng.gauss(0, 0.07) for _ in range(40)]
    plan = stats.design(10, 0.05)
    small = calibrate.simulated_power(noise, -0.02, plan, better="higher", trials=200)
    large = calibrate.simulated_power(noise, -0.30, plan, better="higher", trials=200)
    assert small < 0.3 and large > 0.95
    found = calibrate.smallest_detectable(noise, plan, better="higher", sign=-1, trials=200)
    assert found is not None and 0.03 <= found[0] <= 0.25 and found[1] >= 0.8


def test_saved_results_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    d = _aa_bench(tmp_path, monkeypatch, 7)
    from patchflow.result import StageResult

    p = tmp_path / "aa-00.json"
    p.write_text(json.dumps(StageResult("bench-aa", Status.PASS, "x", 1.0, "t", d).to_json()))
    [back] = calibrate.details(calibrate.load_results([p]))
    assert back == d
    bad = tmp_path / "aa-01.json"
    bad.write_text("{}")
    with pytest.raises(calibrate.UserError, match="not a saved bench result"):
        calibrate.load_results([bad])


def test_reclaim_fixture_is_labelled_and_only_slows_reclaim() -> None:
    cfg = ConfigDir(REPO).series("reclaim-slowdown-fixture")
    assert "TEST FIXTURE" in cfg.title and "fixture" in cfg.notes
    assert cfg.targets == ("linux-6.12.y",)
    text = (REPO / "series" / "reclaim-slowdown-fixture" / "v1.mbox").read_text()
    assert "NOT FOR MERGING" in text and text.count("diff --git") == 1
    assert "diff --git a/mm/vmscan.c b/mm/vmscan.c" in text
    added = [ln[1:].strip() for ln in text.splitlines()
             if ln.startswith("+") and not ln.startswith("+++")]
    code = [ln for ln in added if ln and not ln.startswith(("/*", "*"))]
    assert code == ["#define PATCHFLOW_FIXTURE_RECLAIM_DELAY_US 200",
                    "udelay(PATCHFLOW_FIXTURE_RECLAIM_DELAY_US);"]
