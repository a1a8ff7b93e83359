"""The gate: one verdict for a series on every target.

Owns the input hashing that lets an unchanged stage be skipped, the run loop
(:func:`run_gate`) over the stages of :mod:`patchflow.gate.registry`, and the
three records every gate run leaves in its run directory (written through
:mod:`patchflow.gate.records`): ``metadata.json`` (atomically, at start and
end), ``results.json`` and ``junit.xml`` (one test case per target x stage).

Exit codes (the CI contract, see README "Exit codes")::

    0  every stage that ran passed (PASS, WARN, or SKIP)
    1  a real failure: conflict, build failure, oops, significant regression,
       livepatch refused or failing
    2  incomplete: a stage errored (missing tool, broken infrastructure), a
       needed stage never ran, or the run was interrupted (SIGINT, SIGTERM)

Stages whose inputs have not changed are not run again: each result is stored
with an ``input_hash`` (series content, branch head, target config and
fragments, the settings the stage reads, the tool version, and the hashes of
the stages it needs), and a later gate with the same hash reuses it.  That same
mechanism is how an interrupted gate resumes: run the same command again and
only the missing stages run.  A dry run records nothing: it says what would
run, what would be reused and what is missing.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchflow import __version__, typed
from patchflow.bench.ab import sample_rows
from patchflow.config import SeriesConfig, TargetConfig, WorkspaceConfig
from patchflow.context import StageContext, append_line
from patchflow.distro.stage import DISTRO_SKIP, FULL_BUILD_STAGES
from patchflow.errors import NotFound, PatchflowError, ToolNotFound
from patchflow.gate.records import (
    Entry,
    ResultsDoc,
    SeriesBlock,
    Verdict,
    iso,
    verdict_status,
    write_records,
)
from patchflow.gate.registry import Stage, default_stages, select
from patchflow.result import (
    ErrorDetails,
    StageResult,
    Status,
    details_from_json,
    exit_code,
    measure,
)
from patchflow.state import State
from patchflow.workspace import Workspace, atomic_write_json

#: statuses whose stored result is reused when the inputs did not change.
#: ERROR and SKIP are retried: an infrastructure failure may be transient, and
#: a skip only means that something upstream did not pass.
REUSABLE = frozenset({Status.PASS, Status.WARN, Status.FAIL})


@dataclass
class GateContext:
    """One gate run: what every cell's :class:`~patchflow.context.StageContext` is made from."""

    ws: Workspace
    state: State
    series: SeriesConfig
    revision: int | None
    run_id: str
    run_dir: Path
    settings: WorkspaceConfig
    dry_run: bool = False
    debug: bool = False
    #: results of this run so far, by (target, stage); None target = per-series stage
    results: dict[tuple[str | None, str], StageResult] = field(default_factory=dict)
    #: input hash of each (target, stage) computed in this run
    hashes: dict[tuple[str | None, str], str] = field(default_factory=dict)
    _targets: dict[str, TargetConfig] = field(default_factory=dict)

    def target(self, name: str) -> TargetConfig:
        if name not in self._targets:
            self._targets[name] = self.ws.config.target(name)
        return self._targets[name]

    def log_path(self, target: str | None, stage: str) -> Path:
        return self.run_dir / (target or "series") / f"{stage}.log"

    def stage_context(self, target: str | None, stage: str) -> StageContext:
        return StageContext.make(self.ws, self.state, log=self.log_path(target, stage),
                                 series=self.series, revision=self.revision,
                                 target=self.target(target) if target else None,
                                 run_dir=self.run_dir / (target or "series"),
                                 settings=self.settings)


# --------------------------------------------------------------------------
# input hashing


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def series_inputs(ctx: GateContext) -> dict[str, str]:
    """Content of the series version under test: the fetched mbox if any, else its msgids."""
    versions = [v for v in ctx.state.versions(ctx.series.name)
                if ctx.revision is None or v.revision == ctx.revision]
    if versions:
        v = versions[-1]
        return {"series": ctx.series.name, "revision": str(v.revision),
                "series_content": v.mbox_sha256 or v.fingerprint}
    msgids: tuple[str, ...] = ()
    if ctx.revision is not None:
        try:
            msgids = ctx.series.version(ctx.revision).msgids
        except NotFound:
            msgids = ()
    return {"series": ctx.series.name, "revision": str(ctx.revision),
            "series_content": ",".join(msgids)}


