"""Reports people can read: HTML, Markdown and a mail draft from gate results.

Owns the results.json schema (below), merging result files from several CI
jobs into one verdict, the statistics shown for benchmarks (bootstrap
confidence intervals), the inline SVG plots, and the view models that the
jinja2 templates in ``patchflow/templates/report/`` render.  Templates never
see raw result dicts: :func:`build_view` normalises everything first, so a
missing field is a Python decision here, not a silent blank in a page.

results.json (``"schema": "patchflow.results/1"``, written by
:mod:`patchflow.gate.run`)::

    {
      "schema": "patchflow.results/1",
      "run_id": "20260601-101500-ab12cd",   "tool_version": "0.1.0",
      "started": 1780000000.0, "finished": 1780000900.0,   # unix seconds
      "reproduce": "patchflow gate batch-tlb-flush -t linux-6.12.y",
      "targets": ["linux-6.1.y", ...],   "stages": ["backport", ...],
      "verdict": {"exit_code": 0|1|2, "status": "pass|fail|incomplete|interrupted"},
      "series": {"name", "title", "revision", "author", "list", "msgid",
                 "subject", "cover", "posted", "patches"},
      "results": [{
          "stage", "target" (null for per-series stages), "status"
          ("pass|warn|fail|skip|error"), "summary", "duration" (s),
          "log" (path, relative to the results file or absolute, or null),
          "input_hash", "cached" (reused from an earlier run),
          "samples": [{"variant": "base|patched", "rep", "metric", "value"}],
          "details": {...}   # per stage, see below
      }]
    }

``details`` keys the report reads (all optional):

* backport: ``conflicts`` = [{"patch", "file", "text"}], ``range_diff`` (str),
  ``method`` (e.g. "am", "am -3", "cherry-pick"), ``base`` (commit).
* bench: ``environment`` = {"vcpus", "accel", "memory_mb", "host_cpu",
  "host_cpus", "kernel_base", "kernel_patched", "workload", "runs"}; the
  samples carry the numbers.  Metrics: ``bogo_ops_per_s`` (higher is better),
  ``tlb_shootdowns``, ``call_ipis``, ``tlb_per_reclaimed_page`` (lower is
  better); any other metric is shown without a direction.
* livepatch-build: ``module``, ``functions`` (list of str), ``safety`` =
  [{"severity", "message"}].
* livepatch-verify: ``enabled`` (bool), ``transition_s`` (float),
  ``blocking_tasks`` (list of str).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import os
import random
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from patchflow.errors import UserError
from patchflow.result import Status, exit_code

RESULTS_SCHEMA = "patchflow.results/1"

#: stage order of the matrix; stages not listed sort after, by name
STAGE_ORDER = ("check-newer", "backport", "build-base", "build-patched", "boot", "bench",
               "livepatch-build", "livepatch-verify")


@dataclass(frozen=True)
class MetricInfo:
    label: str
    unit: str
    #: True: higher is better; False: lower is better; None: no direction
    higher_is_better: bool | None


METRICS: dict[str, MetricInfo] = {
    "bogo_ops_per_s": MetricInfo("stress-ng throughput", "bogo ops/s", True),
    "tlb_shootdowns": MetricInfo("TLB shootdowns", "count", False),
    "call_ipis": MetricInfo("function-call IPIs", "count", False),
    "tlb_per_reclaimed_page": MetricInfo("TLB shootdowns per reclaimed page",
                                                "per page", False),
}
#: the metric the ROI calculator turns into capacity
THROUGHPUT_METRIC = "bogo_ops_per_s"
BOOTSTRAP_REPS = 2000
CONFIDENCE = 0.95


# --------------------------------------------------------------------------
# loading and merging


def load_results(paths: Iterable[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Read results.json files; a directory contributes every results.json below it."""
    out: list[tuple[Path, dict[str, Any]]] = []
    for p in paths:
        files = sorted(p.rglob("results.json")) if p.is_dir() else [p]
        if not files:
            raise UserError(f"no results.json under {p}")
        for f in files:
            try:
                doc = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise UserError(f"{f}: not a readable results file: {exc}") from exc
            if not isinstance(doc, dict) or doc.get("schema") != RESULTS_SCHEMA:
                raise UserError(f"{f}: not a {RESULTS_SCHEMA} file")
            out.append((f, doc))
    return out


