"""A distro target made ready for live patches: packages fetched, build dir prepared.

``patchflow distro prepare``, ``patchflow livepatch build|verify --target
<distro target>`` and the gate's live-patch stages all come here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from patchflow.config import TargetConfig
from patchflow.context import StageContext
from patchflow.distro.kernel import DistroKernelFiles, provider
from patchflow.distro.prepare import PreparedTree, build_lock, prepare
from patchflow.errors import UserError
from patchflow.result import Progress, StageResult, Status


@dataclass(frozen=True)
class Timings:
    fetch_s: float
    prepare_s: float


def is_distro(target: TargetConfig | None) -> bool:
    return target is not None and target.distro is not None


def fetch(cache: Path, target: TargetConfig, progress: Progress) -> DistroKernelFiles:
    """The target's packages, downloaded and unpacked into *cache* on first use."""
    if target.distro is None:
        raise UserError(f"target {target.name} is not a distribution kernel")
    return provider(target.distro.provider).fetch(cache, target.distro, progress)


def build_dir(cache: Path, kernel: DistroKernelFiles) -> Path:
    return cache / "distro" / kernel.provider / kernel.release / "build"


def ensure(cache: Path, target: TargetConfig, progress: Progress,
           log: Path | None = None) -> tuple[PreparedTree, Timings]:
    """Fetch and prepare the target (both cached), timing each step."""
    t0 = time.monotonic()
    kernel = fetch(cache, target, progress)
    t1 = time.monotonic()
    build = build_dir(cache, kernel)
    with build_lock(build):
        tree = prepare(kernel, build, progress=progress, log=log)
    return tree, Timings(t1 - t0, time.monotonic() - t1)


#: the summary of a full-build stage skipped on a distro target; the gate counts it as met
DISTRO_SKIP = ("skipped: distribution kernel: patchflow does not build the whole distro kernel "
               "(hours on two cores); only the live-patch stages run")
#: the stages a distro target skips
FULL_BUILD_STAGES = ("build-base", "build-patched", "boot", "bench")


def skip_full_build(stage: str, target: TargetConfig) -> StageResult:
    return StageResult(stage, Status.SKIP, DISTRO_SKIP, target=target.name)


def backport(ctx: StageContext) -> StageResult:
    """The gate's backport stage on a distro target: the stored queue must apply to its source.

    A distro target has no branch to rebase a series onto; the fix for it is
    the backport queue stored for (series, target), checked here against the
    distribution's exact source tree without touching it.
    """
    import tempfile

    from patchflow.backport.queue import stored_patches
    from patchflow.livepatch.generate import overlay_tree

    series, target = ctx.need_series("backport"), ctx.need_target("backport")
    patches = stored_patches(ctx.ws.config_root, series.name, target.name)
    if not patches:
        return StageResult("backport", Status.ERROR,
                           f"no stored backport of {series.name} for the distribution kernel "
                           f"{target.name}: store the queue for it first", target=target.name)
    kernel = fetch(ctx.ws.cache, target, ctx.say)
    text = "".join(p.read_text() for p in patches)
    with tempfile.TemporaryDirectory(prefix="pf-distro-bp-") as tmp:
        files = overlay_tree(text, kernel.source, Path(tmp) / "after")
    return StageResult("backport", Status.PASS,
                       f"stored queue ({len(patches)} patch(es), {len(files)} file(s)) applies to "
                       f"{kernel.provider} {kernel.version} source", target=target.name)


def distro_aware(name: str, fn: Callable[[StageContext], StageResult]
                 ) -> Callable[[StageContext], StageResult]:
    """The gate's stage *fn*, except on a distribution kernel target (``[distro]``).

    There the full-build, boot and bench stages are skipped with the reason
    (:data:`DISTRO_SKIP`, which counts as met for the live-patch stages) and
    the backport stage checks the stored queue against the distribution's
    source (tests/unit/test_distro.py::test_gate_skips_full_build_on_a_distro_target).
    """
    def run(ctx: StageContext) -> StageResult:
        if ctx.target is None or ctx.target.distro is None:
            return fn(ctx)
        if name == "backport":
            return backport(ctx)
        if name in FULL_BUILD_STAGES:
            return skip_full_build(name, ctx.target)
        return fn(ctx)

    return run
