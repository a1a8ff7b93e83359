"""Results: the frozen record of what a stage did.

A stage never raises for an expected failure; it returns a :class:`StageResult`
whose :class:`Status` says what happened and whose ``details`` is the stage's
own typed dataclass (a subclass of :class:`Details`, defined next to the
stage).  Details carry their ``kind`` into JSON, so a reader (the gate's
records, the report) turns them back into the same type with
:func:`details_from_json` and mypy sees every field a reader uses.
:func:`exit_code` folds statuses into the CI exit-code contract
(0 pass, 1 real failure, 2 incomplete).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from patchflow import typed

#: what long-running library calls report progress through (one line per call)
Progress = Callable[[str], None]


def quiet(_msg: str) -> None:
    """A :data:`Progress` that says nothing."""


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


D = TypeVar("D", bound="Details")

#: kind -> Details subclass, filled by each subclass's definition
_KINDS: dict[str, type[Details]] = {}


@dataclass(frozen=True)
class Details:
    """Base of every stage's typed details.

    A subclass sets ``kind`` (the tag written into JSON) and is a frozen
    dataclass whose fields :mod:`patchflow.typed` can convert.
    """

    kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            if cls.kind in _KINDS and _KINDS[cls.kind].__qualname__ != cls.__qualname__:
                raise TypeError(f"details kind {cls.kind!r} declared twice")
            _KINDS[cls.kind] = cls

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, **typed.dump(self)}
        return out


@dataclass(frozen=True)
class ErrorDetails(Details):
    """A stage that raised: the error class and its whole message."""

    kind: ClassVar[str] = "error"
    error: str
    message: str


def details_kinds() -> Mapping[str, type[Details]]:
    return dict(_KINDS)


def details_from_json(data: Mapping[str, Any] | None, key: str = "details") -> Details | None:
    """The typed details a :meth:`Details.to_json` wrote (None for none).

    Raises :class:`patchflow.typed.TypedError` for an unknown kind or a field
    that does not fit: a record written by another patchflow, or edited.
    """
    if data is None or data == {}:
        return None
    if not isinstance(data, Mapping):
        raise typed.TypedError(key, "expected a table")
    kind = data.get("kind")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise typed.TypedError(f"{key}.kind", f"unknown details kind {kind!r}")
    return typed.load(cls, {k: v for k, v in data.items() if k != "kind"}, prefix=f"{key}.")


@dataclass(frozen=True)
class StageResult:
    """What one stage did for one target."""

    stage: str
    status: Status
    summary: str
    duration: float = 0.0
    target: str | None = None
    details: Details | None = None
    log: str | None = None

    def detail(self, cls: type[D]) -> D | None:
        """The details if they are of type *cls* (a stage that errored has other ones)."""
        return self.details if isinstance(self.details, cls) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "target": self.target,
            "status": self.status.value,
            "summary": self.summary,
            "duration": round(self.duration, 3),
            "details": self.details.to_json() if self.details is not None else None,
            "log": self.log,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], key: str = "result") -> StageResult:
        """The inverse of :meth:`to_json`; :class:`~patchflow.typed.TypedError` on bad data."""
        if not isinstance(data, Mapping):
            raise typed.TypedError(key, "expected a table")
        try:
            return cls(stage=typed.convert(data["stage"], str, f"{key}.stage"),
                       status=typed.convert(data["status"], Status, f"{key}.status"),
                       summary=typed.convert(data["summary"], str, f"{key}.summary"),
                       duration=typed.convert(data.get("duration", 0.0), float,
                                              f"{key}.duration"),
                       target=typed.convert(data.get("target"), str | None, f"{key}.target"),
                       details=details_from_json(data.get("details"), f"{key}.details"),
                       log=typed.convert(data.get("log"), str | None, f"{key}.log"))
        except KeyError as exc:
            raise typed.TypedError(f"{key}.{exc.args[0]}", "missing required key") from None


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
