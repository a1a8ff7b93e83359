"""``patchflow distro``: fetch a distribution kernel's packages and prepare its build dir.

Exit codes: 0 prepared; 2 bad input (a release the distribution does not
have, a compiler that is not the kernel's) or broken infrastructure.
"""

from __future__ import annotations

import click

from patchflow.cli.options import Ctx, emit_json, format_option, pass_ctx


@click.group("distro")
def distro_cmd() -> None:
    """Distribution kernels (targets with a [distro] table)."""


@distro_cmd.command("prepare")
@click.argument("target")
@format_option
@pass_ctx
def prepare_cmd(ctx: Ctx, target: str, fmt: str) -> None:
    """Fetch TARGET's packages into the cache and prepare its build dir (no kernel build)."""
    from patchflow.distro.stage import ensure

    tc = ctx.ws.config.target(target)
    say = click.echo if fmt == "text" else (lambda _m: None)
    tree, took = ensure(ctx.ws.cache, tc, say)
    k = tree.kernel
    row = {"target": tc.name, "release": k.release, "version": k.version,
           "compiler": k.compiler, "vmlinux": str(k.vmlinux), "vmlinuz": str(k.vmlinuz),
           "source": str(k.source), "build_dir": str(tree.build),
           "fetch_s": round(took.fetch_s, 1), "prepare_s": round(took.prepare_s, 1)}
    if fmt == "json":
        emit_json(row, "patchflow.distro/1")
        return
    click.echo(f"{tc.name}: {k.release} ({k.version}) ready: build dir {tree.build} "
               f"(fetch {took.fetch_s:.1f} s, prepare {took.prepare_s:.1f} s)")
