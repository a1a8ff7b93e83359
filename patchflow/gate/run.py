"""The gate: one verdict for a series on every target.

Owns the stage registry (:data:`STAGES`, an ordered list of :class:`Stage`),
the input hashing that lets an unchanged stage be skipped, the run loop
(:func:`run_gate`), and the three records every gate run leaves in its run
directory: ``metadata.json`` (written atomically at start and end),
``results.json`` (schema :data:`RESULTS_SCHEMA`, documented in
:mod:`patchflow.report.view`) and ``junit.xml`` (one test case per target x stage).

Exit codes (the CI contract, see README "Exit codes")::

    0  every stage that ran passed (PASS, WARN, or SKIP)
    1  a real failure: conflict, build failure, oops, significant regression,
       livepatch refused or failing
    2  incomplete: a stage errored (missing tool, broken infrastructure, a
       stage that is not available), a needed stage never ran, or the run
       was interrupted

Stages whose inputs have not changed are not run again: each result is stored
with an ``input_hash`` (series content, branch head, target config and
fragments, tool version, and the hashes of the stages it needs), and a later
gate with the same hash reuses it.  That same mechanism is how an interrupted
gate resumes: run the same command again and only the missing stages run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import platform
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchflow import __version__
from patchflow.config import SeriesConfig, TargetConfig
from patchflow.errors import NotFound, PatchflowError, ToolNotFound, UserError
from patchflow.result import StageResult, Status, exit_code, measure
from patchflow.state import State
from patchflow.workspace import Workspace, atomic_write, atomic_write_json

#: version tag of results.json; bump when a field changes meaning
RESULTS_SCHEMA = "patchflow.results/1"

#: statuses whose stored result is reused when the inputs did not change.
#: ERROR and SKIP are retried: an infrastructure failure may be transient, and
#: a skip only means that something upstream did not pass.
REUSABLE = frozenset({Status.PASS, Status.WARN, Status.FAIL})


# --------------------------------------------------------------------------
# context and stages


@dataclass
class GateContext:
    """What a stage function gets besides its target: the run it belongs to."""

    ws: Workspace
    state: State
    series: SeriesConfig
    revision: int | None
    run_id: str
    run_dir: Path
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


StageFn = Callable[[GateContext, str | None], StageResult]
InputsFn = Callable[[GateContext, str | None], Mapping[str, str]]


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline, run once per target (or once per series)."""

    name: str
    run: StageFn
    inputs: InputsFn
    #: stages that must have passed (PASS or WARN) before this one runs
    needs: tuple[str, ...] = ()
    per_target: bool = True
    description: str = ""


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


def target_inputs(ctx: GateContext, target: str) -> dict[str, str]:
    """The target config file, its kconfig fragments and the branch head."""
    tc = ctx.target(target)
    out = {"target": target, "target_config": _sha256_file(tc.path)}
    for frag in tc.kconfig:
        out[f"kconfig:{frag.name}"] = _sha256_file(frag)
    out["branch_head"] = branch_head(ctx, tc)
    return out


def branch_head(ctx: GateContext, tc: TargetConfig) -> str:
    """The commit the target branch points at, from the tree module when it is wired.

    Falls back to the newest configured Debian release (or the branch name),
    which is what the head is derived from for ``provider = "debian"`` targets.
    """
    fn = _lookup("patchflow.trees.repo", "branch_head")
    if fn is not None:
        try:
            return str(fn(ctx.ws, tc))
        except PatchflowError:
            pass  # no tree yet: the backport stage will say so with a proper result
    if tc.debian is not None:
        return f"{tc.debian.package}={tc.debian.releases[-1]}"
    return f"{tc.git.remote}#{tc.git.branch}"


def default_inputs(ctx: GateContext, target: str | None) -> dict[str, str]:
    out = {"tool_version": __version__, **series_inputs(ctx)}
    if target is not None:
        out.update(target_inputs(ctx, target))
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
# adapters to the stage modules


