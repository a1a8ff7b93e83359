"""``patchflow backport``: apply a series version onto target branches, continue, skip, abort, check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from patchflow.cli.options import (
    Ctx,
    emit_json,
    exit_with,
    format_option,
    pass_ctx,
    progress_sink,
    table,
    target_option,
    version_option,
)
from patchflow.result import StageResult

if TYPE_CHECKING:
    from patchflow.backport.patches import PatchResult


def targets_for(ctx: Ctx, series: str, targets: Sequence[str]) -> list[str]:
    """The targets asked for, else the series' own, else every configured one."""
    from patchflow.errors import NotFound

    if targets:
        for t in targets:
            ctx.ws.config.target(t)  # NotFound with the known names
        return list(targets)
    try:
        wanted = ctx.ws.config.series(series).targets
    except NotFound:  # a series without a toml: use every configured target
        wanted = ()
    known = set(ctx.ws.config.target_names())
    return [t for t in wanted if t in known] or sorted(known)


def show(results: list[StageResult], fmt: str) -> int:
    from patchflow.backport.stage import BackportDetails
    from patchflow.result import exit_code

    if fmt == "json":
        emit_json({"results": [r.to_json() for r in results]}, "patchflow.backport/1")
        return exit_code(r.status for r in results)
    for r in results:
        click.echo(f"{r.target}: {r.status.value.upper()} {r.summary}")
        d = r.detail(BackportDetails)
        if d is None:
            continue
        for p in d.patches:
            _patch_lines(p)
        if d.phase in ("conflict", "review", "build"):
            what = "fix the build" if d.phase == "build" else "resolve"
            click.echo(f"  worktree: {d.worktree}\n  {what}, then: patchflow "
                       f"backport {d.series} --continue --target {r.target} "
                       "--note 'what you did'\n  or drop it as not applicable: patchflow "
                       f"backport {d.series} --skip --target {r.target} --note 'why'")
        for st in d.stale:
            click.echo(f"  stale {st.patch}: target moved at {', '.join(st.moved)}")
        for why in d.threeway_unavailable:
            click.echo(f"  note: no 3-way merge: {why}")
        if d.rebase:
            click.echo(f"  now clean: {', '.join(d.rebase.now_clean) or 'none'}; "
                       f"new conflicts: {', '.join(d.rebase.new_conflicts) or 'none'}")
            click.echo(d.rebase.range_diff.rstrip())
    return exit_code(r.status for r in results)


def _patch_lines(p: PatchResult) -> None:
    extra = p.detail or ", ".join(p.offsets)
    built = f"  [built {', '.join(p.built)} in {p.build_seconds:.1f}s]" if p.build == "ok" else \
        "  [not built by this config]" if p.build == "not-built" else ""
    click.echo(f"  [{p.idx}] {p.outcome.value:<15} {p.subject}"
               + (f"  ({extra})" if extra else "") + built)
    for s in p.spots if p.outcome.value in ("conflict", "fuzz") else []:
        click.echo(f"        {s.where()}")
    for e in p.build_errors:
        click.echo(f"        build: {e}")


@click.command("backport")
@click.argument("series")
@target_option(multiple=True)
@version_option
@click.option("--check", is_flag=True, help="Only report whether each patch applies "
              "(no worktree is checked out).")
@click.option("--continue", "cont", is_flag=True, help="Go on after resolving a conflict.")
@click.option("--abort", is_flag=True, help="Give up the backport in progress.")
@click.option("--skip", is_flag=True, help="Drop the stopped patch as not applicable to the "
              "target (needs --note WHY; recorded in the stored queue and shown by status).")
@click.option("--note", help="What you changed when resolving, or why you skip "
              "(goes into the commit message or the stored queue).")
@click.option("--build-check", is_flag=True, help="Compile the objects each patch touches "
              "in the target's prepared build dir; a compile error stops at that patch.")
@format_option
@pass_ctx
def backport_cmd(ctx: Ctx, series: str, targets: tuple[str, ...], revision: int | None,
                 check: bool, cont: bool, abort: bool, skip: bool, note: str | None,
                 build_check: bool, fmt: str) -> None:
    """Apply SERIES (newest fetched version, or -v N) onto each target branch.

    Each patch is classified: clean, offset, 3way, already-present, fuzz
    (stops for review) or conflict (stops; resolve in the worktree, then
    --continue, or --skip it with --note WHY).  Conflict lines are the
    target's, in --check and the real run alike.  With --build-check each
    patch that goes in is compiled too, and a compile error stops at the
    patch that caused it.  A finished backport is stored as a patch queue
    under series/SERIES/backports/TARGET/.

    Exit codes: 0 applied (a skipped patch included: it is a WARN), 1 a
    conflict, a patch to review or a compile error, 2 bad input or broken
    infrastructure.
    """
    from patchflow.backport import stage as bp
    from patchflow.backport.patches import Outcome
    from patchflow.lore.series import load_version

    if sum([check, cont, abort, skip]) > 1:
        raise click.UsageError("--check, --continue, --skip and --abort exclude each other")
    if build_check and (check or abort or skip or cont):
        raise click.UsageError("--build-check goes with a backport run (a --continue keeps "
                               "the setting of the run it continues)")
    ws, state = ctx.ws, ctx.state
    target = targets[0] if len(targets) == 1 else None
    if len(targets) > 1 and (cont or abort or skip):
        raise click.UsageError("--continue/--skip/--abort work on one --target")
    if cont:
        exit_with(show([bp.continue_backport(ws, state, series, target, note)], fmt))
    if skip:
        exit_with(show([bp.skip_patch(ws, state, series, target, note)], fmt))
    if abort:
        exit_with(show([bp.abort_backport(ws, state, series, target)], fmt))
    fetched = load_version(ws, state, series, revision)
    names = targets_for(ctx, series, targets)
    if check:
        report = bp.check_version(ws, fetched, names)
        bad = any(r.outcome in (Outcome.CONFLICT, Outcome.FUZZ)
                  for rs in report.values() for r in rs)
        if fmt == "json":
            emit_json({"series": series, "revision": fetched.revision,
                       "targets": {t: [r.to_json() for r in rs] for t, rs in report.items()}},
                      "patchflow.backport-check/1")
        else:
            rows = [(t, r.idx, r.outcome.value, r.subject,
                     ", ".join(s.where() for s in r.spots) or r.detail)
                    for t, rs in report.items() for r in rs]
            table(["target", "#", "result", "subject", "where"], rows,
                  title=f"{series} v{fetched.revision}")
        exit_with(1 if bad else 0)
    results = []
    with progress_sink(fmt) as say:
        for t in names:
            results.append(bp.backport_version(ws, state, fetched, t, progress=say,
                                               build_check=build_check))
    exit_with(show(results, fmt))
