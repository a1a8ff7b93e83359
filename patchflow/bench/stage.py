"""The bench stage: the A/B benchmark of a target's base and patched kernels.

``patchflow bench`` and the gate's ``bench`` stage both call :func:`bench_target`;
the profile, planned rounds, vCPUs, memcg size, time budget and accelerator
come from the workspace's ``[bench]`` settings (``--profile``/``--reps``/
``--cpus``/``--memory``/``--budget``/``--accel`` and the documented environment
overrides fold into them).  ``aa=True`` (``patchflow bench --aa``) benches the
base kernel against itself with the same protocol.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from patchflow.bench.ab import AA_VARIANTS, VARIANTS, run_ab
from patchflow.boot import qemu
from patchflow.context import StageContext
from patchflow.kernel.artefacts import locate
from patchflow.result import StageResult

STAGE = "bench"


def stage_kernels(cache: Path, target: str, aa: bool) -> dict[str, Path]:
    """The bench's two kernels: base and patched, or (A/A) base twice."""
    if aa:
        base = locate(cache, target, "base").bzimage
        return {v: base for v in AA_VARIANTS}
    return {v: locate(cache, target, v).bzimage for v in VARIANTS}


def bench_target(ctx: StageContext, *, aa: bool = False,
                 kernels: Mapping[str, Path] | None = None) -> StageResult:
    """The bench of the target's kernels (or *kernels*: base first) with ctx's settings."""
    tcfg = ctx.need_target(STAGE)
    bench = ctx.settings.bench
    # the profile first: a bad --profile is refused before anything is looked up
    prof = ctx.ws.config.profile(bench.profile)
    if kernels is None:
        kernels = stage_kernels(ctx.ws.cache, tcfg.name, aa)
    if bench.memory_mb:
        prof = dataclasses.replace(prof, memcg_max_mb=bench.memory_mb)
    choice = qemu.choose_accel(ctx.ws.cache, kernels["base"], force=bench.accel)
    ctx.say(f"accelerator: {choice.accel} ({choice.reason})")
    run_dir = (ctx.run_dir or ctx.log.parent) / f"bench{'-aa' if aa else ''}-{tcfg.name}"
    res = run_ab(kernels, prof, cache=ctx.ws.cache, run_dir=run_dir, accel=choice,
                 reps=bench.reps or None, vcpus=bench.vcpus or None, target=tcfg.name,
                 progress=ctx.say, budget_s=bench.budget * 60.0, aa=aa)
    ctx.say(f"{res.status.value}: {res.summary}")
    return res


def run(ctx: StageContext) -> StageResult:
    """The gate's bench stage."""
    return bench_target(ctx)
