"""The one exception hierarchy of patchflow.

Expected outcomes (a conflict, a build failure, an oops, a boot timeout) are
*results* (see :mod:`patchflow.result`), never exceptions.  Exceptions are for
bad input (:class:`UserError`) and broken infrastructure (:class:`InfraError`);
both end a run as incomplete, exit code 2.  The CLI catches :class:`PatchflowError` exactly once.
"""

from __future__ import annotations

from pathlib import Path


class PatchflowError(Exception):
    """Base of everything patchflow raises on purpose."""

    #: exit code the CLI uses for this error (see README "Exit codes")
    exit_code = 2


class UserError(PatchflowError):
    """The user asked for something that cannot be done as asked."""


class InfraError(PatchflowError):
    """A tool, a service or the machine failed underneath us."""


class ConfigError(UserError):
    """A config file is invalid; names the file and the key at fault."""

    def __init__(self, path: Path | str, key: str | None, message: str) -> None:
        self.path = Path(path)
        self.key = key
        self.message = message
        where = f"{self.path}: {key}" if key else str(self.path)
        super().__init__(f"{where}: {message}")


class NotFound(UserError):
    """A named thing (series, version, target, run, bundle) does not exist."""


class ToolNotFound(InfraError):
    """A host tool is missing; names the Debian (or PyPI) package to install."""

    def __init__(self, tool: str, package: str | None) -> None:
        from patchflow.tools import install_hint

        self.tool = tool
        self.package = package
        super().__init__(f"required tool not found: {tool}{install_hint(package)}")


class CommandFailed(InfraError):
    """A subprocess exited non-zero where that was not an expected result."""

    def __init__(self, argv: list[str], returncode: int, output_tail: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.output_tail = output_tail
        cmd = " ".join(argv[:6]) + (" ..." if len(argv) > 6 else "")
        tail = ("\n" + output_tail.rstrip()) if output_tail.strip() else ""
        super().__init__(f"command failed with exit code {returncode}: {cmd}{tail}")


class CommandTimeout(InfraError):
    """A subprocess ran past its timeout and was killed."""

    def __init__(self, argv: list[str], timeout: float, output_tail: str) -> None:
        self.argv = argv
        self.timeout = timeout
        self.output_tail = output_tail
        super().__init__(f"command timed out after {timeout:.0f}s: {' '.join(argv[:6])}")


class MirrorError(InfraError):
    """The lore mirror could not be reached or answered garbage."""


class SeriesError(UserError):
    """A fetched thread is not a usable patch series (missing patch, bad diff...)."""


class StateError(InfraError):
    """The state database is unusable (locked too long, corrupt, wrong schema)."""


class WorkspaceError(UserError):
    """A worktree or workspace is dirty, locked or otherwise not as expected."""
