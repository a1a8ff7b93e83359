"""What the report templates render, built from a typed results document.

:func:`build_view` reads a :class:`~patchflow.gate.records.ResultsDoc` whose
every ``details`` is its stage's dataclass, so a field the report shows is a
field a stage writes (mypy checks it); templates never see raw result dicts.
Benchmark figures are the bench stage's own judgement (:mod:`patchflow.stats`:
the sequential paired signed-rank verdicts with Hodges-Lehmann changes and
repeated intervals; older records: medians, bootstrap intervals, Mann-Whitney),
never recomputed another way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from patchflow import stats
from patchflow.backport.stage import BackportDetails
from patchflow.bench.ab import BenchDetails, BenchEnvironment
from patchflow.bench.metrics import Metric, metric
from patchflow.config import Claim
from patchflow.gate.records import Entry, ResultsDoc
from patchflow.gate.registry import stage_key
from patchflow.livepatch.results import LivepatchBuildDetails, LivepatchVerifyDetails
from patchflow.report.plots import fmt_num, svg_forest, svg_plot
from patchflow.result import Status

#: the metric the ROI calculator turns into capacity unless the user picks another
THROUGHPUT_METRIC = "bogo_ops_per_s"


def fmt_frac(x: float | None) -> str:
    """A relative change (0.253) as a percentage (+25.3%)."""
    return "n/a" if x is None else f"{x * 100:+.1f}%"


@dataclass(frozen=True)
class Cell:
    status: str
    summary: str
    log: str | None
    cached: bool
    duration: float


@dataclass(frozen=True)
class MatrixRow:
    revision: str
    target: str
    cells: tuple[Cell | None, ...]


@dataclass(frozen=True)
class ConflictView:
    patch: str
    file: str
    text: str


@dataclass(frozen=True)
class BackportView:
    target: str
    status: str
    summary: str
    method: str
    conflicts: tuple[ConflictView, ...]
    range_diff: str
    #: "patch 2 (subject): why", for each patch dropped with ``backport --skip --note``
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetricView:
    comparison: stats.Comparison
    info: Metric
    svg: str
    change: str
    ci: str
    base_median: str
    patched_median: str


@dataclass(frozen=True)
class BenchView:
    target: str
    status: str
    summary: str
    environment: tuple[tuple[str, str], ...]
    env_sentence: str
    emulated: bool
    metrics: tuple[MetricView, ...]
    #: the series authors' figure next to this bench's ("" when the series has none)
    claim_sentence: str = ""


@dataclass(frozen=True)
class LivepatchView:
    target: str
    module: str
    build_status: str
    build_summary: str
    functions: tuple[str, ...]
    safety: tuple[tuple[str, str], ...]
    verify_status: str
    verify_summary: str
    verify_facts: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ReportView:
    title: str
    series: Mapping[str, Any]
    verdict_status: str
    verdict_code: int
    generated: str
    reproduce: str
    run_id: str
    stages: tuple[str, ...]
    matrix: tuple[MatrixRow, ...]
    backports: tuple[BackportView, ...]
    benches: tuple[BenchView, ...]
    livepatches: tuple[LivepatchView, ...]
    headline_svg: str
    roi_json: str
    counts: tuple[tuple[str, int], ...]


def env_rows(env: BenchEnvironment) -> tuple[tuple[str, str], ...]:
    return (("vCPUs", str(env.vcpus)), ("accelerator", f"{env.accel} ({env.accel_reason})"),
            ("guest memory (MiB)", str(env.memory_mb)), ("host CPUs", str(env.host_cpus)),
            ("profile", env.profile), ("workload", env.workload),
            ("runs per variant", str(env.reps)),
            *((f"{v} kernel", r) for v, r in sorted(env.kernel_releases.items())))


def env_sentence(env: BenchEnvironment | None) -> str:
    """Says plainly what produced the number: a small emulated guest is not a server."""
    if env is None:
        return "The benchmark did not run to completion; nothing was measured."
    kind = ("an emulated QEMU guest (TCG, no hardware virtualisation)" if env.emulated
            else f"a QEMU guest ({env.accel})")
    return (f"Measured in {kind} with {env.vcpus} vCPUs and {env.memory_mb} MiB on a "
            f"{env.host_cpus}-CPU host. A {env.vcpus}-vCPU guest is not a production server: "
            "TLB shootdown costs grow with the number of CPUs, so re-measure on your hardware "
            "before budgeting with this.")


def claim_sentence(claim: Claim | None, d: BenchDetails | None) -> str:
    """The authors' published figure, this bench's, and what differs between the two."""
    if claim is None or d is None:
        return ""
    info, env = metric(claim.metric), d.environment
    said = (f"The series' {claim.source or 'authors'} reports {info.label} "
            f"{claim.before:.15g} → {claim.after:.15g} {info.unit} "
            f"({claim.change:+.1%}) with {claim.setup} on {claim.cpus} CPUs.")
    c = d.comparison(claim.metric)
    if c is None or c.change is None:
        return f"{said} This bench did not measure {info.label}."
    where = (f"{env.vcpus} vCPUs{' emulated (TCG)' if env.emulated else ''}"
             f"{f', a {env.memcg_mb} MiB memcg' if env.memcg_mb else ''}")
    got = f"{said} Measured here: {c.change:+.1%}"
    if c.ci_low is None or c.ci_high is None:
        return f"{got} on {where}, {c.verdict}: too few rounds for an interval."
    got += f" [{c.ci_low:+.1%}, {c.ci_high:+.1%}] on {where}, {c.verdict}"
    if c.ci_low <= claim.change <= c.ci_high:
        rel = f"the interval contains the claimed {claim.change:+.1%}"
    elif c.ci_high < claim.change:
        rel = f"the whole interval is below the claimed {claim.change:+.1%}"
    else:
        rel = f"the whole interval is above the claimed {claim.change:+.1%}"
    return (f"{got}; {rel}. The set-ups differ ({env.vcpus} against {claim.cpus} CPUs"
            f"{', emulation against hardware' if env.emulated else ''}): the TLB-shootdown "
            "cost the series saves grows with the number of CPUs, so compare the direction, "
            "not the size.")


def _samples(d: BenchDetails, name: str) -> tuple[list[float], list[float]]:
    base = [s.value for s in d.samples if s.metric == name and s.variant == "base"]
    patched = [s.value for s in d.samples if s.metric == name and s.variant == "patched"]
    return base, patched


def _metric_views(d: BenchDetails) -> tuple[MetricView, ...]:
    out = []
    for c in d.comparisons:
        info = metric(c.metric)
        base, patched = _samples(d, c.metric)
        unit = info.unit + (", lower is better" if info.better == "lower" else
                            ", higher is better" if info.better == "higher" else "")
        out.append(MetricView(c, info, svg_plot(info.label, unit, base, patched),
                              fmt_frac(c.change), f"{fmt_frac(c.ci_low)} … {fmt_frac(c.ci_high)}",
                              fmt_num(c.median_a), fmt_num(c.median_b)))
    return tuple(out)


def _pct(x: float | None) -> float | None:
    return None if x is None else round(x * 100, 3)


def _as_gain(change: float | None, better: str) -> float | None:
    """A metric's change as the throughput change it stands for.

    Higher-is-better metrics are throughput already.  A lower-is-better one
    is read as a cost per unit of work: a change *c* lets the same resources
    do ``1 / (1 + c) - 1`` more work (-20% cost is +25% work).
    """
    if change is None:
        return None
    return change if better != "lower" else 1 / (1 + change) - 1


def roi_entry(target: str, d: BenchDetails, metric_name: str = THROUGHPUT_METRIC
              ) -> dict[str, Any]:
    """What the ROI calculator needs for one target and metric, from the bench's own judgement."""
    c = d.comparison(metric_name)
    info = metric(metric_name)
    lo, hi = (None, None) if c is None else (c.ci_low, c.ci_high)
    gains = [_as_gain(lo, info.better), _as_gain(hi, info.better)]
    return {
        "target": target,
        "metric": metric_name,
        "label": info.label,
        "unit": info.unit,
        "better": info.better,
        "available": c is not None and c.change is not None,
        "change_pct": None if c is None else _pct(c.change),
        "ci_low_pct": _pct(lo),
        "ci_high_pct": _pct(hi),
        "gain_pct": None if c is None else _pct(_as_gain(c.change, info.better)),
        "gain_low_pct": None if None in gains else _pct(min(g for g in gains if g is not None)),
        "gain_high_pct": None if None in gains else _pct(max(g for g in gains if g is not None)),
        "significant": bool(c is not None and c.significant),
        "verdict": c.verdict if c is not None else "not measured",
        "runs": 0 if c is None else min(c.n_a, c.n_b),
        "vcpus": d.environment.vcpus,
        "accel": d.environment.accel,
        "emulated": d.environment.emulated,
        "environment": env_sentence(d.environment),
    }