def _stage_key(name: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(name) if name in STAGE_ORDER else len(STAGE_ORDER), name)


def merge_results(docs: Sequence[tuple[Path, Mapping[str, Any]]],
                  base_dir: Path | None = None) -> dict[str, Any]:
    """One results document from several (one per CI job): one matrix, one verdict.

    A cell (revision, target, stage) reported by several files keeps the
    result of the file that finished last; a job that ran the stage for real
    beats one that only reused it.  Log paths are rewritten relative to
    *base_dir* (where the merged file will live) so the report links work.
    """
    if not docs:
        raise UserError("nothing to merge")
    cells: dict[tuple[Any, Any, str], tuple[float, bool, dict[str, Any]]] = {}
    targets: list[str] = []
    stages: list[str] = []
    interrupted = False
    ordered = sorted(docs, key=lambda d: float(d[1].get("finished") or 0))
    for path, doc in ordered:
        rev = doc["series"].get("revision")
        interrupted |= doc["verdict"].get("status") == "interrupted"
        for t in doc.get("targets", []):
            if t not in targets:
                targets.append(t)
        for r in doc["results"]:
            r = dict(r)
            r.setdefault("revision", rev)
            if r.get("log") and base_dir is not None and not os.path.isabs(r["log"]):
                r["log"] = os.path.relpath(path.parent / r["log"], base_dir)
            key = (r["revision"], r["target"], r["stage"])
            rank = (float(doc.get("finished") or 0), not r.get("cached", False))
            old = cells.get(key)
            if old is None or (rank[1], rank[0]) >= (old[1], old[0]):
                cells[key] = (rank[0], rank[1], r)
            if r["stage"] not in stages:
                stages.append(r["stage"])
    first = ordered[-1][1]
    results = [c[2] for c in cells.values()]
    code = exit_code(Status(r["status"]) for r in results)
    if interrupted:
        code = 2
    return {
        "schema": RESULTS_SCHEMA,
        "run_id": "+".join(sorted({str(d.get("run_id")) for _, d in docs})),
        "tool_version": first.get("tool_version", ""),
        "series": dict(first["series"]),
        "targets": targets,
        "stages": sorted(stages, key=_stage_key),
        "started": min(float(d.get("started") or 0) for _, d in docs),
        "finished": max(float(d.get("finished") or 0) for _, d in docs),
        "reproduce": first.get("reproduce", ""),
        "verdict": {"exit_code": code, "status": "interrupted" if interrupted else
                    {0: "pass", 1: "fail"}.get(code, "incomplete")},
        "results": results,
    }


# --------------------------------------------------------------------------
# statistics


