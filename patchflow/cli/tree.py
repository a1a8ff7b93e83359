"""``patchflow tree``: prepare and inspect the kernel trees (one branch per target)."""

from __future__ import annotations

from typing import Any

import click

from patchflow.cli.options import Ctx, emit_json, format_option, pass_ctx, progress_sink, table


@click.group("tree")
def tree_cmd() -> None:
    """Prepare and inspect the kernel trees (one branch per target)."""


@tree_cmd.command("prepare")
@click.argument("targets", nargs=-1, required=True)
@click.option("--upto", help="Stop at this release (e.g. 6.12.115); the branch points there.")
@click.option("--allow-rewrite", is_flag=True,
              help="Take a remote branch that was force-pushed (refused by default).")
@format_option
@pass_ctx
def tree_prepare(ctx: Ctx, targets: tuple[str, ...], upto: str | None, allow_rewrite: bool,
                 fmt: str) -> None:
    """Fetch or build (Debian sources) the branch of each TARGET.

    A git target whose remote branch was force-pushed since the last fetch is
    refused (exit 2) and nothing changes, unless --allow-rewrite is given.
    """
    from patchflow.trees.repo import prepare_tree

    out: list[dict[str, Any]] = []
    with progress_sink(fmt) as say:
        for t in targets:
            out.append(prepare_tree(ctx.ws, t, upto=upto, progress=say,
                                    allow_rewrite=allow_rewrite).to_json())
    if fmt == "json":
        emit_json({"trees": out}, "patchflow.trees/1")
    else:
        table(["target", "branch", "release", "head"],
              [[o["target"], o["branch"], o["release"], o["head"][:12]] for o in out])


@tree_cmd.command("list")
@format_option
@pass_ctx
def tree_list(ctx: Ctx, fmt: str) -> None:
    """Targets, their provider and the prepared branch head."""
    from patchflow.trees.repo import list_trees, release_tags

    rows = []
    for t, kt in list_trees(ctx.ws):
        rows.append({"target": t.name, "provider": t.provider, "branch": t.git.branch if t.git else "",
                     "release": kt.release if kt else "", "head": kt.head if kt else "",
                     "tags": release_tags(kt) if kt else []})
    if fmt == "json":
        emit_json({"trees": rows}, "patchflow.trees/1")
    else:
        table(["target", "provider", "branch", "release", "head"],
              [[r["target"], r["provider"], r["branch"], r["release"] or "(not prepared)",
                str(r["head"])[:12]] for r in rows])