def branch_head(ctx: GateContext, tc: TargetConfig) -> str:
    """The commit the target branch points at; its configured source before it is prepared."""
    from patchflow.trees.repo import branch_head as head

    try:
        return head(ctx.ws, tc)
    except PatchflowError:
        pass  # no tree yet: the backport stage will say so with a proper result
    if tc.debian is not None:
        return f"{tc.debian.package}={tc.debian.releases[-1]}"
    if tc.git is None:
        assert tc.distro is not None
        return f"{tc.distro.provider}:{tc.distro.release}={tc.distro.version}"
    return f"{tc.git.remote}#{tc.git.branch}"


def target_inputs(ctx: GateContext, target: str) -> dict[str, str]:
    """The target config file, its kconfig fragments and the branch head."""
    tc = ctx.target(target)
    out = {"target": target, "target_config": _sha256_file(tc.path)}
    for frag in tc.kconfig:
        out[f"kconfig:{frag.name}"] = _sha256_file(frag)
    out["branch_head"] = branch_head(ctx, tc)
    return out


def stage_inputs(ctx: GateContext, stage: Stage, target: str | None) -> dict[str, str]:
    out = {"tool_version": __version__, **series_inputs(ctx)}
    if target is not None:
        out.update(target_inputs(ctx, target))
    for section in stage.settings:
        out[f"settings:{section}"] = json.dumps(typed.dump(getattr(ctx.settings, section)),
                                                sort_keys=True)
    return out


