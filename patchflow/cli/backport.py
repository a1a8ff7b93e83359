"""``patchflow backport|rebase|status|tree``: the CLI skin over backport and tree."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from patchflow.cli.options import (
    Ctx,
    emit_json,
    format_option,
    interactive,
    pass_ctx,
    table,
    target_option,
    version_option,
)

if TYPE_CHECKING:
    from patchflow.result import StageResult


@contextmanager
def progress_sink() -> Iterator[Callable[[str], None]]:
    """A rich spinner on a terminal, plain stderr lines in CI."""
    if interactive():
        from rich.console import Console

        console = Console(stderr=True)
        with console.status("working...") as status:
            def say(msg: str) -> None:
                status.update(msg)
                console.log(msg)
            yield say
        return
    yield lambda msg: click.echo(msg, err=True)


def _targets(ctx: Ctx, series: str, targets: Sequence[str]) -> list[str]:
    if targets:
        for t in targets:
            ctx.ws.config.target(t)  # NotFound with the known names
        return list(targets)
    try:
        wanted = ctx.ws.config.series(series).targets
    except Exception:  # noqa: BLE001 - a series without a toml: use every prepared tree
        wanted = ()
    known = set(ctx.ws.config.target_names())
    return [t for t in wanted if t in known] or sorted(known)


def _show(results: list[StageResult], fmt: str) -> int:
    from patchflow.result import exit_code

    if fmt == "json":
        emit_json([r.to_json() for r in results])
    else:
        for r in results:
            click.echo(f"{r.target}: {r.status.value.upper()} {r.summary}")
            for p in r.details.get("patches", []):
                extra = p["detail"] or ", ".join(p["offsets"])
                click.echo(f"  [{p['idx']}] {p['outcome']:<15} {p['subject']}"
                           + (f"  ({extra})" if extra else ""))
                for s in p.get("spots", []) if p["outcome"] in ("conflict", "fuzz") else []:
                    fn = f" in {s['function']}()" if s["function"] else ""
                    click.echo(f"        {s['path']}:{s['line']}{fn}")
            if r.details.get("phase") in ("conflict", "review"):
                click.echo(f"  worktree: {r.details['worktree']}\n  resolve, then: patchflow "
                           f"backport --continue --target {r.target} --note 'what you did'")
            for st in r.details.get("stale", []):
                click.echo(f"  stale {st['patch']}: target moved at {', '.join(st['moved'])}")
            rb = r.details.get("rebase")
            if rb:
                click.echo(f"  now clean: {', '.join(rb['now_clean']) or 'none'}; "
                           f"new conflicts: {', '.join(rb['new_conflicts']) or 'none'}")
                click.echo(rb["range_diff"].rstrip())
    return exit_code(r.status for r in results)


@click.command("backport")
@click.argument("series")
@target_option(multiple=True)
@version_option
@click.option("--check", is_flag=True, help="Only report whether each patch applies "
              "(no worktree is checked out).")
@click.option("--continue", "cont", is_flag=True, help="Go on after resolving a conflict.")
@click.option("--abort", is_flag=True, help="Give up the backport in progress.")
@click.option("--note", help="What you changed when resolving (goes into the commit message).")
@format_option
@pass_ctx
def backport_cmd(ctx: Ctx, series: str, targets: tuple[str, ...], revision: int | None,
                 check: bool, cont: bool, abort: bool, note: str | None, fmt: str) -> None:
    """Apply SERIES (newest fetched version, or -v N) onto each target branch.

    Each patch is classified: clean, offset, 3way, already-present, fuzz
    (stops for review) or conflict (stops; resolve in the worktree, then
    --continue).  A finished backport is stored as a patch queue under
    series/SERIES/backports/TARGET/.
    """
    from patchflow.backport import engine as bp

    if sum([check, cont, abort]) > 1:
        raise click.UsageError("--check, --continue and --abort exclude each other")
    ws, state = ctx.ws, ctx.state
    target = targets[0] if len(targets) == 1 else None
    if len(targets) > 1 and (cont or abort):
        raise click.UsageError("--continue/--abort work on one --target")
    if cont:
        raise click.exceptions.Exit(_show([bp.continue_backport(ws, state, series, target, note)],
                                          fmt))
    if abort:
        raise click.exceptions.Exit(_show([bp.abort_backport(ws, state, series, target)], fmt))
    from patchflow.lore.series import load_version

    fetched = load_version(ws, state, series, revision)
    names = _targets(ctx, series, targets)
    if check:
        report = bp.check_version(ws, fetched, names)
        bad = any(r.outcome in (bp.Outcome.CONFLICT, bp.Outcome.FUZZ)
                  for rs in report.values() for r in rs)
        if fmt == "json":
            emit_json({t: [r.to_json() for r in rs] for t, rs in report.items()})
        else:
            rows = [(t, r.idx, r.outcome.value, r.subject,
                     ", ".join(str(s) for s in r.spots) or r.detail) for t, rs in report.items()
                    for r in rs]
            table(["target", "#", "result", "subject", "where"], rows,
                  title=f"{series} v{fetched.revision}")
        raise click.exceptions.Exit(1 if bad else 0)
    results = []
    with progress_sink() as say:
        for t in names:
            results.append(bp.backport_version(ws, state, fetched, t, progress=say))
    raise click.exceptions.Exit(_show(results, fmt))


@click.command("rebase")
@click.argument("series")
@target_option(multiple=True)
@version_option
@format_option
@pass_ctx
def rebase_cmd(ctx: Ctx, series: str, targets: tuple[str, ...], revision: int | None,
               fmt: str) -> None:
    """Re-apply a stored backport after its target branch (or the series) moved.

    Prints a range-diff against the previous backport, which patches now apply
    cleanly and which conflicts are new.
    """
    from patchflow.backport import engine as bp
    from patchflow.lore.series import load_version

    ws, state = ctx.ws, ctx.state
    fetched = load_version(ws, state, series, revision)
    names = [t for t in _targets(ctx, series, targets)
             if bp.read_manifest(ws.config_root, series, t) is not None] if not targets \
        else list(targets)
    results = []
    with progress_sink() as say:
        for t in names:
            results.append(bp.backport_version(ws, state, fetched, t, rebase=True, progress=say))
    raise click.exceptions.Exit(_show(results, fmt))


@click.command("status")
@click.argument("series", required=False)
@format_option
@pass_ctx
def status_cmd(ctx: Ctx, series: str | None, fmt: str) -> None:
    """Matrix of series versions x targets: state and date of the last backport."""
    from patchflow.backport import engine as bp

    rows = bp.status_matrix(ctx.state, series)
    if fmt == "json":
        emit_json(rows)
        return
    targets = sorted({r["target"] for r in rows})
    cells: dict[tuple[str, int], dict[str, str]] = {}
    for r in rows:
        cell = f"{r['state']} {r['updated']}".strip()
        cells.setdefault((r["series"], r["revision"]), {})[r["target"]] = cell
    table(["series", "version", *targets],
          [[s, f"v{v}", *[c.get(t, "-") for t in targets]] for (s, v), c in cells.items()])


@click.group("tree")
def tree_cmd() -> None:
    """Prepare and inspect the kernel trees (one branch per target)."""


@tree_cmd.command("prepare")
@click.argument("targets", nargs=-1, required=True)
@click.option("--upto", help="Stop at this release (e.g. 6.12.115); the branch points there.")
@click.option("--allow-rewrite", is_flag=True,
              help="Take a remote branch that was force-pushed (refused by default).")
@format_option
@pass_ctx
def tree_prepare(ctx: Ctx, targets: tuple[str, ...], upto: str | None, allow_rewrite: bool,
                 fmt: str) -> None:
    """Fetch or build (Debian sources) the branch of each TARGET.

    A git target whose remote branch was force-pushed since the last fetch is
    refused (exit 2) and nothing changes, unless --allow-rewrite is given.
    """
    from patchflow.trees.repo import prepare_tree

    out: list[dict[str, Any]] = []
    with progress_sink() as say:
        for t in targets:
            out.append(prepare_tree(ctx.ws, t, upto=upto, progress=say,
                                    allow_rewrite=allow_rewrite).to_json())
    if fmt == "json":
        emit_json(out)
    else:
        table(["target", "branch", "release", "head"],
              [[o["target"], o["branch"], o["release"], o["head"][:12]] for o in out])


@tree_cmd.command("list")
@format_option
@pass_ctx
def tree_list(ctx: Ctx, fmt: str) -> None:
    """Targets, their provider and the prepared branch head."""
    from patchflow.trees.repo import list_trees, release_tags

    rows = []
    for t, tree in list_trees(ctx.ws):
        rows.append({"target": t.name, "provider": t.provider, "branch": t.git.branch,
                     "release": tree.release if tree else "", "head": tree.head if tree else "",
                     "tags": release_tags(tree) if tree else []})
    if fmt == "json":
        emit_json(rows)
    else:
        table(["target", "provider", "branch", "release", "head"],
              [[r["target"], r["provider"], r["branch"], r["release"] or "(not prepared)",
                str(r["head"])[:12]] for r in rows])
