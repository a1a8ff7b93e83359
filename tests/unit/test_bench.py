"""Unit tests of the bench stage: profiles, guest snippet, parsers on recorded runs, A/B logic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from patchflow import stats
from patchflow.bench import ab as bench
from patchflow.bench import metrics
from patchflow.bench.metrics import METRICS
from patchflow.boot import qemu
from patchflow.config import PROFILE_DIR, ConfigDir, load_profile
from patchflow.errors import ConfigError, NotFound
from patchflow.result import Status

REPO = Path(__file__).resolve().parents[2]


def find_profile(name: str, root: Path = REPO) -> Any:
    return ConfigDir(root).profile(name)

DATA = Path(__file__).resolve().parent.parent / "data" / "stress-ng"
GOLDEN = DATA / "golden"


@pytest.mark.parametrize("case", sorted(p.name for p in DATA.iterdir() if (p / "expected.json").exists()))
def test_stress_ng_corpus(case: str) -> None:
    folder = DATA / case
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "expected.json"}
    want = json.loads((folder / "expected.json").read_text())
    if "error" in want:
        with pytest.raises(metrics.IncompleteRun) as exc:
            metrics.run_metrics(files)
        assert str(exc.value) == want["error"]
    else:
        got = metrics.run_metrics(files)
        assert got == pytest.approx(want)


def test_parse_interrupts_sums_cpus_only() -> None:
    text = ("           CPU0       CPU1\n"
            "  0:        203          0   IO-APIC   2-edge      timer\n"
            " 24:          5          7   PCI-MSI 512000-edge      virtio0\n"
            "CAL:        358        204   Function call interrupts\n"
            "TLB:          1          0   TLB shootdowns\n"
            "ERR:          0\n")
    assert metrics.parse_interrupts(text) == {"0": 203, "24": 12, "CAL": 562, "TLB": 1, "ERR": 0}


def test_parse_stress_yaml_metrics_only() -> None:
    y = (DATA / "debian-6.1-smoke" / "stress.yaml").read_text()
    items = metrics.parse_stress_yaml(y)
    assert items == [{"stressor": "vm", "bogo-ops": "1246",
                      "bogo-ops-per-second-usr-sys-time": "143.933176",
                      "bogo-ops-per-second-real-time": "287.313860", "wall-clock-time": "4.336721",
                      "user-time": "2.205965", "system-time": "6.450830",
                      "cpu-usage-per-instance": "99.808073", "max-rss": "34680"}]


def test_reclaim_profile_scales_with_vcpus() -> None:
    p = find_profile("reclaim")
    assert p.vm_method != "all"  # pinned: "all" reaches the slow walk-flush (ENVIRONMENT.md)
    argv2, argv4 = bench.stress_argv(p, 2), bench.stress_argv(p, 4)
    assert argv4[argv4.index("--vm") + 1] == str(2 * int(argv2[argv2.index("--vm") + 1]))
    assert p.memcg_mb(4) == 2 * p.memcg_mb(2)
    # the workload must not fit in the memcg, or nothing is reclaimed
    assert p.vm_bytes_mb(2) > p.memcg_mb(2)  # --vm-bytes is the total over the workers
    assert p.vm_bytes_mb(4) == 2 * p.vm_bytes_mb(2)
    assert {"--vm-keep", "--metrics", "--yaml"} <= set(argv2)
    # one declaration of each metric's direction, not one per profile
    assert METRICS["bogo_ops_per_s"].better == "higher"
    assert METRICS["tlb_shootdowns"].better == "lower"
    assert set(p.primary) <= {m for m, d in METRICS.items() if d.better != "none"}


def test_bench_snippet_golden() -> None:
    p = find_profile("reclaim")
    text = bench.bench_snippet(p, 2)
    assert text == (GOLDEN / "bench-reclaim-2cpu.sh").read_text()


def test_profile_validation(tmp_path: Path) -> None:
    good = (PROFILE_DIR / "smoke.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(good + "\nsurprise = 1\n")
    with pytest.raises(ConfigError, match="surprise"):
        load_profile(bad)
    bad.write_text(good.replace('vm_method = "write64"', 'vm_method = "write64; reboot"'))
    with pytest.raises(ConfigError, match="vm_method"):
        load_profile(bad)
    bad.write_text(good.replace('primary = ["bogo_ops_per_s"', 'primary = ["pgscan"'))
    with pytest.raises(ConfigError, match=r"primary\[0\]: not a judged metric: 'pgscan'"):
        load_profile(bad)
    with pytest.raises(NotFound, match="known: .*reclaim"):
        find_profile("nope")


def test_config_dir_profile_wins(tmp_path: Path) -> None:
    d = tmp_path / "targets" / "profiles"
    d.mkdir(parents=True)
    (d / "reclaim.toml").write_text((PROFILE_DIR / "smoke.toml").read_text())
    assert find_profile("reclaim", tmp_path).path == d / "reclaim.toml"


def test_interleaved_never_all_a_first() -> None:
    order = bench.interleaved(4)
    assert order == [(0, "base"), (0, "patched"), (1, "patched"), (1, "base"),
                     (2, "base"), (2, "patched"), (3, "patched"), (3, "base")]


def _rep(variant: str, rep: int, bogo: float, status: Status = Status.PASS) -> bench.Rep:
    m = {k: 1.0 for k in METRICS}
    m["bogo_ops_per_s"] = bogo
    return bench.Rep(variant, rep, status, "", m if status is Status.PASS else {}, "x.log")


def _fake_runs(monkeypatch: pytest.MonkeyPatch, figures: dict[str, list[float]],
               calls: list[tuple[str, int]] | None = None) -> None:
    def fake_run_once(kernel: Path, profile: Any, **kw: Any) -> bench.Rep:
        v, r = str(kw["variant"]), int(kw["rep"])
        if calls is not None:
            calls.append((v, r))
        return _rep(v, r, figures[v][r])

    monkeypatch.setattr(bench, "run_once", fake_run_once)


def test_run_ab_verdicts_without_booting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_once is replaced by recorded figures: the orchestration and verdict logic only."""
    figures = {"base": [100.0, 101, 99, 100, 102, 98, 100, 101, 99, 100],
               "patched": [80.0, 81, 79, 82, 80, 78, 81, 80, 79, 82]}
    calls: list[tuple[str, int]] = []
    _fake_runs(monkeypatch, figures, calls)
    p = find_profile("reclaim")
    res = bench.run_ab({"base": Path("a"), "patched": Path("b")}, p, cache=tmp_path,
                       run_dir=tmp_path / "run", accel=qemu.AccelChoice("tcg", "test"), reps=10)
    d = res.detail(bench.BenchDetails)
    assert d is not None
    by = {c.metric: c for c in d.comparisons}
    assert by["bogo_ops_per_s"].verdict == stats.REGRESSED
    # identical runs: the interval [0, 0] is inside the 10% margin
    assert by["tlb_shootdowns"].verdict == stats.NO_DIFFERENCE
    assert res.status is Status.FAIL  # a primary metric regressed
    # the stopping rule: 7 rounds is the first look of a 10-round design that can decide
    assert d.rounds == 7 and d.stop == "decided" and len(calls) == 14
    assert "decided after 7 of 10 rounds" in res.summary
    assert len(d.samples) == 14 * len(METRICS)
    assert d.environment.accel == "tcg" and d.environment.emulated
    assert (tmp_path / "run" / "bench-progress.json").exists()


