"""What the sub-commands share: the per-invocation context, option decorators, output helpers.

Every option that more than one command takes is declared here once
(``--target``, ``-v/--version``, ``--format``, ``--accel``...), and
:func:`exit_with` is how a command ends with a non-zero exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from patchflow.state import State
from patchflow.workspace import Workspace

if TYPE_CHECKING:
    from patchflow.config import WorkspaceConfig
    from patchflow.context import StageContext
    from patchflow.result import Progress

F = TypeVar("F", bound=Callable[..., Any])


class Ctx:
    """Lazily opened workspace and state for one invocation."""

    def __init__(self, workspace: str | None, config_dir: str | None, debug: bool) -> None:
        self._workspace_arg = Path(workspace) if workspace else None
        self._config_arg = Path(config_dir) if config_dir else None
        self.debug = debug
        self._ws: Workspace | None = None
        self._state: State | None = None
        #: runs this command started and has not finished (see :meth:`close`)
        self._open_runs: list[str] = []
        #: set by the CLI when the command ended on SIGINT/SIGTERM
        self.interrupted = False

    @property
    def ws(self) -> Workspace:
        if self._ws is None:
            self._ws = Workspace.open(self._workspace_arg, self._config_arg)
        return self._ws

    def settings_if_any(self) -> WorkspaceConfig:
        """The workspace's settings without creating a workspace (``livepatch check`` on a host)."""
        from patchflow.config import load_workspace_config, with_env

        if self._ws is not None:
            return self._ws.settings
        root = self._workspace_arg or Workspace.default_root()
        return with_env(load_workspace_config(root / "config.toml"))

    def run_finished(self, run_id: str) -> None:
        if run_id in self._open_runs:
            self._open_runs.remove(run_id)

    @property
    def state(self) -> State:
        if self._state is None:
            self._state = State(self.ws.db_path)
        return self._state

    def close(self) -> None:
        """Close the state; a run the command never finished is recorded as such.

        An interrupted command (SIGINT, SIGTERM) leaves its run "interrupted",
        one that ended on an error "error", never "running" forever
        (tests/integration/test_signals.py).
        """
        from patchflow.errors import StateError

        if self._state is not None:
            for run_id in self._open_runs:
                with contextlib.suppress(StateError):
                    self._state.finish_run(run_id, "interrupted" if self.interrupted
                                           else "error")
            self._open_runs.clear()
            self._state.close()
            self._state = None

    def stage(self, command: str, *, series: str | None = None, revision: int | None = None,
              target: str | None = None, settings: WorkspaceConfig | None = None,
              progress: Progress | None = None) -> StageContext:
        """The context a stage function gets, with a run directory for this command."""
        from patchflow.context import StageContext
        from patchflow.workspace import reproduce_cmdline

        run_id = self.state.start_run(command, reproduce_cmdline())
        self._open_runs.append(run_id)
        run_dir = self.ws.runs_dir / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        return StageContext.make(
            self.ws, self.state, log=run_dir / f"{command}.log",
            series=self.ws.config.series(series) if series else None, revision=revision,
            target=self.ws.config.target(target) if target else None, run_dir=run_dir,
            settings=settings, progress=progress or say_plain)


pass_ctx = click.make_pass_decorator(Ctx)


def exit_with(code: int) -> NoReturn:
    """End the command with *code* (the one way a command exits non-zero)."""
    raise click.exceptions.Exit(code)


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


def accel_option(f: F) -> F:
    return click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default=None,
                        help="auto: KVM only if a probe proves it works [default: the "
                             "workspace's bench.accel, auto].")(f)


def interactive() -> bool:
    """True on a terminal outside CI: progress bars and tables; else plain lines."""
    return sys.stdout.isatty() and not os.environ.get("CI")


def quiet() -> bool:
    """``-q/--quiet`` given, globally or to the command: progress lines are not printed."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get("patchflow.quiet"))


def _set_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta["patchflow.quiet"] = True


def quiet_option(f: F) -> F:
    """``-q/--quiet`` as b4 has it: only results and errors, no progress (also global)."""
    return click.option("-q", "--quiet", is_flag=True, expose_value=False, is_eager=True,
                        callback=_set_quiet, help="Print results and errors only.")(f)


def say_plain(msg: str) -> None:
    if not quiet():
        click.echo(f"... {msg}", err=True)


@contextmanager
def progress_sink(fmt: str = "text") -> Iterator[Callable[[str], None]]:
    """A rich spinner on a terminal, plain stderr lines in CI, nothing for --format json."""
    if fmt == "json" or quiet():
        yield lambda _msg: None
        return
    if interactive():
        from rich.console import Console

        console = Console(stderr=True)
        with console.status("working...") as status:
            def say(msg: str) -> None:
                status.update(msg)
                console.log(msg)
            yield say
        return
    yield say_plain


def emit_json(obj: Any, schema: str | None = None) -> None:
    """JSON on stdout; an object gets its ``schema`` name so a reader knows what it holds."""
    if schema is not None:
        obj = {"schema": schema, **obj} if isinstance(obj, dict) else {"schema": schema,
                                                                      "items": obj}
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


def show_results(results: Sequence[Any], fmt: str) -> int:
    """Print stage results (text or JSON); their combined exit code."""
    from patchflow.result import exit_code

    if fmt == "json":
        emit_json({"results": [r.to_json() for r in results]}, "patchflow.stage-results/1")
    else:
        for r in results:
            colour = {"pass": "green", "warn": "yellow", "fail": "red", "error": "red"}.get(
                r.status.value)
            line = f"{r.stage} {r.target or ''}: {r.status.value.upper()} {r.summary}"
            click.secho(line, fg=colour if interactive() else None)
            if r.log:
                click.echo(f"  log: {r.log}")
    return exit_code(r.status for r in results)


def finish_run(ctx: Ctx, stage_ctx: StageContext, results: Sequence[Any]) -> None:
    """Record the results of a command's stages and close its run."""
    from patchflow.bench.ab import sample_rows
    from patchflow.gate.records import verdict_status
    from patchflow.result import exit_code

    run_id = stage_ctx.run_dir.name if stage_ctx.run_dir else ""
    for r in results:
        ctx.state.record(r, run_id=run_id, series=stage_ctx.series.name
                         if stage_ctx.series else None, revision=stage_ctx.revision,
                         samples=sample_rows(r))
    ctx.state.finish_run(run_id, verdict_status(exit_code(r.status for r in results)))
    ctx.run_finished(run_id)
