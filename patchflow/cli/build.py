"""``patchflow build``: the base and/or patched kernel of a series for a target."""

from __future__ import annotations

from pathlib import Path

import click

from patchflow.cli.options import (
    Ctx,
    exit_with,
    finish_run,
    format_option,
    pass_ctx,
    show_results,
    target_option,
)


@click.command("build")
@click.argument("series")
@target_option(required=True)
@click.option("--variant", type=click.Choice(["base", "patched", "both"]), default="both",
              show_default=True, help="Which kernel to build; patched rebuilds over base.")
@click.option("--mbox", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Apply this mbox to the branch head instead of using the backport branch.")
@click.option("--jobs", "-j", type=click.IntRange(1, 512), default=None,
              help="make -j [default: nproc].")
@format_option
@pass_ctx
def build_cmd(ctx: Ctx, series: str, target: str, variant: str, mbox: Path | None,
              jobs: int | None, fmt: str) -> None:
    """Build the baseline and/or patched kernel of SERIES for a target.

    Baseline: the target branch head; patched: the backport branch that
    `patchflow backport` wrote (or, with --mbox, that mbox applied).

    The config is the target's base config plus its kconfig fragments; every
    requested option is checked after olddefconfig.  Artefacts are kept per
    variant in the shared cache.  Exit 1 on a build failure or a dropped
    option, 2 on a missing tool or a full disk.
    """
    from patchflow.kernel.stage import build_target

    sc = ctx.stage("build", series=series if mbox is None else None, target=target,
                   progress=None if fmt == "text" else (lambda _m: None))
    results = build_target(sc, variant, mbox=mbox, jobs=jobs)
    finish_run(ctx, sc, results)
    exit_with(show_results(results, fmt))