def _lookup(module: str, attr: str) -> Callable[..., Any] | None:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise
    fn = getattr(mod, attr, None)
    return fn if callable(fn) else None


def _unavailable(stage: str, target: str | None, what: str) -> StageResult:
    return StageResult(stage=stage, status=Status.ERROR, target=target,
                       summary=f"stage {stage} not available: {what} is missing",
                       details={"missing": what})


def adapter(stage: str, module: str, attr: str, **extra: Any) -> StageFn:
    """A stage function that calls ``module.attr``, or says that it is missing.

    Every stage module is called the same way (the adapter contract)::

        fn(ws, state, series, revision, target, *, log, **extra)
            -> StageResult | tuple[StageResult, list[(variant, rep, metric, value)]]

    with ``target`` a TargetConfig (None for per-series stages) and ``log``
    the file the stage should append its output to.  A module or function
    that is not there yet gives an ERROR result (exit 2, incomplete) instead of
    an ImportError, so a gate on a partial install still reports every other
    stage.
    """

    def run(ctx: GateContext, target: str | None) -> StageResult:
        fn = _lookup(module, attr)
        if fn is None:
            return _unavailable(stage, target, f"{module}.{attr}")
        tc = ctx.target(target) if target is not None else None
        out = fn(ctx.ws, ctx.state, ctx.series, ctx.revision, tc,
                 log=ctx.log_path(target, stage), **extra)
        if isinstance(out, tuple):  # (result, samples) from the benchmark
            return _with_samples(out[0], out[1])
        if not isinstance(out, StageResult):
            raise TypeError(f"{module}.{attr} returned {type(out).__name__}, not StageResult")
        return out

    run.__name__ = f"{stage.replace('-', '_')}_adapter"
    return run


def _with_samples(res: StageResult, samples: Iterable[Sequence[Any]]) -> StageResult:
    d = dict(res.details)
    d["samples"] = [list(s) for s in samples]
    return StageResult(stage=res.stage, status=res.status, summary=res.summary,
                       duration=res.duration, target=res.target, details=d, log=res.log)


#: stage name -> (module, function, extra keyword arguments) of the adapter contract
ADAPTERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "check-newer": ("patchflow.lore.series", "gate_check_newer", {}),
    "backport": ("patchflow.backport.engine", "gate_backport", {}),
    "build-base": ("patchflow.pipeline", "gate_build", {"variant": "base"}),
    "build-patched": ("patchflow.pipeline", "gate_build", {"variant": "patched"}),
    "boot": ("patchflow.pipeline", "gate_boot", {}),
    "bench": ("patchflow.pipeline", "gate_bench", {}),
    "livepatch-build": ("patchflow.pipeline", "gate_livepatch_build", {}),
    "livepatch-verify": ("patchflow.pipeline", "gate_livepatch_verify", {}),
}


def _stage(name: str, needs: tuple[str, ...], description: str,
           per_target: bool = True) -> Stage:
    module, attr, extra = ADAPTERS[name]
    return Stage(name, adapter(name, module, attr, **extra), default_inputs, needs=needs,
                 per_target=per_target, description=description)


def default_stages() -> list[Stage]:
    """The pipeline of issue 7, in order, wired to the real stage modules."""
    return [
        _stage("check-newer", (), "look for a newer posting of the series", per_target=False),
        _stage("backport", (), "apply the series onto the target branch"),
        _stage("build-base", (), "build the unpatched kernel"),
        _stage("build-patched", ("backport",), "build the patched kernel"),
        _stage("boot", ("build-patched",), "boot the patched kernel in QEMU, check the console"),
        _stage("bench", ("build-base", "boot"),
               "A/B stress-ng reclaim benchmark, base against patched"),
        _stage("livepatch-build", ("backport", "build-base"),
               "generate and build the livepatch module"),
        _stage("livepatch-verify", ("livepatch-build",),
               "load the livepatch in a guest and verify the transition"),
    ]


# --------------------------------------------------------------------------
# the run