def roi_entries(target: str, d: BenchDetails) -> list[dict[str, Any]]:
    """One ROI entry per judged metric of *target*, throughput first (the default pick)."""
    names = [c.metric for c in d.comparisons if metric(c.metric).better in ("higher", "lower")]
    names.sort(key=lambda n: n != THROUGHPUT_METRIC)
    return [roi_entry(target, d, n) for n in names] or [roi_entry(target, d)]


def headline_rows(benches: Sequence[BenchView]) -> list[tuple[str, float, float, float, str]]:
    """(label, change, ci_low, ci_high, verdict) of every judged metric with an interval."""
    rows = []
    for b in benches:
        for m in b.metrics:
            c = m.comparison
            if m.info.better not in ("higher", "lower") or None in (c.change, c.ci_low, c.ci_high):
                continue
            assert c.change is not None and c.ci_low is not None and c.ci_high is not None
            rows.append((f"{m.info.label} ({b.target}, {m.info.better} is better)", c.change,
                         c.ci_low, c.ci_high, c.verdict))
    return rows


def _matrix(doc: ResultsDoc, stages: tuple[str, ...]) -> tuple[MatrixRow, ...]:
    rows: dict[tuple[str, str], dict[str, Cell]] = {}
    for e in doc.entries:
        r = e.result
        rev = str(e.revision if e.revision is not None else doc.series.revision)
        rows.setdefault((rev, r.target or "(series)"), {})[r.stage] = Cell(
            r.status.value, r.summary, r.log, e.cached, r.duration)
    return tuple(MatrixRow(rev, t, tuple(rows[(rev, t)].get(s) for s in stages))
                 for rev, t in sorted(rows, key=lambda k: (k[0], k[1] != "(series)", k[1])))


