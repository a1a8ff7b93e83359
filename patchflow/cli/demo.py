"""``patchflow demo``: the offline demo on the embedded default."""

from __future__ import annotations

import click

from patchflow.cli.options import Ctx, emit_json, exit_with, format_option, pass_ctx


@click.command("demo")
@click.option("--series", "name", default="batch-tlb-flush-demo", show_default=True,
              help="A series with a threads folder to publish into the local mirror.")
@click.option("--target", "-t", "targets", multiple=True,
              help="Gate only these targets [default: the series' targets].")
@click.option("--no-gate", is_flag=True, help="Stop after fetching and diffing the series.")
@format_option
@pass_ctx
def demo_cmd(ctx: Ctx, name: str, targets: tuple[str, ...], no_gate: bool, fmt: str) -> None:
    """Run the offline demo: local lore mirror, b4 fetch, version diff, and the
    whole gate on each target.  Exit 0 only when the verdict is PASS."""
    from patchflow.demo import offline as demo
    from patchflow.result import exit_code

    def say(msg: str) -> None:
        if fmt == "text":
            click.echo(msg)

    results = demo.run(ctx.ws, ctx.state, name, say, targets=list(targets) or None,
                       gate=not no_gate)
    code = exit_code(r.status for r in results)
    if fmt == "json":
        emit_json({"verdict": {0: "pass", 1: "fail"}.get(code, "incomplete"),
                   "exit_code": code, "results": [r.to_json() for r in results]},
                  "patchflow.demo/1")
    else:
        click.echo("")
        for r in results:
            click.echo(f"{(r.target or '-'):<14} {r.stage:<17} {r.status.value.upper():<6} "
                       f"{r.duration:7.1f}s  {r.summary}")
        click.echo(f"verdict: {({0: 'PASS', 1: 'FAIL'}).get(code, 'INCOMPLETE')} (exit {code})")
    exit_with(code)
