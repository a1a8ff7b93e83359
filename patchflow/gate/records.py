"""The records a gate run leaves: ``results.json``, ``junit.xml`` and ``metadata.json``.

``results.json`` is :class:`ResultsDoc` (schema :data:`RESULTS_SCHEMA`), written
and read here only, so the gate, a merge of CI jobs' files and the report
agree field by field: every stage's ``details`` is its typed dataclass
(:mod:`patchflow.result`), and a file that does not fit is refused with the
field at fault (:func:`load_results`).  Times are ISO 8601 in UTC.
"""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from patchflow import typed
from patchflow.config import Claim
from patchflow.errors import UserError
from patchflow.result import StageResult, Status, exit_code
from patchflow.workspace import atomic_write, atomic_write_json

#: version tag of results.json; bump when a field changes meaning
#: (2: typed details with a "kind", samples inside the bench details, ISO times)
RESULTS_SCHEMA = "patchflow.results/2"


def iso(ts: float) -> str:
    """Unix seconds as ISO 8601 UTC (``2026-12-02T05:26:17Z``)."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def verdict_status(code: int, interrupted: bool = False) -> str:
    """The one mapping of an exit code to the word a run is recorded with."""
    if interrupted:
        return "interrupted"
    return {0: "pass", 1: "fail"}.get(code, "incomplete")


@dataclass(frozen=True)
class SeriesBlock:
    """What the report and the mail need to know about the series version."""

    __renames__: ClassVar[dict[str, str]] = {"list": "list_address"}
    name: str
    title: str = ""
    revision: int | None = None
    author: str = ""
    list_address: str = ""
    msgid: str = ""
    subject: str = ""
    cover: str = ""
    posted: str = ""
    patches: int = 0
    cc: tuple[str, ...] = ()
    #: the authors' own published figure (``[claim]`` of the series file)
    claim: Claim | None = None


@dataclass(frozen=True)
class Verdict:
    exit_code: int
    status: str  # pass | fail | incomplete | interrupted


@dataclass(frozen=True)
class Entry:
    """One cell of the matrix: a stage's result for one target, and how it was obtained."""

    result: StageResult
    input_hash: str = ""
    #: reused from an earlier run with the same inputs
    cached: bool = False
    revision: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {**self.result.to_json(), "input_hash": self.input_hash, "cached": self.cached,
                "revision": self.revision}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], key: str) -> Entry:
        rest = {k: v for k, v in d.items() if k not in ("input_hash", "cached", "revision")}
        return cls(StageResult.from_json(rest, key),
                   typed.convert(d.get("input_hash", ""), str, f"{key}.input_hash"),
                   typed.convert(d.get("cached", False), bool, f"{key}.cached"),
                   typed.convert(d.get("revision"), int | None, f"{key}.revision"))


@dataclass(frozen=True)
class RunHead:
    """Everything of a results document but its entries."""

    run_id: str
    tool_version: str
    series: SeriesBlock
    targets: tuple[str, ...]
    stages: tuple[str, ...]
    started: str
    finished: str
    reproduce: str
    verdict: Verdict


@dataclass(frozen=True)
class ResultsDoc(RunHead):
    entries: tuple[Entry, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"schema": RESULTS_SCHEMA, "run_id": self.run_id,
                "tool_version": self.tool_version, "series": typed.dump(self.series),
                "targets": list(self.targets), "stages": list(self.stages),
                "started": self.started, "finished": self.finished,
                "reproduce": self.reproduce, "verdict": typed.dump(self.verdict),
                "results": [e.to_json() for e in self.entries]}

    @classmethod
    def from_json(cls, d: Any, where: str) -> ResultsDoc:
        if not isinstance(d, Mapping):
            raise UserError(f"{where}: not a results file (not a JSON object)")
        if d.get("schema") != RESULTS_SCHEMA:
            raise UserError(f"{where}: schema {d.get('schema')!r}, expected {RESULTS_SCHEMA}")
        import patchflow.gate.registry  # noqa: F401 - every stage's details kind is known

        try:
            head = typed.load(RunHead, {k: v for k, v in d.items()
                                        if k not in ("schema", "results")})
            results = d.get("results")
            if not isinstance(results, list):
                raise typed.TypedError("results", "expected a list")
            entries = tuple(Entry.from_json(r, f"results[{i}]") for i, r in enumerate(results))
        except typed.TypedError as exc:
            raise UserError(f"{where}: {exc}") from None
        return cls(head.run_id, head.tool_version, head.series, head.targets, head.stages,
                   head.started, head.finished, head.reproduce, head.verdict, entries)

    def of_stage(self, stage: str) -> list[Entry]:
        return sorted((e for e in self.entries if e.result.stage == stage),
                      key=lambda e: (str(e.revision), str(e.result.target)))


