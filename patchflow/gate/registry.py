"""The pipeline's stages, in order: an explicit, typed registry.

Each stage names the function of its own package that runs it (the same one
its CLI command calls), the stages it needs, whether it runs per target, and
which settings sections change its result (they go into its input hash).
Importing this module also makes every stage's details type known to
:func:`patchflow.result.details_from_json`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from patchflow.backport import stage as backport
from patchflow.bench import stage as bench
from patchflow.boot import stage as boot
from patchflow.context import StageContext
from patchflow.distro.stage import distro_aware
from patchflow.errors import UserError
from patchflow.kernel import stage as kernel
from patchflow.livepatch import stage as livepatch
from patchflow.lore import stage as lore
from patchflow.result import StageResult

StageFn = Callable[[StageContext], StageResult]


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline, run once per target (or once per series)."""

    name: str
    run: StageFn
    #: stages that must have passed (PASS or WARN) before this one runs
    needs: tuple[str, ...] = ()
    per_target: bool = True
    description: str = ""
    #: sections of the workspace settings whose values go into the input hash
    settings: tuple[str, ...] = ()


STAGES: tuple[Stage, ...] = (
    Stage("check-newer", lore.check_newer, (), per_target=False,
          description="look for a newer posting of the series", settings=("lore",)),
    Stage("backport", distro_aware("backport", backport.run), (),
          description="apply the series onto the target branch"),
    Stage("build-base", distro_aware("build-base", kernel.run_base), (),
          description="build the unpatched kernel"),
    Stage("build-patched", distro_aware("build-patched", kernel.run_patched), ("backport",),
          description="build the patched kernel"),
    Stage("boot", distro_aware("boot", boot.run), ("build-patched",), settings=("bench",),
          description="boot the patched kernel in QEMU, check the console"),
    Stage("bench", distro_aware("bench", bench.run), ("build-base", "boot"), settings=("bench",),
          description="A/B stress-ng reclaim benchmark, base against patched"),
    Stage("livepatch-build", livepatch.run_build, ("backport", "build-base"),
          description="generate and build the livepatch module"),
    Stage("livepatch-verify", livepatch.run_verify, ("livepatch-build",), settings=("livepatch",),
          description="load the livepatch in a guest and verify the transition"),
)

#: the one stage order (the matrix, the report, a merge of CI jobs' files)
STAGE_ORDER: tuple[str, ...] = tuple(s.name for s in STAGES)


def stage_key(name: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(name) if name in STAGE_ORDER else len(STAGE_ORDER), name)


def default_stages() -> list[Stage]:
    return list(STAGES)


def select(stages: Sequence[Stage], names: Sequence[str] | None) -> list[Stage]:
    if not names:
        return list(stages)
    known = [s.name for s in stages]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"unknown stage(s) {', '.join(unknown)} (known: {', '.join(known)})")
    return [s for s in stages if s.name in names]
