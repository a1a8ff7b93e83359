"""``patchflow boot``: boot a built kernel in QEMU and run a smoke check."""

from __future__ import annotations

import dataclasses

import click

from patchflow.cli.options import (
    Ctx,
    accel_option,
    exit_with,
    finish_run,
    format_option,
    pass_ctx,
    show_results,
    target_option,
)


@click.command("boot")
@click.argument("series", required=False)
@target_option(required=True)
@click.option("--variant", type=click.Choice(["base", "patched"]), default="base",
              show_default=True)
@click.option("--profile", default=None,
              help="Benchmark profile run as the smoke check [default: bench.boot_profile].")
@accel_option
@format_option
@pass_ctx
def boot_cmd(ctx: Ctx, series: str | None, target: str, variant: str, profile: str | None,
             accel: str | None, fmt: str) -> None:
    """Boot a built kernel in QEMU and run a short stress-ng smoke check.

    Exit 1 if the console shows an oops, BUG, WARNING, panic, lockup...; 2 if
    the guest hangs or the run is incomplete.
    """
    from patchflow.boot.stage import boot_variant

    settings = ctx.ws.settings
    if accel:
        settings = dataclasses.replace(settings, bench=dataclasses.replace(settings.bench,
                                                                           accel=accel))
    sc = ctx.stage("boot", series=series, target=target, settings=settings,
                   progress=None if fmt == "text" else (lambda _m: None))
    res = boot_variant(sc, variant, profile=profile, stage=f"boot-{variant}")
    finish_run(ctx, sc, [res])
    exit_with(show_results([res], fmt))
