"""The bench stage: the A/B benchmark of a target's base and patched kernels.

``patchflow bench`` and the gate's ``bench`` stage both call :func:`bench_target`;
the profile, repetitions, vCPUs and accelerator come from the workspace's
``[bench]`` settings (``--profile``/``--reps``/``--vcpus``/``--accel`` and the
documented environment overrides fold into them).
"""

from __future__ import annotations

from patchflow.bench.ab import run_ab
from patchflow.boot import qemu
from patchflow.context import StageContext
from patchflow.kernel.artefacts import locate
from patchflow.result import StageResult

STAGE = "bench"


def bench_target(ctx: StageContext) -> StageResult:
    tcfg = ctx.need_target(STAGE)
    bench = ctx.settings.bench
    arts = {v: locate(ctx.ws.cache, tcfg.name, v) for v in ("base", "patched")}
    prof = ctx.ws.config.profile(bench.profile)
    choice = qemu.choose_accel(ctx.ws.cache, arts["base"].bzimage, force=bench.accel)
    ctx.say(f"accelerator: {choice.accel} ({choice.reason})")
    run_dir = (ctx.run_dir or ctx.log.parent) / f"bench-{tcfg.name}"
    res = run_ab({v: a.bzimage for v, a in arts.items()}, prof, cache=ctx.ws.cache,
                 run_dir=run_dir, accel=choice, reps=bench.reps or None,
                 vcpus=bench.vcpus or None, target=tcfg.name, progress=ctx.say)
    ctx.say(f"{res.status.value}: {res.summary}")
    return res


def run(ctx: StageContext) -> StageResult:
    """The gate's bench stage."""
    return bench_target(ctx)
