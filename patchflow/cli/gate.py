"""``patchflow gate``: the whole pipeline of a series on each target, and one verdict."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from patchflow.cli.options import (
    Ctx,
    emit_json,
    exit_with,
    format_option,
    pass_ctx,
    target_option,
    version_option,
)

if TYPE_CHECKING:
    from patchflow.gate.run import GateEntry

GATE_EPILOG = """\\b
Exit codes:
  0  every stage that ran passed (pass, warn or skip)
  1  a real failure: conflict, build failure, oops, significant
     regression, livepatch refused or failing
  2  incomplete: a stage errored, a needed stage never ran, bad input,
     or the run was interrupted (SIGINT, SIGTERM)
\\b
Stages whose inputs (series, branch head, config, the settings they read,
tool version) did not change since a stored pass/warn/fail are reused, so
running the same command again resumes an interrupted gate.  --force runs
everything.  --dry-run records nothing and says what would run.
"""


@click.command("gate", epilog=GATE_EPILOG)
@click.argument("series", required=False)
@target_option(multiple=True)
@version_option
@click.option("--stage", "-s", "stages", multiple=True,
              help="Run only this stage (repeat); needed stages must have run before "
                   "with the same inputs (a CI job of a split pipeline).")
@click.option("--dry-run", is_flag=True, help="Show what would run; run and record nothing.")
@click.option("--force", is_flag=True, help="Run stages even if their inputs did not change.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory for metadata.json, results.json, junit.xml and logs "
                   "[default: WORKSPACE/runs/RUN_ID].")
@click.option("--list-stages", is_flag=True, help="List the stages and exit.")
@format_option
@pass_ctx
def gate_cmd(ctx: Ctx, series: str | None, targets: tuple[str, ...], revision: int | None,
             stages: tuple[str, ...], dry_run: bool, force: bool, out: Path | None,
             list_stages: bool, fmt: str) -> None:
    """Run the whole pipeline of SERIES on each target and give one verdict."""
    from patchflow.gate import run as gate
    from patchflow.gate.registry import STAGES
    from patchflow.workspace import reproduce_cmdline

    if list_stages:
        for s in STAGES:
            needs = f" (needs {', '.join(s.needs)})" if s.needs else ""
            click.echo(f"{s.name:18} {s.description}{needs}")
        return
    if series is None:
        raise click.UsageError("missing argument SERIES")
    cfg = ctx.ws.config.series(series)
    chosen_targets = list(targets) or list(cfg.targets)

    def show(e: GateEntry) -> None:
        if fmt == "text":
            r = e.result
            tag = f" ({e.plan})" if e.plan else (" (reused)" if e.cached else "")
            click.echo(f"{r.target or '-':14} {r.stage:17} {r.status.value.upper():5} "
                       f"{r.summary}{tag}")

    run = gate.execute(ctx.ws, ctx.state, cfg, targets=chosen_targets, revision=revision,
                       selected=list(stages) or None, dry_run=dry_run, force=force, out_dir=out,
                       reproduce=reproduce_cmdline(), debug=ctx.debug, on_result=show)
    if run.dry_run:
        if fmt == "json":
            emit_json({"dry_run": True, "plan": [
                {"target": e.result.target, "stage": e.result.stage, "plan": e.plan,
                 "summary": e.result.summary} for e in run.entries], "missing": run.missing},
                "patchflow.gate-plan/1")
        else:
            for m in run.missing:
                click.echo(f"missing: {m}")
            click.echo("dry run: nothing was run or recorded")
        return
    if fmt == "json":
        from patchflow.gate.records import verdict_status

        emit_json({"run_id": run.run_id, "run_dir": str(run.run_dir),
                   "exit_code": run.exit_code,
                   "verdict": verdict_status(run.exit_code, run.interrupted),
                   "results": [e.result.to_json() | {"cached": e.cached}
                               for e in run.entries]}, "patchflow.gate/1")
    else:
        state = "interrupted" if run.interrupted else {0: "PASS", 1: "FAIL"}.get(
            run.exit_code, "INCOMPLETE")
        click.echo(f"verdict: {state} (exit {run.exit_code}); records in {run.run_dir}")
    exit_with(run.exit_code)
