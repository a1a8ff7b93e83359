"""Options shared by several sub-commands, and the per-invocation context."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from patchflow.state import State
from patchflow.workspace import Workspace

F = TypeVar("F", bound=Callable[..., Any])


class Ctx:
    """Lazily opened workspace and state for one invocation."""

    def __init__(self, workspace: str | None, config_dir: str | None, debug: bool) -> None:
        self._workspace_arg = Path(workspace) if workspace else None
        self._config_arg = Path(config_dir) if config_dir else None
        self.debug = debug
        self._ws: Workspace | None = None
        self._state: State | None = None

    @property
    def ws(self) -> Workspace:
        if self._ws is None:
            self._ws = Workspace.open(self._workspace_arg, self._config_arg)
        return self._ws

    @property
    def state(self) -> State:
        if self._state is None:
            self._state = State(self.ws.db_path)
        return self._state

    def close(self) -> None:
        if self._state is not None:
            self._state.close()
            self._state = None


pass_ctx = click.make_pass_decorator(Ctx)


def format_option(f: F) -> F:
    return click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                        show_default=True, help="Output format.")(f)


def target_option(multiple: bool = False, required: bool = False) -> Callable[[F], F]:
    def deco(f: F) -> F:
        return click.option("--target", "-t", "targets" if multiple else "target",
                            multiple=multiple, required=required,
                            help="Target name (targets/<name>.toml)." +
                            (" Repeat for several; default: the series' targets." if multiple
                             else ""))(f)
    return deco


def version_option(f: F) -> F:
    return click.option("-v", "--version", "revision", type=click.IntRange(1, 999), default=None,
                        help="Series revision (default: the newest fetched).")(f)


def interactive() -> bool:
    """True on a terminal outside CI: progress bars and tables; else plain lines."""
    return sys.stdout.isatty() and not os.environ.get("CI")


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    """A rich table on a terminal, aligned plain text otherwise."""
    if interactive():
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title)
        for h in headers:
            t.add_column(h)
        for r in rows:
            t.add_row(*[str(c) for c in r])
        Console().print(t)
        return
    if title:
        click.echo(title)
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
