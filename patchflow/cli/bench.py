"""``patchflow bench``: the sequential A/B stress-ng reclaim benchmark, base against patched."""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

import click

from patchflow.cli.options import (
    Ctx,
    accel_option,
    emit_json,
    exit_with,
    finish_run,
    format_option,
    pass_ctx,
    show_results,
    table,
    target_option,
)

if TYPE_CHECKING:
    from patchflow.result import StageResult


#: what ``patchflow bench --format json`` prints (2: paired sequential verdicts,
#: "inconclusive", the ``metrics`` summary, rounds and stop reason)
SCHEMA = "patchflow.bench/2"
_SIZE_RE = re.compile(r"^([1-9][0-9]{0,6})([MG]?)$")


def parse_memory(_ctx: click.Context | None, _param: click.Parameter | None,
                 value: str | None) -> int:
    """``512M``, ``2G`` or a number of MiB, as MiB (0 when not given)."""
    if value is None:
        return 0
    m = _SIZE_RE.match(value.strip().upper())
    if not m:
        raise click.BadParameter(f"{value!r} is not a size such as 512M or 2G")
    return int(m.group(1)) * (1024 if m.group(2) == "G" else 1)


def metrics_summary(res: StageResult) -> dict[str, dict[str, object]]:
    """Each metric's verdict, p-value and interval: what a script reads first."""
    from patchflow.bench.ab import BenchDetails

    d = res.detail(BenchDetails)
    if d is None:
        return {}
    return {c.metric: {"verdict": c.verdict, "p_value": c.p_value, "p_threshold": c.p_threshold,
                       "change": c.change, "ci_low": c.ci_low, "ci_high": c.ci_high,
                       "rounds": c.n_a}
            for c in d.comparisons}


@click.command("bench")
@click.argument("series")
@target_option(required=True)
@click.option("--reps", type=click.IntRange(1, 100), default=None,
              help="Planned maximum of rounds (one boot per variant each) [default: "
                   "bench.reps, else the profile's].")
@click.option("--profile", default=None, help="Benchmark profile [default: bench.profile].")
@click.option("--cpus", "--vcpus", "vcpus", type=click.IntRange(1, 64), default=None,
              help="Guest vCPUs [default: the profile's]; workers and --vm-bytes scale with "
                   "them (16 gives the seed's --vm 16 --vm-bytes 2G).")
@click.option("--memory", "memory", default=None, callback=parse_memory,
              help="The workload memcg's limit, e.g. 512M [default: the profile's per-vCPU "
                   "size times the vCPUs].")
@click.option("--budget", type=click.IntRange(1, 1440), default=None, metavar="MINUTES",
              help="Stop after this much bench time; undecided metrics are inconclusive "
                   "[default: bench.budget, else none].")
@click.option("--aa", is_flag=True,
              help="A/A: bench the base kernel against itself with the same protocol "
                   "(every significant verdict is a false positive).")
@accel_option
@format_option
@pass_ctx
def bench_cmd(ctx: Ctx, series: str, target: str, reps: int | None, profile: str | None,
              vcpus: int | None, memory: int, budget: int | None, aa: bool,
              accel: str | None, fmt: str) -> None:
    """Compare the patched kernel against the baseline under the reclaim workload.

    Rounds of fresh boots, A B then B A...; after each round every metric's
    paired differences get Wilcoxon's signed-rank test against an O'Brien-Fleming
    (Lan-DeMets) group-sequential boundary, a Hodges-Lehmann change and its
    repeated 95% interval.  The bench stops when the primary metrics are decided,
    after --reps rounds or when --budget runs out.  Verdicts: improved, regressed,
    no significant difference (the interval excludes the metric's minimal effect
    of interest), inconclusive.  Exit 1 on a regression of a primary metric or an
    oops; 2 when a run hangs or yields no metrics; 0 otherwise (inconclusive is a
    warning).
    """
    from patchflow.bench.stage import bench_target

    s = ctx.ws.settings
    bench = dataclasses.replace(s.bench, reps=reps or s.bench.reps,
                                profile=profile or s.bench.profile,
                                vcpus=vcpus or s.bench.vcpus, accel=accel or s.bench.accel,
                                budget=budget or s.bench.budget,
                                memory_mb=memory or s.bench.memory_mb)
    # bad input is named before any state is looked at, whatever the cache holds
    # (tests/unit/test_attacks.py::test_names_every_command)
    ctx.ws.config.profile(bench.profile)
    sc = ctx.stage("bench-aa" if aa else "bench", series=series, target=target,
                   settings=dataclasses.replace(s, bench=bench),
                   progress=None if fmt == "text" else (lambda _m: None))
    res = bench_target(sc, aa=aa)
    finish_run(ctx, sc, [res])
    if fmt == "json":
        emit_json({**res.to_json(), "metrics": metrics_summary(res)}, SCHEMA)
    else:
        _show(res, series, target)
    exit_with(res.status.exit_code)


def _show(res: StageResult, series: str, target: str) -> None:
    from patchflow.bench.ab import BenchDetails, format_change
    from patchflow.bench.metrics import metric

    d = res.detail(BenchDetails)
    if d is not None and d.comparisons:
        rows = [(metric(c.metric).label, f"{c.median_a:.4g}", f"{c.median_b:.4g}",
                 format_change(c), f"{c.p_value:.3f}",
                 "-" if c.p_threshold is None else f"{c.p_threshold:.3f}", c.better, c.verdict)
                for c in d.comparisons]
        b = "base again" if d.environment.aa else "patched"
        table(["metric", "base (median)", f"{b} (median)", "change [95% RCI]", "p",
               "p needed", "better", "verdict"], rows,
              title=f"{series} on {target}: {d.environment.profile}, {d.rounds} of "
                    f"{d.environment.reps} rounds ({d.stop}), {d.environment.vcpus} vCPUs, "
                    f"{d.environment.accel}")
    show_results([res], "text")
