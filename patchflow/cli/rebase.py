"""``patchflow rebase``: re-apply stored backports after their branch (or the series) moved."""

from __future__ import annotations

import click

from patchflow.cli.backport import show, targets_for
from patchflow.cli.options import (
    Ctx,
    exit_with,
    format_option,
    pass_ctx,
    progress_sink,
    target_option,
    version_option,
)


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
    from patchflow.backport.queue import read_manifest
    from patchflow.backport.stage import backport_version
    from patchflow.lore.series import load_version

    ws, state = ctx.ws, ctx.state
    fetched = load_version(ws, state, series, revision)
    names = list(targets) or [t for t in targets_for(ctx, series, ())
                              if read_manifest(ws.config_root, series, t) is not None]
    results = []
    with progress_sink(fmt) as say:
        for t in names:
            results.append(backport_version(ws, state, fetched, t, rebase=True, progress=say))
    exit_with(show(results, fmt))
