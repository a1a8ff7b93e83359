"""``patchflow report``: HTML and Markdown reports and a mail draft from gate results."""

from __future__ import annotations

from pathlib import Path

import click

from patchflow.cli.options import Ctx, exit_with, pass_ctx


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
    from patchflow.gate.records import load_results
    from patchflow.gate.records import merge as merge_docs
    from patchflow.report.render import write_report

    paths = list(sources)
    if not paths:
        found = sorted(ctx.ws.runs_dir.glob("*/results.json"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise UserError(f"no gate results in {ctx.ws.runs_dir}; run `patchflow gate` first")
        paths = [found[-1]]
    docs = load_results(paths)
    if len(docs) > 1 and not merge:
        raise UserError(f"{len(docs)} results files found; pass --merge to merge them")
    if merge:
        out_dir = out or Path("report")
        doc = merge_docs(docs, base_dir=out_dir.absolute())
    else:
        out_dir = out or docs[0][0].parent
        doc = docs[0][1]
    who = (tested_by or _git_identity()) if mail else None
    written = write_report(doc, out_dir, tested_by=who, write_results=merge)
    for p in (written.html, written.markdown, written.results, written.junit, written.mail):
        if p is not None:
            click.echo(f"wrote {p}")
    click.echo(f"verdict: {doc.verdict.status} (exit {doc.verdict.exit_code})")
    if verdict:
        exit_with(doc.verdict.exit_code)


def _git_identity() -> str:
    from patchflow import gitrepo
    from patchflow.errors import UserError

    who = gitrepo.identity()
    if who is None:
        raise UserError("no Tested-by identity: pass --tested-by 'Name <email>' or set "
                        "git config user.name and user.email")
    return who
