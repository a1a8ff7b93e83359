"""Results: the frozen record of what a stage did.

A stage never raises for an expected failure; it returns a :class:`StageResult`
whose :class:`Status` says what happened.  :func:`exit_code` folds statuses
into the CI exit-code contract (0 pass, 1 real failure, 2 incomplete).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


class Status(enum.Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"

    @property
    def exit_code(self) -> int:
        if self in (Status.PASS, Status.WARN, Status.SKIP):
            return 0
        if self is Status.FAIL:
            return 1
        return 2


@dataclass(frozen=True)
class StageResult:
    """What one stage did for one target."""

    stage: str
    status: Status
    summary: str
    duration: float = 0.0
    target: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    log: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "target": self.target,
            "status": self.status.value,
            "summary": self.summary,
            "duration": round(self.duration, 3),
            "details": self.details,
            "log": self.log,
        }


def exit_code(statuses: Iterable[Status]) -> int:
    """Combine statuses with max(): any ERROR -> 2, else any FAIL -> 1, else 0."""
    return max((s.exit_code for s in statuses), default=0)


class Stopwatch:
    """Measures a duration; ``with measure() as sw: ...; sw.elapsed``."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.end: float | None = None

    @property
    def elapsed(self) -> float:
        return (self.end if self.end is not None else time.monotonic()) - self.start


@contextmanager
def measure() -> Iterator[Stopwatch]:
    sw = Stopwatch()
    try:
        yield sw
    finally:
        sw.end = time.monotonic()