@dataclass(frozen=True)
class GateEntry:
    """One cell of the matrix as the gate saw it."""

    result: StageResult
    input_hash: str
    cached: bool
    result_id: int | None
    samples: tuple[tuple[str, int, str, float], ...] = ()

    def to_json(self) -> dict[str, Any]:
        d = self.result.to_json()
        d["details"] = {k: v for k, v in self.result.details.items() if k != "samples"}
        d["input_hash"] = self.input_hash
        d["cached"] = self.cached
        d["samples"] = [{"variant": v, "rep": r, "metric": m, "value": x}
                        for v, r, m, x in self.samples]
        return d


@dataclass
class GateRun:
    """The outcome of :func:`run_gate`."""

    run_id: str
    run_dir: Path
    entries: list[GateEntry]
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        code = exit_code(e.result.status for e in self.entries)
        return max(code, 2) if self.interrupted else code


def select_stages(stages: Sequence[Stage], names: Sequence[str] | None) -> list[Stage]:
    if not names:
        return list(stages)
    known = {s.name for s in stages}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"unknown stage(s) {', '.join(unknown)} (known: {', '.join(known)})")
    return [s for s in stages if s.name in names]


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
        if ctx.dry_run and prev.details.get("dry_run"):
            continue  # planned, not run: show the whole plan
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
        ctx.results[(target, stage.name)] = _row_result(row)


def _hash_for(ctx: GateContext, stage: Stage, target: str | None,
              stages_by_name: Mapping[str, Stage]) -> str:
    key = (target, stage.name)
    if key not in ctx.hashes:
        upstream = {}
        for need in stage.needs:
            dep = stages_by_name[need]
            upstream[need] = _hash_for(ctx, dep, target if dep.per_target else None,
                                       stages_by_name)
        ctx.hashes[key] = input_hash(stage, stage.inputs(ctx, target), upstream)
    return ctx.hashes[key]


def _row_result(row: Mapping[str, Any]) -> StageResult:
    return StageResult(stage=row["stage"], status=Status(row["status"]), summary=row["summary"],
                       duration=float(row["duration"]), target=row["target"],
                       details=dict(row["details"]), log=row["log"])


def _run_one(stage: Stage, ctx: GateContext, target: str | None) -> StageResult:
    """Run a stage function; an exception becomes an ERROR result with its traceback logged."""
    with measure() as sw:
        try:
            res = stage.run(ctx, target)
        except PatchflowError as exc:
            res = StageResult(stage=stage.name, status=Status.ERROR, target=target,
                              summary=str(exc).splitlines()[0],
                              details={"error": type(exc).__name__, "message": str(exc)})
        except Exception as exc:
            if ctx.debug:
                raise
            # a bug in one stage must not hide the verdict of every other cell
            log = ctx.log_path(target, stage.name)
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(traceback.format_exc())
            res = StageResult(stage=stage.name, status=Status.ERROR, target=target,
                              summary=f"internal error: {type(exc).__name__}: {exc}",
                              log=str(log))
    # fill in what a stage function may leave out
    log_file = ctx.log_path(target, stage.name)
    return StageResult(stage=stage.name, status=res.status, summary=res.summary,
                       duration=res.duration or sw.elapsed, target=target,
                       details=res.details,
                       log=res.log or (str(log_file) if log_file.exists() else None))


