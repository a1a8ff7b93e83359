"""``patchflow series``: fetch, list, show and diff tracked series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from patchflow.cli.options import (
    Ctx,
    emit_json,
    format_option,
    interactive,
    pass_ctx,
    quiet,
    quiet_option,
    table,
    target_option,
)


@click.group("series")
def series_cmd() -> None:
    """Fetch patch series from lore with b4 and track their versions."""


@series_cmd.command("fetch")
@click.argument("what", metavar="NAME|MSGID")
@click.option("-v", "--version", "revision", type=click.IntRange(1, 999),
              help="Only this revision.")
@click.option("--check-newer", is_flag=True, help="Also look for newer revisions on the mirror.")
@click.option("--allow-partial", is_flag=True,
              help="Store a series even if patches are missing from the thread.")
@click.option("--mirror", metavar="MIDMASK",
              help="Mirror URL mask, e.g. http://127.0.0.1:8080/linux-mm/%s "
                   "[default: workspace config lore.midmask, else lore].")
@click.option("--name", help="Series name when fetching by message-id [default: from subject].")
@click.option("--timeout", type=click.IntRange(1, 3600),
              help="Seconds one b4 run may take [default: workspace lore.timeout, 60].")
@format_option
@quiet_option
@pass_ctx
def fetch(ctx: Ctx, what: str, revision: int | None, check_newer: bool, allow_partial: bool,
          mirror: str | None, name: str | None, timeout: int | None, fmt: str) -> None:
    """Fetch a tracked series by NAME (series/NAME.toml) or any thread by MSGID.

    Fetching again is idempotent.  Exit 2 when the mirror cannot be reached,
    the message-id is unknown, or the thread is not a complete patch series.
    """
    from patchflow.lore import series

    def progress(msg: str) -> None:
        if fmt == "text" and not quiet():
            click.echo(f"... {msg}", err=True)

    if interactive() and fmt == "text" and not quiet():
        from rich.console import Console

        with Console(stderr=True).status("fetching from lore...") as status:
            report = series.fetch(ctx.ws, ctx.state, what, revision=revision,
                                  check_newer=check_newer, allow_partial=allow_partial,
                                  mirror=mirror, name=name, timeout=timeout,
                                  progress=lambda m: status.update(m))
    else:
        report = series.fetch(ctx.ws, ctx.state, what, revision=revision,
                              check_newer=check_newer, allow_partial=allow_partial,
                              mirror=mirror, name=name, timeout=timeout,
                              progress=progress)
    added, path = _record_newer(ctx, report) if check_newer else ([], None)
    if fmt == "json":
        from patchflow import typed

        emit_json({**report.to_json(), "series_file": str(path) if path else None,
                   "added_to_series_file": typed.dump(added)}, "patchflow.fetch/2")
        return
    for ref in report.stored:
        click.echo(f"stored {report.series} v{ref.revision}: {ref.subject} <{ref.msgid}>")
        click.echo(f"  mbox: {ref.mbox}")
    for ref in report.unchanged:
        click.echo(f"unchanged {report.series} v{ref.revision} <{ref.msgid}>")
        if not quiet():
            click.echo(f"  mbox: {ref.mbox}")
    for ref in added:
        click.echo(f"added v{ref.revision} <{ref.msgid}> to {path}")
    for note in report.notes:
        if not quiet() or note.startswith("newer revision"):
            click.echo(f"note: {note}")


def _record_newer(ctx: Ctx, report: Any) -> tuple[list[Any], Any]:
    """--check-newer: what was found goes into series/<name>.toml when the series has one."""
    from patchflow.lore.track import add_postings, postings_of

    path = ctx.ws.config.series_dir / f"{report.series}.toml"
    if not report.series or not path.is_file():
        return [], None
    added, note = add_postings(path, postings_of(ctx.state.versions(report.series)))
    if note:
        report.notes.append(note)
    return added, path


@series_cmd.command("track")
@click.argument("what", metavar="MSGID|URL")
@click.option("--name", help="Series name, the file series/NAME.toml [default: from subject].")
@target_option(multiple=True)
@click.option("--mirror", metavar="MIDMASK",
              help="Mirror URL mask [default: workspace config lore.midmask, else lore].")
@click.option("--timeout", type=click.IntRange(1, 3600),
              help="Seconds one b4 run may take [default: workspace lore.timeout, 60].")
@format_option
@quiet_option
@pass_ctx
def track(ctx: Ctx, what: str, name: str | None, targets: tuple[str, ...], mirror: str | None,
          timeout: int | None, fmt: str) -> None:
    """Fetch any series by MSGID or lore URL and write series/NAME.toml.

    Every version found is recorded: the one given, newer ones b4 finds, and
    earlier ones the cover letters link to ("Link to v1: ...").  Afterwards
    backport, gate, status and ci generate work on NAME.  Exit 2 on a bad
    message-id, name or target, an unreachable mirror or a thread that is no
    series; nothing is written then.
    """
    from patchflow.cli.options import progress_sink
    from patchflow.lore.track import track as track_series

    with progress_sink(fmt) as say:
        report = track_series(ctx.ws, ctx.state, what, name=name, targets=targets,
                              mirror=mirror, timeout=timeout, progress=say)
    if fmt == "json":
        emit_json(report.to_json(), "patchflow.track/1")
        return
    verb = "wrote" if report.created else ("updated" if report.added else "unchanged")
    click.echo(f"{verb} {report.path}: {report.series} "
               + ", ".join(f"v{r} ({len(m)} posting{'s' if len(m) > 1 else ''})"
                           for r, m in report.versions))
    for f in report.fetched:
        for ref in f.stored:
            click.echo(f"stored v{ref.revision} <{ref.msgid}>  mbox: {ref.mbox}")
    for note in report.notes:
        if not quiet():
            click.echo(f"note: {note}")


@series_cmd.command("am")
@click.argument("name")
@click.option("-v", "--version", "revision", type=click.IntRange(1, 999), required=True,
              help="The revision to write.")
@click.option("-o", "--outdir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder to write NAME-vN.mbx into (created if missing).")
@format_option
@quiet_option
@pass_ctx
def am(ctx: Ctx, name: str, revision: int, outdir: Path, fmt: str) -> None:
    """Write an am-ready mbox of a fetched version, for `git am`, as b4 am does."""
    from patchflow.lore.series import write_am_mbox

    path, count = write_am_mbox(ctx.ws, ctx.state, name, revision, outdir)
    if fmt == "json":
        emit_json({"series": name, "revision": revision, "mbox": str(path), "patches": count},
                  "patchflow.series-am/1")
        return
    click.echo(f"wrote {path} ({count} patches)")
    if not quiet():
        click.echo(f"apply it with: git am {path}")


@series_cmd.command("list")
@format_option
@pass_ctx
def list_(ctx: Ctx, fmt: str) -> None:
    """List tracked series: configured ones and fetched ones."""
    from patchflow.lore.series import current_postings

    names = sorted(set(ctx.ws.config.series_names()) | set(ctx.state.series_names()))
    rows: list[dict[str, Any]] = []
    for n in names:
        fetched = ctx.state.versions(n)
        cur = current_postings(fetched)
        rows.append({"name": n, "configured": n in ctx.ws.config.series_names(),
                     "revisions": sorted(cur), "postings": len(fetched),
                     "latest": max(cur) if cur else None})
    if fmt == "json":
        emit_json({"series": rows}, "patchflow.series-list/2")
        return
    table(["series", "configured", "fetched", "postings"],
          [[r["name"], "yes" if r["configured"] else "no",
            " ".join(f"v{v}" for v in r["revisions"]) or "-", r["postings"]] for r in rows])


@series_cmd.command("show")
@click.argument("name")
@click.option("-v", "--version", "revision", type=click.IntRange(1, 999))
@format_option
@pass_ctx
def show(ctx: Ctx, name: str, revision: int | None, fmt: str) -> None:
    """Show the fetched versions of a series and their patches."""
    from patchflow.errors import NotFound
    from patchflow.lore.series import current_postings, duplicate_notes, to_json

    rows = ctx.state.versions(name)
    if revision is not None:
        rows = [r for r in rows if r.revision == revision]
    if not rows:
        raise NotFound(f"series {name!r}{f' v{revision}' if revision else ''} was never fetched")
    if fmt == "json":
        emit_json({"versions": to_json(rows, ctx.state)}, "patchflow.series-show/2")
        return
    cur = current_postings(rows)
    for rev, (row, others) in sorted(cur.items()):
        att = row.attestation.get("overall", "none")
        click.echo(f"v{rev}  {row.subject}")
        click.echo(f"     {row.msgid}  posted {row.posted}  attestation: {att}"
                   + ("  PARTIAL" if row.partial else ""))
        for o in others:
            click.echo(f"     also posted as {o.msgid} ({o.posted}); not used")
        for p in ctx.state.patches(row.id):
            click.echo(f"  {p.idx:>2}/{p.total} {p.patch_id[:12]} {p.subject}")
            for t in p.trailers:
                click.echo(f"         {t}")
    for note in duplicate_notes(rows):
        click.echo(f"note: {note}")


@series_cmd.command("diff")
@click.argument("name")
@click.argument("va")
@click.argument("vb")
@format_option
@quiet_option
@pass_ctx
def diff(ctx: Ctx, name: str, va: str, vb: str, fmt: str) -> None:
    """Compare two fetched versions with git range-diff: `series diff NAME v1 v2`.

    Each version is applied onto its base in a throwaway repository (the
    cover letter's base-commit if the shared kernel repository has it, else a
    fake ancestor from the patches' index lines and context) and git pairs
    the patches: = same, ! changed, < dropped, > added.
    """
    from patchflow.lore.series import diff_versions_full, format_range_diff

    a, b = _rev(va), _rev(vb)
    rd = diff_versions_full(ctx.ws, ctx.state, name, a, b)
    if fmt == "json":
        emit_json({"series": name, "old": a, "new": b, "engine": "git range-diff",
                   "bases": {"old": rd.old.to_json(), "new": rd.new.to_json()},
                   "entries": [e.to_json() for e in rd.entries]}, "patchflow.range-diff/2")
        return
    for base in (rd.old, rd.new):
        if base.reconstructed and not quiet():
            click.echo(f"note: v{base.revision}: base not available; pre-images rebuilt from "
                       f"the patches' context for {', '.join(base.reconstructed)}", err=True)
    click.echo(format_range_diff(rd.entries, a, b))


def _rev(text: str) -> int:
    t = text.lower().removeprefix("v")
    if not t.isdigit() or int(t) < 1:
        raise click.BadParameter(f"not a version: {text!r} (expected v1, v2, ...)")
    return int(t)
