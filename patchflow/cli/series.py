"""``patchflow series``: fetch, list, show and diff tracked series."""

from __future__ import annotations

from typing import Any

import click

from patchflow.cli.options import (
    Ctx,
    emit_json,
    format_option,
    interactive,
    pass_ctx,
    table,
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
@pass_ctx
def fetch(ctx: Ctx, what: str, revision: int | None, check_newer: bool, allow_partial: bool,
          mirror: str | None, name: str | None, timeout: int | None, fmt: str) -> None:
    """Fetch a tracked series by NAME (series/NAME.toml) or any thread by MSGID.

    Fetching again is idempotent.  Exit 2 when the mirror cannot be reached,
    the message-id is unknown, or the thread is not a complete patch series.
    """
    from patchflow.lore import series

    def progress(msg: str) -> None:
        if fmt == "text":
            click.echo(f"... {msg}", err=True)

    if interactive() and fmt == "text":
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
    if fmt == "json":
        emit_json(report.to_json(), "patchflow.fetch/1")
        return
    for ref in report.stored:
        click.echo(f"stored {report.series} v{ref.revision}: {ref.subject} <{ref.msgid}>")
    for ref in report.unchanged:
        click.echo(f"unchanged {report.series} v{ref.revision} <{ref.msgid}>")
    for note in report.notes:
        click.echo(f"note: {note}")


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
                     "versions": [f"v{r}" for r in sorted(cur)],
                     "postings": len(fetched),
                     "latest": max(cur) if cur else None})
    if fmt == "json":
        emit_json({"series": rows}, "patchflow.series-list/1")
        return
    table(["series", "configured", "fetched", "postings"],
          [[r["name"], "yes" if r["configured"] else "no",
            " ".join(r["versions"]) or "-", r["postings"]] for r in rows])


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
        emit_json({"versions": to_json(rows, ctx.state)}, "patchflow.series-show/1")
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
@pass_ctx
def diff(ctx: Ctx, name: str, va: str, vb: str, fmt: str) -> None:
    """Range-diff between two fetched versions, e.g. `series diff NAME v1 v2`."""
    from patchflow.lore.series import diff_versions, format_range_diff

    a, b = _rev(va), _rev(vb)
    entries = diff_versions(ctx.ws, ctx.state, name, a, b)
    if fmt == "json":
        emit_json({"series": name, "old": a, "new": b, "entries": [e.to_json() for e in entries]},
                  "patchflow.range-diff/1")
        return
    click.echo(format_range_diff(entries, a, b))


def _rev(text: str) -> int:
    t = text.lower().removeprefix("v")
    if not t.isdigit() or int(t) < 1:
        raise click.BadParameter(f"not a version: {text!r} (expected v1, v2, ...)")
    return int(t)
