"""``patchflow doctor``: can this host run each stage?"""

from __future__ import annotations

import click

from patchflow.cli.options import emit_json, exit_with, format_option


@click.command("doctor")
@click.option("--stage", "stages", multiple=True,
              help="Only check these stages (series, mirror, tree, backport, build, boot, "
                   "bench, livepatch, report); repeat, or give a comma-separated list.")
@click.option("--no-kvm", is_flag=True, help="Skip the KVM probe boot.")
@format_option
def doctor_cmd(stages: tuple[str, ...], no_kvm: bool, fmt: str) -> None:
    """Check the host tools every stage needs, their versions, the cache's free space,
    and whether KVM really works.

    Exits 2 when a stage cannot run, naming the packages to install.
    """
    from patchflow.doctor import diagnose
    from patchflow.tools import STAGE_TOOLS, install_commands

    wanted = [s for item in stages for s in item.split(",") if s]
    bad = [s for s in wanted if s not in STAGE_TOOLS]
    if bad:
        raise click.BadParameter(f"unknown stage(s): {', '.join(bad)} (known: "
                                 f"{', '.join(STAGE_TOOLS)})", param_hint="--stage")
    d = diagnose(wanted or None, kvm=not no_kvm)
    if fmt == "json":
        emit_json(d.to_json(), "patchflow.doctor/2")
    else:
        for stage in d.stages():
            click.echo(f"{stage:<10} {'ok' if d.stage_ok(stage) else 'CANNOT RUN'}")
            for c in (c for c in d.checks if c.stage == stage):
                if c.ok:
                    ver = f" {c.version}" if c.version else ""
                    click.echo(f"  ok       {c.tool}{ver}  ({c.found})")
                else:
                    what = "optional" if c.optional else "MISSING "
                    click.echo(f"  {what} {c.tool}  -> {install_commands([c.package])[0]}")
        versions = d.versions()
        if versions:
            click.echo("versions   " + ", ".join(f"{t} {v}" for t, v in versions.items()))
        click.echo(f"cache      {d.cache}: {d.cache_free_gib:.1f} GiB free")
        if d.kvm is not None:
            state = "usable" if d.kvm.usable else "not usable"
            click.echo(f"kvm        {state}: {d.kvm.reason}")
        for cmd in install_commands(d.missing_packages()):
            click.echo(f"install: {cmd}")
    exit_with(0 if d.ok else 2)
