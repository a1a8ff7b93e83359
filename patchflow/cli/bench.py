"""``patchflow bench``: the A/B stress-ng reclaim benchmark, base against patched."""

from __future__ import annotations

import dataclasses

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


@click.command("bench")
@click.argument("series")
@target_option(required=True)
@click.option("--reps", type=click.IntRange(1, 100), default=None,
              help="Boots per variant [default: bench.reps, else the profile's].")
@click.option("--profile", default=None, help="Benchmark profile [default: bench.profile].")
@click.option("--vcpus", type=click.IntRange(1, 64), default=None,
              help="Guest vCPUs [default: the profile's]; the workload scales with them.")
@accel_option
@format_option
@pass_ctx
def bench_cmd(ctx: Ctx, series: str, target: str, reps: int | None, profile: str | None,
              vcpus: int | None, accel: str | None, fmt: str) -> None:
    """Compare the patched kernel against the baseline under the reclaim workload.

    Runs are fresh boots, interleaved A B B A...; each metric gets the medians,
    the relative change with a bootstrap 95% interval, a Mann-Whitney U p-value
    and a verdict.  Exit 1 on a significant regression of a primary metric or
    an oops; 2 when a run hangs or yields no metrics.
    """
    from patchflow.bench.ab import BenchDetails, format_change
    from patchflow.bench.metrics import metric
    from patchflow.bench.stage import bench_target

    s = ctx.ws.settings
    bench = dataclasses.replace(s.bench, reps=reps or s.bench.reps,
                                profile=profile or s.bench.profile,
                                vcpus=vcpus or s.bench.vcpus, accel=accel or s.bench.accel)
    # bad input is named before any state is looked at, whatever the cache holds
    # (tests/unit/test_attacks.py::test_names_every_command)
    ctx.ws.config.profile(bench.profile)
    sc = ctx.stage("bench", series=series, target=target,
                   settings=dataclasses.replace(s, bench=bench),
                   progress=None if fmt == "text" else (lambda _m: None))
    res = bench_target(sc)
    finish_run(ctx, sc, [res])
    d = res.detail(BenchDetails)
    if fmt == "json":
        emit_json(res.to_json(), "patchflow.bench/1")
    else:
        if d is not None and d.comparisons:
            rows = [(metric(c.metric).label, f"{c.median_a:.4g}", f"{c.median_b:.4g}",
                     format_change(c), f"{c.p_value:.3f}", c.better, c.verdict)
                    for c in d.comparisons]
            table(["metric", "base (median)", "patched (median)", "change [95% CI]", "p",
                   "better", "verdict"], rows,
                  title=f"{series} on {target}: {d.environment.profile}, "
                        f"{d.environment.vcpus} vCPUs, {d.environment.accel}")
        show_results([res], "text")
    exit_with(res.status.exit_code)
