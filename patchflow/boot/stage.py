"""The boot stage: boot a built kernel in QEMU and run the smoke profile; the console decides.

``patchflow boot`` and the gate's ``boot`` stage (the patched kernel) both call
:func:`boot_variant`.  Exit 1 if the console shows an oops, BUG, WARNING,
panic or lockup; 2 if the guest hangs or the run is incomplete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from patchflow.bench.ab import run_once
from patchflow.boot import qemu
from patchflow.context import StageContext
from patchflow.kernel.artefacts import locate
from patchflow.result import Details, StageResult

STAGE = "boot"


@dataclass(frozen=True)
class BootDetails(Details):
    kind: ClassVar[str] = "boot"
    variant: str
    profile: str
    accel: str
    accel_reason: str
    kernel_release: str
    metrics: dict[str, float]
    console: str


def boot_variant(ctx: StageContext, variant: str, *, profile: str | None = None,
                 stage: str = STAGE) -> StageResult:
    tcfg = ctx.need_target(stage)
    art = locate(ctx.ws.cache, tcfg.name, variant)
    prof = ctx.ws.config.profile(profile or ctx.settings.bench.boot_profile)
    choice = qemu.choose_accel(ctx.ws.cache, art.bzimage, force=ctx.settings.bench.accel)
    ctx.say(f"accelerator: {choice.accel} ({choice.reason})")
    console = ctx.log.with_name(f"console-{tcfg.name}-{variant}.log")
    rep = run_once(art.bzimage, prof, cache=ctx.ws.cache, log=console, accel=choice.accel,
                   variant=variant, target=tcfg.name)
    ctx.say(f"{rep.status.value}: {rep.summary}")
    return StageResult(stage, rep.status, rep.summary, rep.wall_seconds, tcfg.name,
                       BootDetails(variant, prof.name, choice.accel, choice.reason,
                                   rep.kernel_release, rep.metrics, rep.log), rep.log)


def run(ctx: StageContext) -> StageResult:
    """The gate's boot stage: the patched kernel."""
    return boot_variant(ctx, "patched")
