"""``patchflow gate``, ``patchflow report`` and ``patchflow ci``: the CI-facing commands.

A thin skin over :mod:`patchflow.gate.run`, :mod:`patchflow.report.view` and
:mod:`patchflow.cigen`; heavy imports stay inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from patchflow.cli.options import Ctx, emit_json, format_option, pass_ctx, target_option

if TYPE_CHECKING:
    from patchflow.gate.run import GateEntry

GATE_EPILOG = """\b
Exit codes:
  0  every stage that ran passed (pass, warn or skip)
  1  a real failure: conflict, build failure, oops, significant
     regression, livepatch refused or failing
  2  incomplete: a stage errored or is not available, a needed stage
     never ran, bad input, or the run was interrupted
\b
Stages whose inputs (series, branch head, config, tool version) did not
change since a stored pass/warn/fail are reused, so running the same
command again resumes an interrupted gate.  --force runs everything.
"""


@click.command("gate", epilog=GATE_EPILOG)
@click.argument("series", required=False)
@target_option(multiple=True)
@click.option("-v", "--version", "revision", type=click.IntRange(1, 999), default=None,
              help="Series revision (default: the newest fetched or configured).")
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
    from patchflow.workspace import reproduce_cmdline

    if list_stages:
        for s in gate.default_stages():
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
            tag = " (reused)" if e.cached else ""
            click.echo(f"{r.target or '-':14} {r.stage:17} {r.status.value.upper():5} "
                       f"{r.summary}{tag}")

    run = gate.execute(ctx.ws, ctx.state, cfg, targets=chosen_targets, revision=revision,
                       selected=list(stages) or None, dry_run=dry_run, force=force, out_dir=out,
                       reproduce=reproduce_cmdline(), debug=ctx.debug, on_result=show)
    if fmt == "json":
        emit_json({"run_id": run.run_id, "run_dir": str(run.run_dir),
                   "exit_code": run.exit_code, "results": [e.to_json() for e in run.entries]})
    else:
        state = "interrupted" if run.interrupted else {0: "PASS", 1: "FAIL"}.get(
            run.exit_code, "INCOMPLETE")
        click.echo(f"verdict: {state} (exit {run.exit_code}); records in {run.run_dir}")
    click.get_current_context().exit(run.exit_code)


@click.command("report")
@click.argument("sources", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--merge", is_flag=True,
              help="Merge every results.json found under SOURCES (one per CI job) into one.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: beside the results file; ./report with --merge].")
@click.option("--mail", is_flag=True, help="Also draft a reply to the series thread (mail.txt).")
@click.option("--tested-by", default=None, metavar="'NAME <EMAIL>'",
              help="Tested-by line for --mail [default: git config user.name/user.email].")
@click.option("--verdict", is_flag=True, help="Exit with the verdict's exit code (0, 1 or 2).")
@pass_ctx
def report_cmd(ctx: Ctx, sources: tuple[Path, ...], merge: bool, out: Path | None, mail: bool,
               tested_by: str | None, verdict: bool) -> None:
    """Render report.html and summary.md from gate results (default: the newest run)."""
    from patchflow.errors import UserError
    from patchflow.report import view as report

    paths = list(sources)
    if not paths:
        found = sorted(ctx.ws.runs_dir.glob("*/results.json"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise UserError(f"no gate results in {ctx.ws.runs_dir}; run `patchflow gate` first")
        paths = [found[-1]]
    docs = report.load_results(paths)
    if len(docs) > 1 and not merge:
        raise UserError(f"{len(docs)} results files found; pass --merge to merge them")
    if merge:
        out_dir = out or Path("report")
        doc = report.merge_results(docs, base_dir=out_dir.absolute())
    else:
        out_dir = out or docs[0][0].parent
        doc = docs[0][1]
    who = (tested_by or _git_identity()) if mail else None
    written = report.write_report(doc, out_dir, tested_by=who, write_results=merge)
    for p in (written.html, written.markdown, written.results, written.mail):
        if p is not None:
            click.echo(f"wrote {p}")
    code = int(doc["verdict"]["exit_code"])
    click.echo(f"verdict: {doc['verdict']['status']} (exit {code})")
    if verdict:
        click.get_current_context().exit(code)


def _git_identity() -> str:
    from patchflow.errors import UserError
    from patchflow.runner import run

    parts = []
    for key in ("user.name", "user.email"):
        done = run(["git", "config", "--get", key], check=False, timeout=10)
        parts.append(done.stdout.strip())
    if not all(parts):
        raise UserError("no Tested-by identity: pass --tested-by 'Name <email>' or set "
                        "git config user.name and user.email")
    return f"{parts[0]} <{parts[1]}>"


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