def _backport(e: Entry) -> BackportView:
    r = e.result
    d = r.detail(BackportDetails)
    if d is None:
        return BackportView(r.target or "", r.status.value, r.summary, "", (), "")
    return BackportView(
        target=r.target or "", status=r.status.value, summary=r.summary, method=d.method,
        conflicts=tuple(ConflictView(str(c.patch), ", ".join(c.files),
                                     "; ".join(c.spots) or c.detail) for c in d.conflicts),
        range_diff=d.rebase.range_diff if d.rebase else "",
        skipped=tuple(f"patch {k.patch} ({k.subject}): {k.note}" for k in d.skipped))


def _livepatch(e: Entry, verify: Entry | None) -> LivepatchView:
    r = e.result
    d = r.detail(LivepatchBuildDetails)
    v = verify.result if verify else None
    vd = v.detail(LivepatchVerifyDetails) if v else None
    facts: list[tuple[str, str]] = []
    if vd is not None:
        facts.append(("enabled", "yes" if vd.enabled else "no"))
        if vd.transition_s is not None:
            facts.append(("transition", f"{vd.transition_s:.0f} s"))
        if vd.blocking_tasks:
            facts.append(("blocking tasks", ", ".join(vd.blocking_tasks)))
        if vd.tlb_shootdowns_before is not None and vd.tlb_shootdowns_after is not None:
            facts.append(("TLB shootdowns while patched",
                          str(vd.tlb_shootdowns_after - vd.tlb_shootdowns_before)))
    return LivepatchView(
        target=r.target or "", module=d.module if d else "", build_status=r.status.value,
        build_summary=r.summary,
        functions=tuple(f.name for f in d.functions) if d else (),
        safety=tuple(("refused", str(f)) for f in d.findings) if d else (),
        verify_status=v.status.value if v else "not run", verify_summary=v.summary if v else "",
        verify_facts=tuple(facts))


