"""The gate on fake stage functions: exit codes, reuse by input hash, resume, records."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from patchflow.bench.ab import BenchDetails, BenchEnvironment, Sample
from patchflow.context import StageContext
from patchflow.gate import records
from patchflow.gate import run as gate
from patchflow.gate.registry import Stage, default_stages
from patchflow.result import StageResult, Status
from patchflow.state import State
from patchflow.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
TARGETS = ["linux-6.1.y", "linux-6.12.y"]


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cfg = tmp_path / "config"
    shutil.copytree(REPO / "targets", cfg / "targets")
    shutil.copytree(REPO / "series", cfg / "series")
    return Workspace.open(tmp_path / "ws", cfg, tmp_path / "cache")


@pytest.fixture
def state(ws: Workspace) -> State:
    with State(ws.db_path) as st:
        yield st


class Fake:
    """Stage functions that return scripted statuses and count their calls."""

    def __init__(self, outcomes: dict[tuple[str, str | None], Status] | None = None) -> None:
        self.outcomes = outcomes or {}
        self.calls: list[tuple[str, str | None]] = []

    def fn(self, name: str) -> Callable[[StageContext], StageResult]:
        def run(ctx: StageContext) -> StageResult:
            target = ctx.target.name if ctx.target else None
            self.calls.append((name, target))
            st = self.outcomes.get((name, target), Status.PASS)
            if st is Status.ERROR:
                raise KeyError("boom")  # an internal bug: must become an ERROR result
            details = None
            if name == "bench":
                env = BenchEnvironment(2, "tcg", "test", 1024, "smoke", "stress-ng", 1, "h",
                                       "k", 2, {}, {}, 0.0)
                details = BenchDetails(env, (), (Sample("base", 0, "bogo_ops_per_s", 100.0),
                                                 Sample("patched", 0, "bogo_ops_per_s", 104.0)),
                                       ())
            return StageResult(stage=name, status=st, summary=f"{name} {st.value}",
                               target=target, details=details)
        return run


def stages(fake: Fake) -> list[Stage]:
    return [Stage(s.name, fake.fn(s.name), s.needs, s.per_target, s.description, s.settings)
            for s in default_stages()]


def run(ws: Workspace, state: State, fake: Fake, **kw: object) -> gate.GateRun:
    return gate.execute(ws, state, ws.config.series("batch-tlb-flush"), targets=TARGETS,
                        stages=stages(fake), reproduce="patchflow gate batch-tlb-flush",
                        versions={"patchflow": "test"}, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("outcomes", "code"), [
    ({}, 0),
    ({("check-newer", None): Status.WARN}, 0),
    ({("backport", "linux-6.1.y"): Status.FAIL}, 1),            # conflict
    ({("build-patched", "linux-6.12.y"): Status.FAIL}, 1),      # build failure
    ({("boot", "linux-6.12.y"): Status.FAIL}, 1),               # oops
    ({("bench", "linux-6.12.y"): Status.FAIL}, 1),              # significant regression
    ({("livepatch-verify", "linux-6.1.y"): Status.FAIL}, 1),    # livepatch refused
    ({("boot", "linux-6.1.y"): Status.ERROR}, 2),               # internal error
    ({("boot", "linux-6.1.y"): Status.ERROR,
      ("backport", "linux-6.12.y"): Status.FAIL}, 2),           # incomplete beats failure
])
def test_exit_codes(ws: Workspace, state: State, outcomes: dict[tuple[str, str | None], Status],
                    code: int) -> None:
    r = run(ws, state, Fake(outcomes))
    assert r.exit_code == code
    doc = json.loads((r.run_dir / "results.json").read_text())
    assert doc["verdict"]["exit_code"] == code
    assert len(doc["results"]) == 1 + 7 * len(TARGETS)


def test_failure_skips_dependants_only(ws: Workspace, state: State) -> None:
    fake = Fake({("backport", "linux-6.1.y"): Status.FAIL})
    r = run(ws, state, fake)
    got = {(e.result.target, e.result.stage): e.result for e in r.entries}
    assert got[("linux-6.1.y", "build-patched")].status is Status.SKIP
    assert got[("linux-6.1.y", "build-patched")].summary == "skipped: backport fail"
    assert got[("linux-6.1.y", "livepatch-verify")].status is Status.SKIP
    assert ("build-base", "linux-6.1.y") in fake.calls          # independent of the backport
    assert ("boot", "linux-6.1.y") not in fake.calls
    assert ("livepatch-verify", "linux-6.12.y") in fake.calls   # the other target goes on


def test_unchanged_inputs_are_reused(ws: Workspace, state: State) -> None:
    first = Fake({("backport", "linux-6.1.y"): Status.FAIL})
    run(ws, state, first)
    second = Fake()
    r = run(ws, state, second)
    # PASS and FAIL are reused; SKIPs (behind the failed backport) are re-evaluated, not run
    assert second.calls == []
    assert all(e.cached for e in r.entries if e.result.status is not Status.SKIP)
    assert r.exit_code == 1
    bench = next(e for e in r.entries if e.result.stage == "bench"
                 and e.result.target == "linux-6.12.y")
    d = bench.result.detail(BenchDetails)
    assert d is not None and Sample("patched", 0, "bogo_ops_per_s", 104.0) in d.samples
    assert state.samples(bench.result_id or 0) == [("base", 0, "bogo_ops_per_s", 100.0),
                                                   ("patched", 0, "bogo_ops_per_s", 104.0)]
    third = Fake()
    run(ws, state, third, force=True)
    assert len(third.calls) == 1 + 7 * len(TARGETS)  # --force: everything, nothing skipped


def test_changed_config_invalidates_downstream(ws: Workspace, state: State) -> None:
    run(ws, state, Fake())
    toml = ws.config.target("linux-6.12.y").path
    toml.write_text(toml.read_text() + "# edited\n")
    again = Fake()
    run(ws, state, again)
    assert len(again.calls) == 7 and {t for _, t in again.calls} == {"linux-6.12.y"}
    # a kconfig fragment is shared by both targets: both rebuild
    frag = ws.config.target("linux-6.12.y").kconfig[0]
    frag.write_text(frag.read_text() + "CONFIG_PRINTK_TIME=y\n")
    third = Fake()
    run(ws, state, third)
    assert len(third.calls) == 14


def test_errors_are_retried(ws: Workspace, state: State) -> None:
    run(ws, state, Fake({("boot", "linux-6.12.y"): Status.ERROR}))
    again = Fake()
    r = run(ws, state, again)
    assert ("boot", "linux-6.12.y") in again.calls
    assert r.exit_code == 0


def test_interrupted_run_resumes(ws: Workspace, state: State) -> None:
    class Interrupting(Fake):
        def fn(self, name: str) -> Callable[[StageContext], StageResult]:
            inner = super().fn(name)

            def run(ctx: StageContext) -> StageResult:
                if (name, ctx.target.name if ctx.target else None) == ("boot", "linux-6.12.y"):
                    raise KeyboardInterrupt
                return inner(ctx)
            return run

    first = Interrupting()
    r = run(ws, state, first)
    assert r.interrupted and r.exit_code == 2
    meta = json.loads((r.run_dir / "metadata.json").read_text())
    assert meta["status"] == "interrupted" and meta["exit_code"] == 2
    # the partial results and the JUnit file are there too
    doc = records.load_results([r.run_dir / "results.json"])[0][1]
    assert doc.verdict.status == "interrupted" and len(doc.entries) == 1 + 7 + 3
    assert (r.run_dir / "junit.xml").read_text().count("<testcase") == 11
    assert state.db.execute("SELECT status FROM runs WHERE id=?", (r.run_id,)).fetchone()[0] \
        == "interrupted"
    second = Fake()
    r2 = run(ws, state, second)
    assert r2.exit_code == 0
    # only what had not finished runs again
    assert second.calls == [("boot", "linux-6.12.y"), ("bench", "linux-6.12.y"),
                            ("livepatch-build", "linux-6.12.y"),
                            ("livepatch-verify", "linux-6.12.y")]


def test_single_stage_needs_earlier_results(ws: Workspace, state: State) -> None:
    lone = Fake()
    r = run(ws, state, lone, selected=["boot"])
    assert lone.calls == []
    assert {e.result.status for e in r.entries} == {Status.ERROR}
    assert "run the build-patched stage first" in r.entries[0].result.summary
    assert r.exit_code == 2
    run(ws, state, Fake(), selected=["check-newer", "backport", "build-base", "build-patched"])
    verify = Fake()
    r = run(ws, state, verify, selected=["boot", "bench"])
    assert r.exit_code == 0
    assert verify.calls == [("boot", "linux-6.1.y"), ("bench", "linux-6.1.y"),
                            ("boot", "linux-6.12.y"), ("bench", "linux-6.12.y")]


def test_dry_run_runs_and_records_nothing(ws: Workspace, state: State) -> None:
    fake = Fake()
    r = run(ws, state, fake, dry_run=True)
    assert fake.calls == [] and r.dry_run
    assert all(e.plan == "would run" for e in r.entries)
    assert state.results() == []
    assert state.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    assert not (ws.runs_dir / "dry-run").exists()
    # what the plan lacks, named
    assert "series batch-tlb-flush was never fetched (check-newer fetches it)" in r.missing
    assert "linux-6.1.y: no tree prepared (the backport stage prepares it)" in r.missing
    # after a real run, the plan says what it would reuse
    run(ws, state, Fake())
    again = run(ws, state, Fake(), dry_run=True)
    assert {e.plan for e in again.entries} == {"would reuse"}


def test_the_registry_is_the_stage_order() -> None:
    from patchflow.gate.registry import STAGE_ORDER, STAGES

    assert STAGE_ORDER == ("check-newer", "backport", "build-base", "build-patched", "boot",
                           "bench", "livepatch-build", "livepatch-verify")
    # every stage function is a real function of its stage package (no string imports)
    assert all(s.run.__module__.startswith("patchflow.") and s.run.__module__.endswith(
        (".stage",)) for s in STAGES)


def test_records(ws: Workspace, state: State) -> None:
    r = run(ws, state, Fake({("backport", "linux-6.1.y"): Status.FAIL,
                             ("boot", "linux-6.12.y"): Status.ERROR}))
    meta = json.loads((r.run_dir / "metadata.json").read_text())
    assert meta["reproduce"] == "patchflow gate batch-tlb-flush"
    assert meta["status"] == "incomplete" and meta["tool_versions"] == {"patchflow": "test"}
    assert len(meta["stage_durations"]) == 15
    junit = ET.parse(r.run_dir / "junit.xml").getroot()
    cases = junit.findall(".//testcase")
    assert len(cases) == 15
    bp = junit.find(".//testsuite[@name='linux-6.1.y']/testcase[@name='backport']/failure")
    assert bp is not None and bp.get("message") == "backport fail"
    boot = junit.find(".//testsuite[@name='linux-6.12.y']/testcase[@name='boot']/error")
    assert boot is not None and "KeyError" in (boot.text or "")
    rows = json.loads((r.run_dir / "results.json").read_text())["results"]
    boot_row = next(x for x in rows if (x["target"], x["stage"]) == ("linux-6.12.y", "boot"))
    assert "Traceback" in Path(boot_row["log"]).read_text()


def test_junit_escapes_failure_text() -> None:
    doc = records.ResultsDoc("r", "0", records.SeriesBlock("s"), ("t",), ("boot",), "", "", "",
                             records.Verdict(1, "fail"),
                             (records.Entry(StageResult("boot", Status.FAIL,
                                                        "Oops: <0000> & \"more\"", 1, "t")),))
    xml = records.junit_xml(doc)
    case = ET.fromstring(xml.split("\n", 1)[1]).find(".//failure")
    assert case is not None and case.get("message") == "Oops: <0000> & \"more\""


def test_dry_run_cli_says_what_is_missing_and_gives_no_verdict(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`gate --dry-run` on a fresh workspace and cache: a plan and what is missing, no verdict."""
    from click.testing import CliRunner

    from patchflow.cli import cli

    monkeypatch.setenv("PATCHFLOW_CACHE", str(tmp_path / "empty-cache"))
    args = ["gate", "batch-tlb-flush-demo", "-t", "linux-6.12.y", "--dry-run"]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    assert "verdict" not in done.output and "PASS" not in done.output
    assert done.output.rstrip().endswith("dry run: nothing was run or recorded")
    assert "missing: series batch-tlb-flush-demo was never fetched" in done.output
    assert "missing: linux-6.12.y: no tree prepared" in done.output
    doc = json.loads(CliRunner().invoke(cli, [*args, "--format", "json"]).output)
    assert doc["schema"] == "patchflow.gate-plan/1" and doc["dry_run"] is True
    assert len(doc["plan"]) == 8 and len(doc["missing"]) == 4
    ws = Workspace.open()
    assert not ws.runs_dir.exists() or not any(ws.runs_dir.iterdir())
