"""``patchflow ci``: pipelines for the CI engines kernel teams already run."""

from __future__ import annotations

from pathlib import Path

import click

from patchflow.cli.options import Ctx, pass_ctx, target_option


@click.group("ci")
def ci_cmd() -> None:
    """Generate pipelines that fan the gate out on existing CI engines."""


@ci_cmd.command("generate")
@click.argument("series")
@click.option("--engine", type=click.Choice(["gitlab", "github"]), required=True)
@target_option(multiple=True)
@click.option("--split/--no-split", default=True, show_default=True,
              help="Two jobs per target (prepare, verify) instead of one.")
@click.option("--gate-arg", "gate_args", multiple=True,
              help="Extra argument for every `patchflow gate` call (repeat), e.g. --dry-run.")
@click.option("--install", default="python3 -m pip install patchflow", show_default=True,
              help="Command that installs patchflow on the runner; '' when it is there.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here instead of stdout.")
@pass_ctx
def generate_cmd(ctx: Ctx, series: str, engine: str, targets: tuple[str, ...], split: bool,
                 gate_args: tuple[str, ...], install: str, output: Path | None) -> None:
    """Write a GitLab or GitHub pipeline running the gate of SERIES, one job per target."""
    from patchflow import cigen
    from patchflow.workspace import atomic_write

    chosen = targets or ctx.ws.config.series(series).targets
    text = cigen.generate(cigen.PipelineSpec(engine=engine, series=series,
                                             targets=tuple(chosen), split=split,
                                             gate_args=gate_args, install=install))
    if output is None:
        click.echo(text, nl=False)
    else:
        atomic_write(output, text)
        click.echo(f"wrote {output}")
