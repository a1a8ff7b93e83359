"""``patchflow ci``: pipelines for the CI engines kernel teams already run, and runner setup."""

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
              help="Extra argument for every `patchflow gate` call (repeat), e.g. --force.")
@click.option("--pip-spec", default="patchflow", show_default=True,
              help="What each runner pip-installs (a release, URL or path; the pipeline "
                   "variable PATCHFLOW_PIP_SPEC overrides it); '' when runners have patchflow "
                   "and its tools already.")
@click.option("--image", default="debian:bookworm", show_default=True,
              help="Debian container every job runs in.")
@click.option("--timeout", default="3h", show_default=True, help="Timeout of each gate job.")
@click.option("--tag", "tags", multiple=True,
              help="GitLab runner tag / GitHub runs-on label (repeat) [default: ubuntu-latest].")
@click.option("--schedule", default=None, metavar="CRON",
              help="GitHub cron schedule (GitLab: set schedules in its UI).")
@click.option("--watch", multiple=True, default=("series/**", "targets/**"), show_default=True,
              help="Paths whose change on a push triggers the pipeline (repeat).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here instead of stdout.")
@pass_ctx
def generate_cmd(ctx: Ctx, series: str, engine: str, targets: tuple[str, ...], split: bool,
                 gate_args: tuple[str, ...], pip_spec: str, image: str, timeout: str,
                 tags: tuple[str, ...], schedule: str | None, watch: tuple[str, ...],
                 output: Path | None) -> None:
    """Write a GitLab or GitHub pipeline running the gate of SERIES, one job per target."""
    from patchflow import cigen
    from patchflow.workspace import atomic_write

    chosen = targets or ctx.ws.config.series(series).targets
    text = cigen.generate(cigen.PipelineSpec(
        engine=engine, series=series, targets=tuple(chosen), split=split, gate_args=gate_args,
        pip_spec=pip_spec, image=image, timeout=timeout, tags=tags, schedule=schedule,
        watch=watch))
    if output is None:
        click.echo(text, nl=False)
    else:
        atomic_write(output, text)
        click.echo(f"wrote {output}")


@ci_cmd.command("setup")
@click.option("--stage", "stages", multiple=True,
              help="Only the tools of this stage group (repeat): series, tree, backport, build, "
                   "boot, bench, livepatch, mirror, report [default: the gate's].")
@click.option("--dry-run", is_flag=True, help="Say what is missing; install nothing.")
def setup_cmd(stages: tuple[str, ...], dry_run: bool) -> None:
    """Install the Debian packages the gate's stages need on this runner (as root)."""
    from patchflow import host, tools
    from patchflow.errors import UserError

    try:
        wanted = tools.setup_packages(stages) if stages else tools.setup_packages()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    absent = host.missing(wanted)
    if not absent:
        click.echo(f"ci setup: all {len(wanted)} packages installed")
        return
    click.echo(f"ci setup: missing {' '.join(absent)}")
    if dry_run:
        for argv in host.install_argv(absent):
            click.echo("would run: " + " ".join(argv))
        return
    host.install(absent)
    click.echo(f"ci setup: installed {len(absent)} packages")