def load_results(paths: Iterable[Path]) -> list[tuple[Path, ResultsDoc]]:
    """Read results.json files; a directory contributes every results.json below it."""
    out: list[tuple[Path, ResultsDoc]] = []
    for p in paths:
        files = sorted(p.rglob("results.json")) if p.is_dir() else [p]
        if not files:
            raise UserError(f"no results.json under {p}")
        for f in files:
            try:
                raw = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise UserError(f"{f}: not a readable results file: {exc}") from None
            out.append((f, ResultsDoc.from_json(raw, str(f))))
    return out


def merge(docs: Sequence[tuple[Path, ResultsDoc]], base_dir: Path | None = None) -> ResultsDoc:
    """One results document from several (one per CI job): one matrix, one verdict.

    A cell (revision, target, stage) reported by several files keeps the
    result of the file that finished last; a job that ran the stage for real
    beats one that only reused it.  Log paths are rewritten relative to
    *base_dir* (where the merged file will live) so the report links work.
    Files of different series are refused: one report is about one series.
    """
    import os

    if not docs:
        raise UserError("nothing to merge")
    names = sorted({d.series.name for _, d in docs})
    if len(names) > 1:
        raise UserError(f"the results are of different series ({', '.join(names)}): merge "
                        "each series' files into its own report")
    cells: dict[tuple[Any, Any, str], tuple[tuple[bool, str], Entry]] = {}
    targets: list[str] = []
    stages: list[str] = []
    interrupted = False
    ordered = sorted(docs, key=lambda pd: pd[1].finished)
    for path, doc in ordered:
        interrupted |= doc.verdict.status == "interrupted"
        targets += [t for t in doc.targets if t not in targets]
        for e in doc.entries:
            e = replace(e, revision=e.revision if e.revision is not None else doc.series.revision)
            log = e.result.log
            if log and base_dir is not None and not os.path.isabs(log):
                e = replace(e, result=replace(e.result, log=os.path.relpath(path.parent / log,
                                                                            base_dir)))
            key = (e.revision, e.result.target, e.result.stage)
            rank = (not e.cached, doc.finished)
            if key not in cells or rank >= cells[key][0]:
                cells[key] = (rank, e)
            if e.result.stage not in stages:
                stages.append(e.result.stage)
    last = ordered[-1][1]
    entries = tuple(c[1] for c in cells.values())
    code = max(exit_code(e.result.status for e in entries), 2 if interrupted else 0)
    from patchflow.gate.registry import stage_key

    return ResultsDoc(
        run_id="+".join(sorted({d.run_id for _, d in docs})), tool_version=last.tool_version,
        series=last.series, targets=tuple(targets), stages=tuple(sorted(stages, key=stage_key)),
        started=min(d.started for _, d in docs), finished=max(d.finished for _, d in docs),
        reproduce=last.reproduce, verdict=Verdict(code, verdict_status(code, interrupted)),
        entries=entries)


def junit_xml(doc: ResultsDoc) -> str:
    """JUnit XML: one testsuite per target, one testcase per stage, failure text inside."""
    suite_name = f"patchflow.{doc.series.name}"
    root = ET.Element("testsuites", name=suite_name)
    by_target: dict[str, list[StageResult]] = {}
    for e in doc.entries:
        by_target.setdefault(e.result.target or "series", []).append(e.result)
    for target, rows in by_target.items():
        suite = ET.SubElement(root, "testsuite", name=target, tests=str(len(rows)),
                              failures=str(sum(r.status is Status.FAIL for r in rows)),
                              errors=str(sum(r.status is Status.ERROR for r in rows)),
                              skipped=str(sum(r.status is Status.SKIP for r in rows)),
                              time=f"{sum(r.duration for r in rows):.3f}")
        for r in rows:
            case = ET.SubElement(suite, "testcase", classname=f"{suite_name}.{target}",
                                 name=r.stage, time=f"{r.duration:.3f}")
            text = r.summary + (f"\nlog: {r.log}" if r.log else "")
            if r.status is Status.FAIL:
                ET.SubElement(case, "failure", message=r.summary).text = text
            elif r.status is Status.ERROR:
                ET.SubElement(case, "error", message=r.summary).text = text
            elif r.status is Status.SKIP:
                ET.SubElement(case, "skipped", message=r.summary)
            else:
                ET.SubElement(case, "system-out").text = text
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_records(run_dir: Path, doc: ResultsDoc) -> None:
    atomic_write_json(run_dir / "results.json", doc.to_json())
    atomic_write(run_dir / "junit.xml", junit_xml(doc))