def run_gate(ctx: GateContext, stages: Sequence[Stage], targets: Sequence[str], *,
             selected: Sequence[str] | None = None, force: bool = False,
             on_result: Callable[[GateEntry], None] | None = None) -> GateRun:
    """Run *selected* stages (default: all) for each target, in pipeline order.

    Stages of one target run in order; targets run one after the other (a
    machine runs one kernel build at a time; fan-out is the CI engine's job,
    see :mod:`patchflow.cigen`).  Per-series stages run once, first.
    ``KeyboardInterrupt`` ends the run as interrupted (exit 2); what finished
    is already recorded, so the same command resumes.
    """
    by_name = {s.name: s for s in stages}
    chosen = select_stages(stages, selected)
    chosen_names = {s.name for s in chosen}
    run = GateRun(run_id=ctx.run_id, run_dir=ctx.run_dir, entries=[])
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
        return GateEntry(blocked, h, False, None)
    if not force:
        row = ctx.state.last_result(series=ctx.series.name, target=target, stage=stage.name,
                                    input_hash=h)
        if row is not None and Status(row["status"]) in REUSABLE:
            samples = tuple(ctx.state.samples(int(row["id"])))
            return GateEntry(_row_result(row), h, True, int(row["id"]), samples)
    if ctx.dry_run:
        res = StageResult(stage=stage.name, status=Status.SKIP, target=target,
                          summary=f"dry run: would run {stage.name}",
                          details={"dry_run": True})
        return GateEntry(res, h, False, None)
    res = _run_one(stage, ctx, target)
    samples = tuple((str(s[0]), int(s[1]), str(s[2]), float(s[3]))
                    for s in res.details.get("samples", []))
    if samples:
        res = StageResult(stage=res.stage, status=res.status, summary=res.summary,
                          duration=res.duration, target=res.target, log=res.log,
                          details={k: v for k, v in res.details.items() if k != "samples"})
    rid = ctx.state.record(res, run_id=ctx.run_id, series=ctx.series.name,
                           revision=ctx.revision, input_hash=h, samples=list(samples))
    return GateEntry(res, h, False, rid, samples)


# --------------------------------------------------------------------------
# records: metadata.json, results.json, junit.xml


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
        "run_id": ctx.run_id,
        "series": ctx.series.name,
        "revision": ctx.revision,
        "targets": list(targets),
        "stages": list(stages),
        "dry_run": ctx.dry_run,
        "started": started,
        "reproduce": reproduce,
        "tool_versions": dict(versions),
        "status": "running",
    }
    if run is not None:
        doc["finished"] = time.time()
        doc["duration"] = round(doc["finished"] - started, 3)
        doc["exit_code"] = run.exit_code
        doc["status"] = "interrupted" if run.interrupted else _verdict_status(run.exit_code)
        doc["stage_durations"] = [
            {"target": e.result.target, "stage": e.result.stage,
             "status": e.result.status.value, "duration": round(e.result.duration, 3),
             "cached": e.cached} for e in run.entries]
    return doc


def _verdict_status(code: int) -> str:
    return {0: "pass", 1: "fail"}.get(code, "incomplete")


def series_block(ctx: GateContext) -> dict[str, Any]:
    """What the report and the mail need to know about the series version."""
    s = ctx.series
    block: dict[str, Any] = {"name": s.name, "title": s.title, "revision": ctx.revision,
                             "author": s.author, "list": s.list_address, "msgid": "",
                             "subject": "", "cover": "", "posted": "", "patches": 0}
    versions = [v for v in ctx.state.versions(s.name)
                if ctx.revision is None or v.revision == ctx.revision]
    if versions:
        v = versions[-1]
        block.update(msgid=v.msgid, subject=v.subject, cover=v.cover, posted=v.posted,
                     author=v.author or s.author, patches=len(ctx.state.patches(v.id)))
    elif ctx.revision is not None:
        with contextlib.suppress(NotFound):
            block["msgid"] = s.version(ctx.revision).msgids[-1]
    return block


def results_doc(ctx: GateContext, run: GateRun, *, targets: Sequence[str],
                stages: Sequence[str], reproduce: str, started: float,
                finished: float) -> dict[str, Any]:
    """The results.json document (schema in :mod:`patchflow.report.view`)."""
    code = run.exit_code
    return {
        "schema": RESULTS_SCHEMA,
        "run_id": ctx.run_id,
        "tool_version": __version__,
        "series": series_block(ctx),
        "targets": list(targets),
        "stages": list(stages),
        "started": started,
        "finished": finished,
        "reproduce": reproduce,
        "verdict": {"exit_code": code, "status": "interrupted" if run.interrupted
                    else _verdict_status(code)},
        "results": [e.to_json() for e in run.entries],
    }


