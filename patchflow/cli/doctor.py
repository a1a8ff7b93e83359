"""``patchflow doctor``: can this host run each stage?"""

from __future__ import annotations

import click

from patchflow.cli.options import emit_json, format_option


@click.command("doctor")
@click.option("--stage", "stages", multiple=True,
              help="Only check these stages (series, mirror, tree, backport, build, boot, "
                   "bench, livepatch, report).")
@click.option("--no-kvm", is_flag=True, help="Skip the KVM probe boot.")
@format_option
def doctor_cmd(stages: tuple[str, ...], no_kvm: bool, fmt: str) -> None:
    """Check the host tools every stage needs, and whether KVM really works.

    Exits 2 when a stage cannot run, naming the packages to install.
    """
    from patchflow.doctor import STAGES, diagnose

    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise click.BadParameter(f"unknown stage(s): {', '.join(bad)}", param_hint="--stage")
    d = diagnose(list(stages) or None, kvm=not no_kvm)
    if fmt == "json":
        emit_json(d.to_json())
    else:
        for stage in dict.fromkeys(c.stage for c in d.checks):
            click.echo(f"{stage:<10} {'ok' if d.stage_ok(stage) else 'CANNOT RUN'}")
            for c in (c for c in d.checks if c.stage == stage):
                if c.ok:
                    click.echo(f"  ok       {c.tool}  ({c.found})")
                else:
                    what = "optional" if c.optional else "MISSING "
                    hint = (f"pip install {c.package[4:]}" if c.package.startswith("pip:")
                            else f"apt-get install {c.package}")
                    click.echo(f"  {what} {c.tool}  -> {hint}")
        if d.kvm:
            state = "usable" if d.kvm["usable"] else "not usable"
            click.echo(f"kvm        {state}: {d.kvm['reason']}")
        if d.missing_packages():
            apt = [p for p in d.missing_packages() if not p.startswith("pip:")]
            pip = [p[4:] for p in d.missing_packages() if p.startswith("pip:")]
            if apt:
                click.echo(f"install: apt-get install {' '.join(apt)}")
            if pip:
                click.echo(f"install: pip install {' '.join(pip)}")
    if not all(d.stage_ok(s) for s in dict.fromkeys(c.stage for c in d.checks)):
        raise SystemExit(2)