def build_view(doc: ResultsDoc) -> ReportView:
    """Normalise a results document into what the templates render."""
    s = doc.series
    stages = tuple(sorted({e.result.stage for e in doc.entries} | set(doc.stages), key=stage_key))
    benches, roi = [], []
    for e in doc.of_stage("bench"):
        d = e.result.detail(BenchDetails)
        if e.result.status is Status.SKIP and d is None:
            continue  # never ran: the matrix already says why
        target = e.result.target or ""
        benches.append(BenchView(
            target=target, status=e.result.status.value, summary=e.result.summary,
            environment=env_rows(d.environment) if d else (),
            env_sentence=env_sentence(d.environment if d else None),
            emulated=bool(d and d.environment.emulated),
            metrics=_metric_views(d) if d else (),
            claim_sentence=claim_sentence(s.claim, d)))
        if d is not None:
            roi += roi_entries(target, d)
    verifies = {e.result.target: e for e in doc.of_stage("livepatch-verify")}
    livepatches = tuple(_livepatch(e, verifies.get(e.result.target))
                        for e in doc.of_stage("livepatch-build")
                        if not (e.result.status is Status.SKIP and e.result.details is None))
    counts: dict[str, int] = {}
    for e in doc.entries:
        counts[e.result.status.value] = counts.get(e.result.status.value, 0) + 1
    order = [st.value for st in Status]
    subject = s.subject or f"[PATCH v{s.revision}] {s.title}"
    return ReportView(
        title=f"patchflow: {s.name} v{s.revision}",
        series={"name": s.name, "title": s.title, "revision": s.revision, "author": s.author,
                "list": s.list_address, "msgid": s.msgid, "subject": subject, "cover": s.cover,
                "posted": s.posted, "patches": s.patches, "cc": list(s.cc)},
        verdict_status=doc.verdict.status, verdict_code=doc.verdict.exit_code,
        generated=doc.finished.replace("T", " ").replace("Z", " UTC"),
        reproduce=doc.reproduce, run_id=doc.run_id, stages=stages, matrix=_matrix(doc, stages),
        backports=tuple(_backport(e) for e in doc.of_stage("backport")),
        benches=tuple(benches), livepatches=livepatches,
        headline_svg=svg_forest(headline_rows(benches)),
        # "<" escaped so no "</script>" inside the data can end the script element
        roi_json=json.dumps(roi, sort_keys=True).replace("<", "\\u003c"),
        counts=tuple(sorted(counts.items(), key=lambda kv: order.index(kv[0])
                            if kv[0] in order else 99)))


def problems(view: ReportView) -> Sequence[tuple[str, str, Cell]]:
    """(target, stage, cell) of every failed or errored cell."""
    return [(row.target, stage, cell) for row in view.matrix
            for stage, cell in zip(view.stages, row.cells, strict=True)
            if cell is not None and cell.status in ("fail", "error")]
