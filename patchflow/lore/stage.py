"""The check-newer stage: fetch every known posting of a series, then ask for newer ones.

Both ``patchflow gate`` and ``patchflow series fetch --check-newer`` end here
(:func:`check_newer`); the mirror is the workspace's ``lore.midmask`` in the
stage's settings, so a demo or a test hands its local lore over as a setting,
never through the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from patchflow.context import StageContext
from patchflow.errors import PatchflowError
from patchflow.lore.series import PostingRef, fetch
from patchflow.result import Details, ErrorDetails, StageResult, Status, measure

STAGE = "check-newer"


@dataclass(frozen=True)
class CheckNewerDetails(Details):
    kind: ClassVar[str] = "check-newer"
    series: str
    stored: tuple[PostingRef, ...]
    unchanged: tuple[PostingRef, ...]
    newer: tuple[int, ...]
    notes: tuple[str, ...]
    revisions: tuple[int, ...]
    gated: int | None


def check_newer(ctx: StageContext) -> StageResult:
    """PASS when the gated revision is the newest; WARN when the list has a newer one
    (the gate still runs on what was asked for); ERROR when the mirror cannot be
    reached or the series cannot be fetched."""
    cfg = ctx.need_series(STAGE)
    with measure() as sw:
        try:
            report = fetch(ctx.ws, ctx.state, cfg.name, check_newer=True,
                           mirror=ctx.settings.lore.midmask or None, progress=ctx.say)
        except PatchflowError as exc:
            ctx.say(f"error: {exc}")
            return StageResult(STAGE, Status.ERROR, str(exc), sw.elapsed,
                               details=ErrorDetails(type(exc).__name__, str(exc)),
                               log=str(ctx.log))
    revs = tuple(sorted({v.revision for v in ctx.state.versions(cfg.name)}))
    gated = ctx.revision if ctx.revision is not None else (revs[-1] if revs else None)
    details = CheckNewerDetails(report.series, tuple(report.stored), tuple(report.unchanged),
                                tuple(report.newer), tuple(report.notes), revs, gated)
    for note in report.notes:
        ctx.say(note)
    if report.newer or (gated is not None and revs and revs[-1] > gated):
        return StageResult(STAGE, Status.WARN, f"v{revs[-1]} is newer than the gated v{gated}",
                           sw.elapsed, details=details, log=str(ctx.log))
    return StageResult(STAGE, Status.PASS, f"v{gated} is the newest revision ({len(revs)} known)",
                       sw.elapsed, details=details, log=str(ctx.log))