@dataclass(frozen=True)
class Comparison:
    """Base against patched for one metric on one target."""

    metric: str
    info: MetricInfo
    base: tuple[float, ...]
    patched: tuple[float, ...]
    base_mean: float
    patched_mean: float
    change_pct: float
    ci_low_pct: float | None
    ci_high_pct: float | None

    @property
    def significant(self) -> bool:
        """True when the confidence interval of the change excludes zero."""
        if self.ci_low_pct is None or self.ci_high_pct is None:
            return False
        return self.ci_low_pct > 0 or self.ci_high_pct < 0

    @property
    def verdict(self) -> str:
        if not self.significant:
            return "no significant change"
        if self.info.higher_is_better is None:
            return "changed"
        better = (self.change_pct > 0) == self.info.higher_is_better
        return "better" if better else "worse"


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _percentile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    pos = (len(sorted_xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def compare(metric: str, base: Sequence[float], patched: Sequence[float],
            reps: int = BOOTSTRAP_REPS) -> Comparison:
    """Relative change of the mean, with a percentile-bootstrap confidence interval.

    The generator is seeded from the metric name so a report renders the same
    bytes twice (the golden test relies on it).  Fewer than two samples on a
    side give no interval, and so never a "significant" claim.
    """
    info = METRICS.get(metric, MetricInfo(metric, "", None))
    bm, pm = _mean(base), _mean(patched)
    change = (pm - bm) / bm * 100 if bm else math.nan
    lo = hi = None
    if len(base) >= 2 and len(patched) >= 2 and bm:
        rng = random.Random(zlib.crc32(metric.encode()))
        nb, np_ = len(base), len(patched)
        stats = []
        for _ in range(reps):
            b = sum(base[int(rng.random() * nb)] for _ in range(nb)) / nb
            p = sum(patched[int(rng.random() * np_)] for _ in range(np_)) / np_
            if b:
                stats.append((p - b) / b * 100)
        stats.sort()
        alpha = (1 - CONFIDENCE) / 2
        lo, hi = _percentile(stats, alpha), _percentile(stats, 1 - alpha)
    return Comparison(metric=metric, info=info, base=tuple(base), patched=tuple(patched),
                      base_mean=bm, patched_mean=pm, change_pct=change,
                      ci_low_pct=lo, ci_high_pct=hi)


def comparisons(samples: Sequence[Mapping[str, Any]]) -> list[Comparison]:
    """One :class:`Comparison` per metric that has both variants, known metrics first."""
    by: dict[str, dict[str, list[float]]] = {}
    for s in sorted(samples, key=lambda s: (s["metric"], s["variant"], s["rep"])):
        by.setdefault(s["metric"], {}).setdefault(s["variant"], []).append(float(s["value"]))
    order = [m for m in METRICS if m in by] + sorted(m for m in by if m not in METRICS)
    return [compare(m, by[m]["base"], by[m]["patched"]) for m in order
            if by[m].get("base") and by[m].get("patched")]


# --------------------------------------------------------------------------
# plots


def fmt_num(x: float) -> str:
    """Compact human number: 12345.6 -> 12,346; 0.01234 -> 0.0123."""
    if math.isnan(x):
        return "n/a"
    a = abs(x)
    if a >= 100:
        return f"{x:,.0f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def fmt_pct(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:+.1f}%"


def svg_plot(c: Comparison, width: int = 520) -> str:
    """A strip plot with a box (quartiles, median, min-max whiskers) per variant.

    Returned as a self-contained ``<svg>`` string: the page must work offline,
    so no plotting library and no external resources.
    """
    pad_l, pad_r, row_h, top = 70, 20, 46, 10
    height = top + 2 * row_h + 34
    values = list(c.base) + list(c.patched)
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    span = hi - lo
    lo, hi = lo - span * 0.05, hi + span * 0.05

    def x(v: float) -> float:
        return pad_l + (v - lo) / (hi - lo) * (width - pad_l - pad_r)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{html.escape(c.info.label)}: base against patched">']
    colours = {"base": "#5b6b7f", "patched": "#d9731a"}
    for i, (name, xs) in enumerate((("base", c.base), ("patched", c.patched))):
        cy = top + i * row_h + row_h / 2
        s = sorted(xs)
        q1, med, q3 = _percentile(s, 0.25), _percentile(s, 0.5), _percentile(s, 0.75)
        col = colours[name]
        parts.append(f'<text x="{pad_l - 8}" y="{cy + 4:.1f}" text-anchor="end" '
                     f'class="lbl">{name}</text>')
        parts.append(f'<line x1="{x(s[0]):.1f}" x2="{x(s[-1]):.1f}" y1="{cy:.1f}" '
                     f'y2="{cy:.1f}" stroke="{col}" stroke-width="1"/>')
        parts.append(f'<rect x="{x(q1):.1f}" y="{cy - 11:.1f}" width="{max(x(q3) - x(q1), 1):.1f}" '
                     f'height="22" fill="{col}" fill-opacity="0.18" stroke="{col}"/>')
        parts.append(f'<line x1="{x(med):.1f}" x2="{x(med):.1f}" y1="{cy - 11:.1f}" '
                     f'y2="{cy + 11:.1f}" stroke="{col}" stroke-width="2"/>')
        for j, v in enumerate(xs):
            # deterministic jitter so overlapping points stay visible
            jy = ((j * 7) % 11 - 5) * 1.6
            parts.append(f'<circle cx="{x(v):.1f}" cy="{cy + jy:.1f}" r="3" fill="{col}" '
                         f'fill-opacity="0.8"><title>{name} run {j + 1}: {fmt_num(v)}</title>'
                         f'</circle>')
    axis_y = top + 2 * row_h + 6
    parts.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{axis_y}" y2="{axis_y}" '
                 f'stroke="#999"/>')
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        parts.append(f'<text x="{x(v):.1f}" y="{axis_y + 16}" text-anchor="middle" '
                     f'class="tick">{fmt_num(v)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------
# view model


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
class Conflict:
    patch: str
    file: str
    text: str


@dataclass(frozen=True)
class BackportView:
    target: str
    status: str
    summary: str
    method: str
    conflicts: tuple[Conflict, ...]
    range_diff: str


@dataclass(frozen=True)
class MetricView:
    comparison: Comparison
    svg: str
    change: str
    ci: str
    base_mean: str
    patched_mean: str


@dataclass(frozen=True)
class BenchView:
    target: str
    status: str
    summary: str
    environment: tuple[tuple[str, str], ...]
    env_sentence: str
    metrics: tuple[MetricView, ...]


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
    roi_json: str
    counts: tuple[tuple[str, int], ...]


ENV_LABELS = (("vcpus", "vCPUs"), ("accel", "accelerator"), ("memory_mb", "guest memory (MiB)"),
              ("host_cpu", "host CPU"), ("host_cpus", "host CPUs"),
              ("kernel_base", "base kernel"), ("kernel_patched", "patched kernel"),
              ("workload", "workload"), ("runs", "runs per variant"))


def env_sentence(env: Mapping[str, Any]) -> str:
    """Says plainly what produced the number: a small emulated guest is not a server."""
    vcpus = env.get("vcpus", "?")
    accel = str(env.get("accel", "unknown"))
    emulated = accel.lower() in ("tcg", "emulated")
    kind = "an emulated QEMU guest (TCG, no hardware virtualisation)" if emulated \
        else f"a QEMU guest ({accel})"
    host = f" on a {env['host_cpus']}-CPU host" if "host_cpus" in env else ""
    return (f"Measured in {kind} with {vcpus} vCPUs and {env.get('memory_mb', '?')} MiB{host}. "
            f"A {vcpus}-vCPU guest is not a production server: TLB shootdown costs grow with "
            f"the number of CPUs, so re-measure on your hardware before budgeting with this.")


def _results_of(doc: Mapping[str, Any], stage: str) -> list[Mapping[str, Any]]:
    return sorted((r for r in doc["results"] if r["stage"] == stage),
                  key=lambda r: (str(r.get("revision")), str(r["target"])))


def _safety(items: Iterable[Any]) -> tuple[tuple[str, str], ...]:
    out = []
    for it in items:
        if isinstance(it, Mapping):
            out.append((str(it.get("severity", "info")), str(it.get("message", ""))))
        else:
            out.append(("info", str(it)))
    return tuple(out)


def _roi_entry(target: str, comps: Sequence[Comparison], env: Mapping[str, Any]) -> dict[str, Any]:
    c = next((c for c in comps if c.metric == THROUGHPUT_METRIC), None)
    return {
        "target": target,
        "metric": THROUGHPUT_METRIC,
        "available": c is not None,
        "change_pct": None if c is None else round(c.change_pct, 3),
        "ci_low_pct": None if c is None or c.ci_low_pct is None else round(c.ci_low_pct, 3),
        "ci_high_pct": None if c is None or c.ci_high_pct is None else round(c.ci_high_pct, 3),
        "significant": bool(c is not None and c.significant),
        "runs": 0 if c is None else min(len(c.base), len(c.patched)),
        "vcpus": env.get("vcpus"),
        "accel": env.get("accel"),
        "environment": env_sentence(env),
    }


def build_view(doc: Mapping[str, Any]) -> ReportView:
    """Normalise a results document into what the templates render."""
    series = doc["series"]
    stages = tuple(sorted({r["stage"] for r in doc["results"]} | set(doc.get("stages", [])),
                          key=_stage_key))
    rows: dict[tuple[str, str], dict[str, Cell]] = {}
    for r in doc["results"]:
        key = (str(r.get("revision", series.get("revision"))), r["target"] or "(series)")
        rows.setdefault(key, {})[r["stage"]] = Cell(
            status=r["status"], summary=r["summary"], log=r.get("log"),
            cached=bool(r.get("cached")), duration=float(r.get("duration", 0)))
    matrix = tuple(MatrixRow(revision=rev, target=t,
                             cells=tuple(rows[(rev, t)].get(s) for s in stages))
                   for rev, t in sorted(rows, key=lambda k: (k[0], k[1] != "(series)", k[1])))

    backports = tuple(BackportView(
        target=r["target"], status=r["status"], summary=r["summary"],
        method=str(r["details"].get("method", "")),
        conflicts=tuple(Conflict(str(c.get("patch", "")), str(c.get("file", "")),
                                 str(c.get("text", "")))
                        for c in r["details"].get("conflicts", [])),
        range_diff=str(r["details"].get("range_diff", "")))
        for r in _results_of(doc, "backport"))

    benches = []
    roi = []
    for r in _results_of(doc, "bench"):
        if r["status"] == "skip" and not r.get("samples"):
            continue  # never ran: the matrix already says why
        env = r["details"].get("environment", {})
        comps = comparisons(r.get("samples", []))
        benches.append(BenchView(
            target=r["target"], status=r["status"], summary=r["summary"],
            environment=tuple((label, str(env[k])) for k, label in ENV_LABELS if k in env),
            env_sentence=env_sentence(env),
            metrics=tuple(MetricView(
                comparison=c, svg=svg_plot(c), change=fmt_pct(c.change_pct),
                ci=f"{fmt_pct(c.ci_low_pct)} … {fmt_pct(c.ci_high_pct)}",
                base_mean=fmt_num(c.base_mean), patched_mean=fmt_num(c.patched_mean))
                for c in comps)))
        roi.append(_roi_entry(r["target"], comps, env))

    verifies = {r["target"]: r for r in _results_of(doc, "livepatch-verify")}
    livepatches = []
    for r in _results_of(doc, "livepatch-build"):
        d = r["details"]
        if r["status"] == "skip" and not d:
            continue
        v = verifies.get(r["target"])
        vd = v["details"] if v else {}
        facts = []
        if "enabled" in vd:
            facts.append(("enabled", "yes" if vd["enabled"] else "no"))
        if "transition_s" in vd:
            facts.append(("transition", f"{float(vd['transition_s']):.1f} s"))
        if vd.get("blocking_tasks"):
            facts.append(("blocking tasks", ", ".join(map(str, vd["blocking_tasks"]))))
        livepatches.append(LivepatchView(
            target=r["target"], module=str(d.get("module", "")), build_status=r["status"],
            build_summary=r["summary"], functions=tuple(map(str, d.get("functions", []))),
            safety=_safety(d.get("safety", [])),
            verify_status=v["status"] if v else "not run",
            verify_summary=v["summary"] if v else "", verify_facts=tuple(facts)))

    counts: dict[str, int] = {}
    for r in doc["results"]:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    finished = float(doc.get("finished") or 0)
    subject = series.get("subject") or f"[PATCH v{series.get('revision')}] {series.get('title')}"
    return ReportView(
        title=f"patchflow: {series.get('name')} v{series.get('revision')}",
        series={**series, "subject": subject},
        verdict_status=doc["verdict"]["status"], verdict_code=int(doc["verdict"]["exit_code"]),
        generated=dt.datetime.fromtimestamp(finished, dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        reproduce=str(doc.get("reproduce", "")), run_id=str(doc.get("run_id", "")),
        stages=stages, matrix=matrix, backports=backports, benches=tuple(benches),
        livepatches=tuple(livepatches),
        # "<" escaped so no "</script>" inside the data can end the script element
        roi_json=json.dumps(roi, sort_keys=True).replace("<", "\\u003c"),
        counts=tuple(sorted(counts.items(), key=lambda kv: [s.value for s in Status].index(kv[0])
                            if kv[0] in [s.value for s in Status] else 99)))


# --------------------------------------------------------------------------
# rendering


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("patchflow", "templates/report"),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",),
                                            default_for_string=False),
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = fmt_pct
    env.filters["num"] = fmt_num
    return env


def render_html(view: ReportView) -> str:
    return environment().get_template("report.html.j2").render(v=view)


def render_markdown(view: ReportView) -> str:
    return environment().get_template("summary.md.j2").render(v=view)


@dataclass(frozen=True)
class MailDraft:
    headers: tuple[tuple[str, str], ...]
    body: str

    def as_text(self) -> str:
        return "".join(f"{k}: {v}\n" for k, v in self.headers) + "\n" + self.body


def quote(text: str, limit: int = 12) -> str:
    """The first *limit* lines of *text*, quoted the way mail clients do."""
    lines = text.strip("\n").splitlines()
    cut = lines[:limit]
    out = "\n".join((f"> {ln}" if ln else ">") for ln in cut)
    return out + ("\n> [...]" if len(lines) > limit else "")


#: stages whose failure says nothing against the series itself: a backport
#: conflict on an older branch is a stable-maintainer matter, not a bug
NOT_AGAINST_SERIES = frozenset({"check-newer", "backport"})


def tested_ok(view: ReportView) -> bool:
    """True when a Tested-by is honest: something ran, and nothing that ran on it failed."""
    ran = False
    for row in view.matrix:
        for stage, cell in zip(view.stages, row.cells, strict=True):
            if cell is None or stage in NOT_AGAINST_SERIES:
                continue
            if cell.status in ("fail", "error"):
                return False
            ran |= cell.status in ("pass", "warn")
    return ran


def render_mail(view: ReportView, tested_by: str) -> MailDraft:
    """A plain-text reply to the cover letter, to be sent by the user (never by us)."""
    s = view.series
    subject = str(s["subject"])
    if not subject.lower().startswith("re:"):
        subject = "Re: " + subject
    headers: list[tuple[str, str]] = [("Subject", subject)]
    if s.get("list"):
        headers.append(("To", str(s["list"])))
    if s.get("msgid"):
        headers += [("In-Reply-To", f"<{s['msgid']}>"), ("References", f"<{s['msgid']}>")]
    body = environment().get_template("mail.txt.j2").render(
        v=view, quoted=quote(str(s.get("cover", ""))), tested_by=tested_by,
        tested_ok=tested_ok(view))
    return MailDraft(headers=tuple(headers), body=body)


@dataclass(frozen=True)
class Written:
    html: Path
    markdown: Path
    results: Path | None
    mail: Path | None


def write_report(doc: Mapping[str, Any], out_dir: Path, *, tested_by: str | None = None,
                 write_results: bool = False) -> Written:
    """Render report.html and summary.md (and mail.txt, results.json) into *out_dir*."""
    from patchflow.workspace import atomic_write, atomic_write_json

    view = build_view(doc)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "report.html", render_html(view))
    atomic_write(out_dir / "summary.md", render_markdown(view))
    res = mail = None
    if write_results:
        res = out_dir / "results.json"
        atomic_write_json(res, doc)
    if tested_by is not None:
        mail = out_dir / "mail.txt"
        atomic_write(mail, render_mail(view, tested_by).as_text())
    return Written(out_dir / "report.html", out_dir / "summary.md", res, mail)
