"""``patchflow status``: series versions x targets, with the state of each backport."""

from __future__ import annotations

import click

from patchflow.cli.options import Ctx, emit_json, format_option, pass_ctx, table


@click.command("status")
@click.argument("series", required=False)
@format_option
@pass_ctx
def status_cmd(ctx: Ctx, series: str | None, fmt: str) -> None:
    """Matrix of series versions x targets: state and date of the last backport.

    Versions that were fetched but never backported are listed as
    "not-backported".  An unknown SERIES is exit 2.
    """
    from patchflow import typed
    from patchflow.backport.stage import status_matrix
    from patchflow.errors import NotFound
    from patchflow.gate.records import iso

    known = set(ctx.state.series_names()) | {r.series for r in ctx.state.backports()}
    if series is not None and series not in known and series not in ctx.ws.config.series_names():
        raise NotFound(f"unknown series {series!r} (fetched: {', '.join(sorted(known)) or 'none'})")
    rows = status_matrix(ctx.state, series)
    if fmt == "json":
        emit_json({"rows": [{**typed.dump(r), "state": _state(r.state),
                             "target": None if r.target == "-" else r.target,
                             "updated": iso(r.updated) if r.updated else None}
                            for r in rows]}, "patchflow.status/2")
        return
    if not rows:
        click.echo(f"{series}: tracked in {ctx.ws.config.series_dir / f'{series}.toml'}, "
                   "nothing fetched yet" if series else "nothing fetched yet")
        return
    targets = sorted({r.target for r in rows if r.target != "-"})
    cells: dict[tuple[str, int], dict[str, str]] = {}
    for r in rows:
        cell = f"{r.state} {iso(r.updated)[:16].replace('T', ' ')}" if r.updated else \
            _state(r.state)
        cells.setdefault((r.series, r.revision), {})[r.target] = cell
    table(["series", "version", *(targets or ["backports"])],
          [[s, f"v{v}", *[c.get(t, "not-backported") for t in targets or ["-"]]]
           for (s, v), c in cells.items()])
    for r in rows:
        for skip in r.skipped:  # patches dropped with `backport --skip --note WHY`
            click.echo(f"{r.series} v{r.revision} {r.target}: skipped {skip}")


def _state(state: str) -> str:
    # status_matrix says "-" for a fetched version no target has had yet
    return "not-backported" if state == "-" else state