def junit_xml(results: Sequence[Mapping[str, Any]], suite_name: str) -> str:
    """JUnit XML: one testsuite per target, one testcase per stage, failure text inside."""
    root = ET.Element("testsuites", name=suite_name)
    by_target: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        by_target.setdefault(r["target"] or "series", []).append(r)
    for target, rows in by_target.items():
        suite = ET.SubElement(root, "testsuite", name=target, tests=str(len(rows)),
                              failures=str(sum(r["status"] == "fail" for r in rows)),
                              errors=str(sum(r["status"] == "error" for r in rows)),
                              skipped=str(sum(r["status"] == "skip" for r in rows)),
                              time=f"{sum(float(r['duration']) for r in rows):.3f}")
        for r in rows:
            case = ET.SubElement(suite, "testcase", classname=f"{suite_name}.{target}",
                                 name=r["stage"], time=f"{float(r['duration']):.3f}")
            text = r["summary"] + (f"\nlog: {r['log']}" if r.get("log") else "")
            if r["status"] == "fail":
                ET.SubElement(case, "failure", message=r["summary"]).text = text
            elif r["status"] == "error":
                ET.SubElement(case, "error", message=r["summary"]).text = text
            elif r["status"] == "skip":
                ET.SubElement(case, "skipped", message=r["summary"])
            else:
                ET.SubElement(case, "system-out").text = text
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_records(run_dir: Path, results: Mapping[str, Any]) -> None:
    atomic_write_json(run_dir / "results.json", results)
    atomic_write(run_dir / "junit.xml",
                 junit_xml(results["results"], f"patchflow.{results['series']['name']}"))


def execute(ws: Workspace, state: State, series: SeriesConfig, *, targets: Sequence[str],
            revision: int | None = None, stages: Sequence[Stage] | None = None,
            selected: Sequence[str] | None = None, dry_run: bool = False, force: bool = False,
            out_dir: Path | None = None, reproduce: str = "", debug: bool = False,
            versions: Mapping[str, str] | None = None,
            on_result: Callable[[GateEntry], None] | None = None) -> GateRun:
    """A whole gate run with its records: the library side of ``patchflow gate``.

    ``metadata.json`` is written before the first stage and again after the
    last, so a killed run still leaves a record saying it was running.
    """
    stage_list = list(stages if stages is not None else default_stages())
    chosen = [s.name for s in select_stages(stage_list, selected)]
    for t in targets:
        ws.config.target(t)  # unknown target: a user error before anything runs
    if revision is None:
        known = [v.revision for v in state.versions(series.name)]
        latest = series.latest
        revision = max(known) if known else (latest.revision if latest else None)
    started = time.time()
    run_id = state.start_run("gate", reproduce, None)
    run_dir = out_dir if out_dir is not None else ws.runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = GateContext(ws=ws, state=state, series=series, revision=revision, run_id=run_id,
                      run_dir=run_dir, dry_run=dry_run, debug=debug)
    vers = dict(versions) if versions is not None else tool_versions()

    def meta(run: GateRun | None) -> dict[str, Any]:
        return metadata(ctx, run, targets=targets, stages=chosen, started=started,
                        reproduce=reproduce, versions=vers)

    atomic_write_json(run_dir / "metadata.json", meta(None))
    run = GateRun(run_id=run_id, run_dir=run_dir, entries=[], interrupted=True)
    try:
        run = run_gate(ctx, stage_list, targets, selected=selected, force=force,
                       on_result=on_result)
    finally:
        # also on an exception escaping (--debug): leave the end record behind
        finished = time.time()
        write_records(run_dir, results_doc(ctx, run, targets=targets, stages=chosen,
                                           reproduce=reproduce, started=started,
                                           finished=finished))
        atomic_write_json(run_dir / "metadata.json", meta(run))
        state.finish_run(run_id, "interrupted" if run.interrupted
                         else _verdict_status(run.exit_code))
    return run
