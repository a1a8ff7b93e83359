"""The ``patchflow`` command: a thin click skin over the domain modules.

Sub-commands are grouped by noun and loaded lazily from
``patchflow/cli/<noun>.py`` so that ``patchflow --help`` stays instant.

Exit codes (the CI contract, see README):
  0  everything that ran passed
  1  a real failure: conflict, build failure, oops, significant regression,
     livepatch refused or failing
  2  incomplete: bad input, a missing tool, broken infrastructure
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from patchflow import __version__
from patchflow.cli.options import Ctx

EPILOG = """\b
Exit codes:
  0  everything that ran passed
  1  a real failure (conflict, build failure, oops, regression, livepatch refused)
  2  incomplete run: bad input, missing tool, infrastructure failure
"""

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, short help)
    "doctor": ("patchflow.cli.doctor", "Check the host tools each stage needs."),
    "demo": ("patchflow.cli.demo", "Run the offline demo on the embedded default."),
    "series": ("patchflow.cli.series", "Fetch and track patch series from lore."),
    "backport": ("patchflow.cli.backport", "Apply a series version onto a target branch."),
    "rebase": ("patchflow.cli.backport", "Re-apply a stored backport after a branch or series moved."),
    "status": ("patchflow.cli.backport", "Matrix of series versions x targets."),
    "tree": ("patchflow.cli.backport", "Prepare and inspect target kernel trees."),
    "build": ("patchflow.cli.build", "Build the base or patched kernel for a target."),
    "boot": ("patchflow.cli.build", "Boot a built kernel in QEMU and run a smoke check."),
    "bench": ("patchflow.cli.build", "A/B stress-ng reclaim benchmark, base against patched."),
    "livepatch": ("patchflow.cli.livepatch", "Build, verify and bundle live-patch modules."),
    "gate": ("patchflow.cli.gate", "Run the whole pipeline for a series and give a CI verdict."),
    "report": ("patchflow.cli.gate", "Render HTML/Markdown reports and a mail draft."),
    "ci": ("patchflow.cli.gate", "Generate pipelines for existing CI engines."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, (mod, _) in COMMANDS.items() if _available(mod))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, _ = COMMANDS[cmd_name]
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                return None
            raise
        cmd = getattr(mod, cmd_name.replace("-", "_") + "_cmd", None)
        return cmd if isinstance(cmd, click.Command) else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, COMMANDS[n][1]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="patchflow")
@click.option("--workspace", "-w", type=click.Path(file_okay=False), envvar="PATCHFLOW_WORKSPACE",
              help="State, logs and worktrees [default: ./.patchflow].")
@click.option("--config-dir", "-C", type=click.Path(file_okay=False, exists=True),
              envvar="PATCHFLOW_CONFIG_DIR",
              help="Folder with series/ and targets/ [default: cwd or the patchflow checkout].")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug output.")
@click.pass_context
def cli(ctx: click.Context, workspace: str | None, config_dir: str | None, debug: bool) -> None:
    """Follow a lore patch series onto LTS kernels: fetch, backport, build,
    boot, benchmark, live-patch and gate."""
    ctx.obj = Ctx(workspace=workspace, config_dir=config_dir, debug=debug)
    ctx.call_on_close(ctx.obj.close)


def main(argv: list[str] | None = None) -> Any:
    from patchflow.errors import PatchflowError

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        return cli.main(args=args, prog_name="patchflow", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(2)
    except PatchflowError as exc:
        if debug:
            raise
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(2)