def test_too_few_rounds_are_inconclusive_never_a_pass(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_runs(monkeypatch, {"base": [100.0, 101, 99], "patched": [50.0, 51, 49]})
    res = bench.run_ab({"base": Path("a"), "patched": Path("b")}, find_profile("smoke"),
                       cache=tmp_path, run_dir=tmp_path / "run",
                       accel=qemu.AccelChoice("tcg", "test"), reps=3)
    d = res.detail(bench.BenchDetails)
    assert d is not None and d.stop == "rounds" and d.rounds == 3
    assert d.comparison("bogo_ops_per_s").verdict == stats.INCONCLUSIVE  # type: ignore[union-attr]
    assert res.status is Status.WARN and res.status.exit_code == 0
    assert "smallest possible p is 0.250" in res.summary and "at least 6 rounds" in res.summary


def test_budget_stops_before_a_round_would_overrun(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(float(i) * 60 for i in range(100))  # every monotonic() call: a minute later
    monkeypatch.setattr(bench.time, "monotonic", lambda: next(clock))
    _fake_runs(monkeypatch, {"base": [100.0] * 10, "patched": [100.0] * 10})
    res = bench.run_ab({"base": Path("a"), "patched": Path("b")}, find_profile("reclaim"),
                       cache=tmp_path, run_dir=tmp_path / "run",
                       accel=qemu.AccelChoice("tcg", "test"), reps=10, budget_s=150)
    d = res.detail(bench.BenchDetails)
    assert d is not None and d.stop == "budget" and d.rounds < 10
    assert all(c.verdict in (stats.INCONCLUSIVE, stats.NOT_JUDGED) for c in d.comparisons)
    assert "time budget stopped the bench" in res.summary


def test_aa_runs_the_same_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []
    _fake_runs(monkeypatch, {"base": [100.0, 90, 110, 95, 105, 100, 98, 102, 97, 103],
                             "base-again": [101.0, 92, 108, 96, 104, 99, 97, 103, 98, 101]},
               calls)
    res = bench.run_ab({v: Path("a") for v in bench.AA_VARIANTS}, find_profile("reclaim"),
                       cache=tmp_path, run_dir=tmp_path / "run",
                       accel=qemu.AccelChoice("tcg", "test"), reps=10, aa=True)
    d = res.detail(bench.BenchDetails)
    assert d is not None and d.environment.aa and res.stage == "bench-aa"
    assert calls[:4] == [("base", 0), ("base-again", 0), ("base-again", 1), ("base", 1)]
    assert res.summary.startswith("A/A (base against itself): ")
    assert not any(c.significant for c in d.comparisons)


def test_memory_knob_sets_the_memcg_total() -> None:
    import dataclasses

    p = dataclasses.replace(find_profile("reclaim"), memcg_max_mb=512)
    # the seed's shape: 16 vCPUs, --vm 16 --vm-bytes 2G, a 512M memcg
    argv = bench.stress_argv(p, 16)
    assert argv[argv.index("--vm") + 1] == "16" and argv[argv.index("--vm-bytes") + 1] == "2048M"
    assert p.memcg_mb(16) == 512 and "memcg 512M" in bench.bench_snippet(p, 16)


def test_run_ab_stops_on_a_broken_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run_once(kernel: Path, profile: Any, **kw: Any) -> bench.Rep:
        v, r = str(kw["variant"]), int(kw["rep"])
        return _rep(v, r, 1.0, Status.FAIL if v == "patched" else Status.PASS)

    monkeypatch.setattr(bench, "run_once", fake_run_once)
    res = bench.run_ab({"base": Path("a"), "patched": Path("b")}, find_profile("smoke"),
                       cache=tmp_path, run_dir=tmp_path / "run",
                       accel=qemu.AccelChoice("tcg", "test"), reps=3)
    d = res.detail(bench.BenchDetails)
    assert res.status is Status.FAIL and d is not None
    assert "patched run 0" in res.summary
    assert len(d.reps) == 2 and d.comparisons == () and d.failed_run is not None


def test_cli_bench_without_builds_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from patchflow.cli import main

    monkeypatch.setenv("PATCHFLOW_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(SystemExit) as exc:
        main(["bench", "batch-tlb-flush", "--target", "linux-6.12.y"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no base kernel built for linux-6.12.y" in err
    assert "patchflow build SERIES --target linux-6.12.y --variant base" in err


def test_cli_help_lists_the_exit_codes() -> None:
    from click.testing import CliRunner

    from patchflow.cli import cli

    for cmd in ("build", "boot", "bench"):
        res = CliRunner().invoke(cli, [cmd, "--help"])
        assert res.exit_code == 0, res.output
        assert "Exit 1" in res.output


def test_memory_sizes_and_bad_ones() -> None:
    from click.testing import CliRunner

    from patchflow.cli import cli
    from patchflow.cli.bench import parse_memory

    assert parse_memory(None, None, "512M") == 512
    assert parse_memory(None, None, "2g") == 2048
    assert parse_memory(None, None, "300") == 300
    assert parse_memory(None, None, None) == 0
    res = CliRunner().invoke(cli, ["bench", "s", "-t", "linux-6.12.y", "--memory", "lots"])
    assert res.exit_code == 2 and "not a size such as 512M" in res.output


def test_cli_bench_aa_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    """--aa benches base against itself; the JSON names each metric's verdict, p and interval."""
    from patchflow.cli import main
    from patchflow.kernel.artefacts import artefact_dir

    cache = tmp_path / "cache"
    base = artefact_dir(cache, "linux-6.12.y", "base")
    base.mkdir(parents=True)
    (base / "bzImage").write_bytes(b"kernel")
    monkeypatch.setenv("PATCHFLOW_CACHE", str(cache))
    monkeypatch.setenv("PATCHFLOW_WORKSPACE", str(tmp_path / "ws"))
    seen: list[tuple[str, Path]] = []

    def fake_run_once(kernel: Path, profile: Any, **kw: Any) -> bench.Rep:
        seen.append((str(kw["variant"]), kernel))
        assert profile.memcg_mb(kw["vcpus"]) == 96
        return _rep(str(kw["variant"]), int(kw["rep"]), 100.0 + int(kw["rep"]) % 3)

    monkeypatch.setattr(bench, "run_once", fake_run_once)
    with pytest.raises(SystemExit) as exc:
        main(["bench", "batch-tlb-flush", "--target", "linux-6.12.y", "--aa", "--reps", "6",
              "--memory", "96M", "--accel", "tcg", "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert exc.value.code == 0
    assert out["schema"] == "patchflow.bench/2" and out["stage"] == "bench-aa"
    assert {v for v, _ in seen} == {"base", "base-again"} and {k for _, k in seen} == {
        base / "bzImage"}
    bogo = out["metrics"]["bogo_ops_per_s"]
    assert set(bogo) >= {"verdict", "p_value", "ci_low", "ci_high", "change"}
    assert out["details"]["environment"]["aa"] is True
