"""The ``patchflow`` command: a thin click skin over the stage packages.

Sub-commands are grouped by noun and loaded lazily from
``patchflow/cli/<noun>.py`` so that ``patchflow --help`` stays instant.

One way out: a command ends normally (exit 0) or calls
:func:`patchflow.cli.options.exit_with`; a :class:`~patchflow.errors.PatchflowError`,
an OS error on a path the user gave, a bad option or an interrupt (SIGINT or
SIGTERM) is turned into a one-line message and an exit code by
:meth:`PatchflowGroup.invoke`, the same under ``CliRunner``, the installed
script and ``python -m patchflow`` (tests/unit/test_cli.py::test_exit_codes_*).

Exit codes (the CI contract, see README):
  0  everything that ran passed
  1  a real failure: conflict, build failure, oops, significant regression,
     livepatch refused or failing
  2  incomplete: bad input, a missing tool, broken infrastructure, interrupted
"""

from __future__ import annotations

import difflib
import importlib
import signal
import sqlite3
import sys
import types
from typing import Any, NoReturn

import click

from patchflow import __version__
from patchflow.cli.options import Ctx, quiet_option

EPILOG = """\b
Exit codes:
  0  everything that ran passed
  1  a real failure (conflict, build failure, oops, regression, livepatch refused)
  2  incomplete run: bad input, missing tool, infrastructure failure, interrupted
"""

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, short help); every module is named after its command
    "doctor": ("patchflow.cli.doctor", "Check the host tools each stage needs."),
    "demo": ("patchflow.cli.demo", "Run the offline demo on the embedded default."),
    "series": ("patchflow.cli.series", "Fetch and track patch series from lore."),
    "tree": ("patchflow.cli.tree", "Prepare and inspect target kernel trees."),
    "distro": ("patchflow.cli.distro", "Fetch and prepare distribution kernels (Debian)."),
    "backport": ("patchflow.cli.backport", "Apply a series version onto a target branch."),
    "rebase": ("patchflow.cli.rebase", "Re-apply a stored backport after a branch or series moved."),
    "status": ("patchflow.cli.status", "Matrix of series versions x targets."),
    "build": ("patchflow.cli.build", "Build the base or patched kernel for a target."),
    "boot": ("patchflow.cli.boot", "Boot a built kernel in QEMU and run a smoke check."),
    "bench": ("patchflow.cli.bench", "A/B stress-ng reclaim benchmark, base against patched."),
    "livepatch": ("patchflow.cli.livepatch", "Build, verify and bundle live-patch modules."),
    "gate": ("patchflow.cli.gate", "Run the whole pipeline for a series and give a CI verdict."),
    "report": ("patchflow.cli.report", "Render HTML/Markdown reports and a mail draft."),
    "ci": ("patchflow.cli.ci", "Generate pipelines for existing CI engines."),
}


class PatchflowGroup(click.Group):
    """Lazy sub-commands, typo suggestions, and the one place errors become exit codes."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        mod = importlib.import_module(COMMANDS[cmd_name][0])
        cmd = getattr(mod, cmd_name.replace("-", "_") + "_cmd", None)
        return cmd if isinstance(cmd, click.Command) else None

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in COMMANDS:
            close = difflib.get_close_matches(name, list(COMMANDS), n=2, cutoff=0.6)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise click.UsageError(f"No such command {name!r}.{hint}", ctx)
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(n, COMMANDS[n][1]) for n in self.list_commands(ctx)])

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["patchflow.json"] = wants_json(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        from patchflow.errors import PatchflowError

        debug = bool(ctx.params.get("debug"))
        as_json = bool(ctx.meta.get("patchflow.json"))
        try:
            return super().invoke(ctx)
        except PatchflowError as exc:
            if debug:
                raise
            _fail(str(exc), exc.exit_code, type(exc).__name__, as_json)
        except KeyboardInterrupt:
            if isinstance(ctx.obj, Ctx):
                ctx.obj.interrupted = True
            click.echo("interrupted", err=True)
            _fail("interrupted", 2, "Interrupted", as_json, shown=True)
        except OSError as exc:
            if debug:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            _fail(f"{where}{exc.strerror or exc}", 2, type(exc).__name__, as_json)
        except sqlite3.DatabaseError as exc:
            # a page that went bad after State opened it (it checks them all at open); a
            # constraint or SQL error is a bug and keeps its traceback
            if debug or type(exc) not in (sqlite3.DatabaseError, sqlite3.OperationalError):
                raise
            _fail(f"state database: {exc}", 2, "StateError", as_json)
        except click.ClickException as exc:
            # bad options and typos: click's own text, plus the JSON object under --format json
            if not as_json:
                raise
            exc.show()
            _fail(exc.format_message(), 2, type(exc).__name__, as_json, shown=True)


def wants_json(args: list[str]) -> bool:
    """Whether the command line asks for ``--format json`` (read before click parses it,
    so that a bad option or a typo is reported as JSON too)."""
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--format=json" or (arg == "--format" and args[i + 1:i + 2] == ["json"]):
            return True
    return False


def _fail(message: str, code: int, kind: str, as_json: bool, shown: bool = False) -> NoReturn:
    """The one way an error leaves the CLI: one line on stderr, the same as a
    ``patchflow.error/1`` object on stdout under ``--format json``, and *code*
    (tests/unit/test_cli.py::test_json_errors)."""
    if not shown:
        _error(message)
    if as_json:
        import json

        click.echo(json.dumps({"schema": "patchflow.error/1", "message": message,
                               "kind": kind, "exit_code": code}, indent=2, sort_keys=True))
    raise click.exceptions.Exit(code) from None


def _error(message: str) -> None:
    lines = message.strip().splitlines() or ["unknown error"]
    click.secho(f"error: {lines[0]}", fg="red", err=True)
    for line in lines[1:]:
        click.echo(f"  {line}", err=True)


@click.group(cls=PatchflowGroup, epilog=EPILOG,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="patchflow")
@click.option("--workspace", "-w", type=click.Path(file_okay=False), envvar="PATCHFLOW_WORKSPACE",
              help="State, logs and worktrees [default: ./.patchflow].")
@click.option("--config-dir", "-C", type=click.Path(file_okay=False, exists=True),
              envvar="PATCHFLOW_CONFIG_DIR",
              help="Folder with series/ and targets/ [default: cwd or the patchflow checkout].")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug output.")
@quiet_option
@click.pass_context
def cli(ctx: click.Context, workspace: str | None, config_dir: str | None, debug: bool) -> None:
    """Follow a lore patch series onto LTS kernels: fetch, backport, build,
    boot, benchmark, live-patch and gate."""
    ctx.obj = Ctx(workspace=workspace, config_dir=config_dir, debug=debug)
    ctx.call_on_close(ctx.obj.close)


def _terminate(signum: int, frame: types.FrameType | None) -> NoReturn:
    # SIGTERM (a CI job cancelled, systemd stopping us) ends the run like Ctrl-C: the
    # runner kills the children's process groups, the gate records "interrupted" with
    # its partial results and JUnit (tests/integration/test_signals.py)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> NoReturn:
    """The console script and ``python -m patchflow``: the only place that calls sys.exit."""
    signal.signal(signal.SIGTERM, _terminate)
    args = sys.argv[1:] if argv is None else argv
    try:
        # without standalone mode, click returns the code of an Exit raised inside
        rv = cli.main(args=args, prog_name="patchflow", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = 2
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        code = 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        code = 2
    sys.exit(code)