def input_hash(stage: Stage, inputs: Mapping[str, str], upstream: Mapping[str, str]) -> str:
    """sha256 over the stage name, its inputs and the hashes of the stages it needs.

    Chaining the upstream hashes means a new series version or branch head
    invalidates every stage downstream of the one that consumed it.
    """
    blob = json.dumps({"stage": stage.name, "inputs": dict(inputs), "upstream": dict(upstream)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# --------------------------------------------------------------------------
# the run


@dataclass(frozen=True)
class GateEntry:
    """One cell of the matrix as the gate saw it."""

    result: StageResult
    input_hash: str
    cached: bool
    result_id: int | None
    #: a dry run: the cell was planned, not run ("would run", "would reuse", "blocked")
    plan: str = ""


@dataclass
class GateRun:
    """The outcome of :func:`run_gate`."""

    run_id: str
    run_dir: Path
    entries: list[GateEntry]
    interrupted: bool = False
    dry_run: bool = False
    #: a dry run: what the plan lacks (nothing fetched, no tree prepared...)
    missing: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        code = exit_code(e.result.status for e in self.entries)
        return max(code, 2) if self.interrupted else code


def _blocked(stage: Stage, target: str | None, ctx: GateContext,
             stages_by_name: Mapping[str, Stage]) -> StageResult | None:
    """A SKIP (or ERROR) result if a needed stage did not pass, else None."""
    for need in stage.needs:
        key = (target if stages_by_name[need].per_target else None, need)
        prev = ctx.results.get(key)
        if prev is None and ctx.dry_run:
            continue  # a plan for one job of a split pipeline: earlier jobs record it
        if prev is None:
            # the needed stage was not selected in this invocation (a CI job
            # running one stage): it must have passed earlier with the same inputs
            return StageResult(stage=stage.name, status=Status.ERROR, target=target,
                               summary=f"needs {need}, which has no result for these inputs "
                                       f"(run the {need} stage first)")
        if ctx.dry_run and prev.summary.startswith("dry run:"):
            continue  # planned, not run: show the whole plan
        if prev.status is Status.SKIP and prev.summary == DISTRO_SKIP:
            continue  # a distro target has no full build: the live-patch stages run anyway
        if prev.status not in (Status.PASS, Status.WARN):
            return StageResult(stage=stage.name, status=Status.SKIP, target=target,
                               summary=f"skipped: {need} {prev.status.value}")
    return None


def _adopt_previous(ctx: GateContext, stage: Stage, target: str | None,
                    stages_by_name: Mapping[str, Stage]) -> None:
    """Load the stored result of a stage that is needed but not selected."""
    h = _hash_for(ctx, stage, target, stages_by_name)
    row = ctx.state.last_result(series=ctx.series.name, target=target, stage=stage.name,
                                input_hash=h)
    if row is not None:
        ctx.results[(target, stage.name)] = row_result(row)


def _hash_for(ctx: GateContext, stage: Stage, target: str | None,
              stages_by_name: Mapping[str, Stage]) -> str:
    key = (target, stage.name)
    if key not in ctx.hashes:
        upstream = {}
        for need in stage.needs:
            dep = stages_by_name[need]
            upstream[need] = _hash_for(ctx, dep, target if dep.per_target else None,
                                       stages_by_name)
        ctx.hashes[key] = input_hash(stage, stage_inputs(ctx, stage, target), upstream)
    return ctx.hashes[key]


def row_result(row: Mapping[str, Any]) -> StageResult:
    """A stored stage result, its details typed again (an unreadable one is an ERROR)."""
    try:
        details = details_from_json(row["details"])
    except typed.TypedError as exc:
        details = ErrorDetails("TypedError", f"stored details unreadable: {exc}")
    return StageResult(stage=row["stage"], status=Status(row["status"]), summary=row["summary"],
                       duration=float(row["duration"]), target=row["target"],
                       details=details, log=row["log"])


def _run_one(stage: Stage, ctx: GateContext, target: str | None) -> StageResult:
    """Run a stage function; an exception becomes an ERROR result with its traceback logged."""
    log = ctx.log_path(target, stage.name)
    with measure() as sw:
        try:
            res = stage.run(ctx.stage_context(target, stage.name))
        except PatchflowError as exc:
            append_line(log, f"error: {exc}")
            res = StageResult(stage=stage.name, status=Status.ERROR, target=target,
                              summary=str(exc).splitlines()[0],
                              details=ErrorDetails(type(exc).__name__, str(exc)))
        except Exception as exc:
            if ctx.debug:
                raise
            # a bug in one stage must not hide the verdict of every other cell
            append_line(log, traceback.format_exc())
            res = StageResult(stage=stage.name, status=Status.ERROR, target=target,
                              summary=f"internal error: {type(exc).__name__}: {exc}",
                              details=ErrorDetails(type(exc).__name__, str(exc)))
    # fill in what a stage function may leave out
    return StageResult(stage=stage.name, status=res.status, summary=res.summary,
                       duration=res.duration or sw.elapsed, target=target,
                       details=res.details,
                       log=res.log or (str(log) if log.exists() else None))


def run_gate(ctx: GateContext, stages: Sequence[Stage], targets: Sequence[str], *,
             selected: Sequence[str] | None = None, force: bool = False,
             on_result: Callable[[GateEntry], None] | None = None) -> GateRun:
    """Run *selected* stages (default: all) for each target, in pipeline order.

    Stages of one target run in order; targets run one after the other (a
    machine runs one kernel build at a time; fan-out is the CI engine's job,
    see :mod:`patchflow.cigen`).  Per-series stages run once, first.
    ``KeyboardInterrupt`` (SIGINT, or SIGTERM as the CLI turns it into one)
    ends the run as interrupted (exit 2); what finished is already recorded,
    so the same command resumes.
    """
    by_name = {s.name: s for s in stages}
    chosen = select(stages, selected)
    chosen_names = {s.name for s in chosen}
    run = GateRun(run_id=ctx.run_id, run_dir=ctx.run_dir, entries=[], dry_run=ctx.dry_run)
    cells: list[tuple[Stage, str | None]] = [(s, None) for s in chosen if not s.per_target]
    for t in targets:
        cells += [(s, t) for s in chosen if s.per_target]
    try:
        for stage, target in cells:
            for need in _closure(stage, by_name):
                dep = by_name[need]
                dt = target if dep.per_target else None
                if need not in chosen_names and (dt, need) not in ctx.results:
                    _adopt_previous(ctx, dep, dt, by_name)
            entry = _cell(ctx, stage, target, by_name, force)
            ctx.results[(target, stage.name)] = entry.result
            run.entries.append(entry)
            if on_result is not None:
                on_result(entry)
    except KeyboardInterrupt:
        run.interrupted = True
    return run


def _closure(stage: Stage, by_name: Mapping[str, Stage]) -> list[str]:
    """Every stage *stage* needs, directly or not, upstream first."""
    out: list[str] = []
    for need in stage.needs:
        for n in [*_closure(by_name[need], by_name), need]:
            if n not in out:
                out.append(n)
    return out


def _cell(ctx: GateContext, stage: Stage, target: str | None, by_name: Mapping[str, Stage],
          force: bool) -> GateEntry:
    try:
        h = _hash_for(ctx, stage, target, by_name)
    except PatchflowError as exc:
        res = StageResult(stage=stage.name, status=Status.ERROR, target=target,
                          summary=f"cannot compute inputs: {exc}")
        return GateEntry(res, "", False, None)
    blocked = _blocked(stage, target, ctx, by_name)
    if blocked is not None:
        return GateEntry(blocked, h, False, None, "blocked" if ctx.dry_run else "")
    if not force:
        row = ctx.state.last_result(series=ctx.series.name, target=target, stage=stage.name,
                                    input_hash=h)
        if row is not None and Status(row["status"]) in REUSABLE:
            return GateEntry(row_result(row), h, True, int(row["id"]),
                             "would reuse" if ctx.dry_run else "")
    if ctx.dry_run:
        skipped = (target is not None and ctx.target(target).distro is not None
                   and stage.name in FULL_BUILD_STAGES)
        res = StageResult(stage=stage.name, status=Status.SKIP, target=target,
                          summary=DISTRO_SKIP if skipped else f"dry run: would run {stage.name}")
        return GateEntry(res, h, False, None, "would skip" if skipped else "would run")
    res = _run_one(stage, ctx, target)
    rid = ctx.state.record(res, run_id=ctx.run_id, series=ctx.series.name,
                           revision=ctx.revision, input_hash=h, samples=sample_rows(res))
    return GateEntry(res, h, False, rid)


# --------------------------------------------------------------------------
# records


def tool_versions(tools: Iterable[str] = ("git", "b4", "make", "gcc", "qemu-system-x86_64",
                                          "stress-ng")) -> dict[str, str]:
    """First line of ``TOOL --version`` for each host tool, or "missing"."""
    from patchflow.errors import InfraError
    from patchflow.runner import run

    out = {"patchflow": __version__, "python": platform.python_version()}
    for tool in tools:
        try:
            done = run([tool, "--version"], check=False, timeout=20)
            line = (done.stdout or done.stderr).strip().splitlines()
            out[tool] = line[0] if line else f"exit {done.returncode}"
        except ToolNotFound:
            out[tool] = "missing"
        except InfraError as exc:
            out[tool] = f"unknown ({exc})"
    return out


def metadata(ctx: GateContext, run: GateRun | None, *, targets: Sequence[str],
             stages: Sequence[str], started: float, reproduce: str,
             versions: Mapping[str, str]) -> dict[str, Any]:
    """The metadata.json document; *run* is None at start, set at the end."""
    doc: dict[str, Any] = {
        "schema": "patchflow.metadata/1",
        "run_id": ctx.run_id,
        "series": ctx.series.name,
        "revision": ctx.revision,
        "targets": list(targets),
        "stages": list(stages),
        "started": iso(started),
        "reproduce": reproduce,
        "tool_versions": dict(versions),
        "status": "running",
    }
    if run is not None:
        finished = time.time()
        doc["finished"] = iso(finished)
        doc["duration"] = round(finished - started, 3)
        doc["exit_code"] = run.exit_code
        doc["status"] = verdict_status(run.exit_code, run.interrupted)
        doc["stage_durations"] = [
            {"target": e.result.target, "stage": e.result.stage,
             "status": e.result.status.value, "duration": round(e.result.duration, 3),
             "cached": e.cached} for e in run.entries]
    return doc


def series_block(ctx: GateContext) -> SeriesBlock:
    """What the report and the mail need to know about the series version."""
    from patchflow.lore.series import stored_recipients

    s = ctx.series
    versions = [v for v in ctx.state.versions(s.name)
                if ctx.revision is None or v.revision == ctx.revision]
    if versions:
        v = versions[-1]
        return SeriesBlock(name=s.name, title=s.title, revision=ctx.revision, author=v.author
                           or s.author, list_address=s.list_address, msgid=v.msgid,
                           subject=v.subject, cover=v.cover, posted=v.posted,
                           patches=len(ctx.state.patches(v.id)),
                           cc=stored_recipients(Path(v.mbox_path)).everyone, claim=s.claim)
    msgid = ""
    if ctx.revision is not None:
        try:
            msgid = s.version(ctx.revision).msgids[-1]
        except NotFound:
            msgid = ""
    return SeriesBlock(name=s.name, title=s.title, revision=ctx.revision, author=s.author,
                       list_address=s.list_address, msgid=msgid, claim=s.claim)


def results_doc(ctx: GateContext, run: GateRun, *, targets: Sequence[str],
                stages: Sequence[str], reproduce: str, started: float,
                finished: float) -> ResultsDoc:
    code = run.exit_code
    return ResultsDoc(
        run_id=ctx.run_id, tool_version=__version__, series=series_block(ctx),
        targets=tuple(targets), stages=tuple(stages), started=iso(started),
        finished=iso(finished), reproduce=reproduce,
        verdict=Verdict(code, verdict_status(code, run.interrupted)),
        entries=tuple(Entry(e.result, e.input_hash, e.cached, ctx.revision)
                      for e in run.entries))


def _missing(ws: Workspace, state: State, series: SeriesConfig, targets: Sequence[str]
             ) -> list[str]:
    """What a dry run's plan would have to make first."""
    from patchflow.kernel.artefacts import locate
    from patchflow.trees.repo import open_tree

    out = []
    if not state.versions(series.name):
        out.append(f"series {series.name} was never fetched (check-newer fetches it)")
    for t in targets:
        distro = ws.config.target(t).distro
        if distro is not None:
            stamp = ws.cache / "distro" / distro.provider / distro.release / "build" / \
                ".patchflow-prepared"
            if not stamp.is_file():
                out.append(f"{t}: distribution kernel not fetched and prepared "
                           "(livepatch-build does it, or `patchflow distro prepare`)")
            continue
        try:
            open_tree(ws, t)
        except NotFound:
            out.append(f"{t}: no tree prepared (the backport stage prepares it)")
        for variant in ("base", "patched"):
            try:
                locate(ws.cache, t, variant)
            except NotFound:
                out.append(f"{t}: no {variant} kernel built (build-{variant} builds it)")
    return out


def execute(ws: Workspace, state: State, series: SeriesConfig, *, targets: Sequence[str],
            revision: int | None = None, stages: Sequence[Stage] | None = None,
            selected: Sequence[str] | None = None, dry_run: bool = False, force: bool = False,
            out_dir: Path | None = None, reproduce: str = "", debug: bool = False,
            versions: Mapping[str, str] | None = None,
            settings: WorkspaceConfig | None = None,
            on_result: Callable[[GateEntry], None] | None = None) -> GateRun:
    """A whole gate run with its records: the library side of ``patchflow gate``.

    ``metadata.json`` is written before the first stage and again after the
    last, so a killed run still leaves a record saying it was running; an
    interrupted one (SIGINT/SIGTERM) leaves its partial results and JUnit file.
    A dry run writes and records nothing.
    """
    stage_list = list(stages if stages is not None else default_stages())
    chosen = [s.name for s in select(stage_list, selected)]
    for t in targets:
        ws.config.target(t)  # unknown target: a user error before anything runs
    if revision is None:
        known = [v.revision for v in state.versions(series.name)]
        latest = series.latest
        revision = max(known) if known else (latest.revision if latest else None)
    started = time.time()
    if dry_run:
        ctx = GateContext(ws=ws, state=state, series=series, revision=revision, run_id="dry-run",
                          run_dir=out_dir or ws.runs_dir / "dry-run", settings=settings or
                          ws.settings, dry_run=True, debug=debug)
        run = run_gate(ctx, stage_list, targets, selected=selected, force=force,
                       on_result=on_result)
        run.missing = _missing(ws, state, series, targets)
        return run
    run_id = state.start_run("gate", reproduce, None)
    run_dir = out_dir if out_dir is not None else ws.runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = GateContext(ws=ws, state=state, series=series, revision=revision, run_id=run_id,
                      run_dir=run_dir, settings=settings or ws.settings, debug=debug)
    vers: dict[str, str] = dict(versions) if versions is not None else {}

    def meta(run: GateRun | None) -> dict[str, Any]:
        return metadata(ctx, run, targets=targets, stages=chosen, started=started,
                        reproduce=reproduce, versions=vers)

    run = GateRun(run_id=run_id, run_dir=run_dir, entries=[], interrupted=True)
    try:
        # from start_run on, an interrupt (even during the tool probes) leaves the records
        # (tests/integration/test_signals.py)
        if versions is None:
            vers.update(tool_versions())
        atomic_write_json(run_dir / "metadata.json", meta(None))
        run = run_gate(ctx, stage_list, targets, selected=selected, force=force,
                       on_result=on_result)
    except KeyboardInterrupt:
        pass  # run stays interrupted=True with no entries; recorded below
    finally:
        # also on an exception escaping (--debug): leave the end record behind
        write_records(run_dir, results_doc(ctx, run, targets=targets, stages=chosen,
                                           reproduce=reproduce, started=started,
                                           finished=time.time()))
        atomic_write_json(run_dir / "metadata.json", meta(run))
        state.finish_run(run_id, verdict_status(run.exit_code, run.interrupted))
    return run
