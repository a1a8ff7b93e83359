"""What every stage function gets: the workspace, the state, the series and target, the knobs.

A stage's entry point (``patchflow/<stage>/stage.py``) takes one
:class:`StageContext` and returns a :class:`~patchflow.result.StageResult`.
The CLI command of that stage and the gate build the context the same way
(:meth:`StageContext.make`), so both run exactly the same code: the CLI only
parses options (folded into :attr:`StageContext.settings`) and renders.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from patchflow.config import SeriesConfig, TargetConfig, WorkspaceConfig
from patchflow.errors import UserError
from patchflow.result import Progress, quiet
from patchflow.state import State
from patchflow.workspace import Workspace


@dataclass(frozen=True)
class StageContext:
    """One stage's inputs.  ``series`` and ``target`` are None where a stage needs neither."""

    ws: Workspace
    state: State
    settings: WorkspaceConfig
    log: Path
    series: SeriesConfig | None = None
    revision: int | None = None
    target: TargetConfig | None = None
    #: where the stage may keep files of this run (console logs, bench runs)
    run_dir: Path | None = None
    progress: Progress = field(default=quiet, compare=False)

    @classmethod
    def make(cls, ws: Workspace, state: State, *, log: Path, series: SeriesConfig | None = None,
             revision: int | None = None, target: TargetConfig | None = None,
             run_dir: Path | None = None, settings: WorkspaceConfig | None = None,
             progress: Progress = quiet) -> StageContext:
        return cls(ws=ws, state=state, settings=settings or ws.settings, log=log, series=series,
                   revision=revision, target=target, run_dir=run_dir or log.parent,
                   progress=progress)

    def with_target(self, target: TargetConfig, log: Path) -> StageContext:
        return dataclasses.replace(self, target=target, log=log, run_dir=log.parent)

    def need_target(self, stage: str) -> TargetConfig:
        if self.target is None:
            raise UserError(f"the {stage} stage needs a target (--target)")
        return self.target

    def need_series(self, stage: str) -> SeriesConfig:
        if self.series is None:
            raise UserError(f"the {stage} stage needs a series")
        return self.series

    def say(self, msg: str) -> None:
        """One line into the stage's log, and to the caller's progress display."""
        append_line(self.log, msg)
        self.progress(msg)

    @property
    def logger(self) -> Callable[[str], None]:
        return self.say


def append_line(log: Path, line: str) -> None:
    """The one log-append helper: one line, created with its folder if needed."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(line.rstrip() + "\n")
