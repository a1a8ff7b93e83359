"""The verdict's error rates: A/A false positives, and power from measured noise.

Owns what ``benchmarks/bench_aa.py``, ``bench_regression.py`` and
``bench_power.py`` compute from bench results (the benches themselves run
through :func:`patchflow.bench.stage.bench_target`, exactly as ``patchflow
bench`` does):

* :func:`false_positive_rates`: per metric, how many A/A benches (base against
  itself) ended "improved" or "regressed": every such verdict is a false
  positive;
* :func:`paired_noise`: the relative paired differences ``(B - A) / median(A)``
  of every complete A/A round, per metric: the measured run-to-run noise of
  one round of the protocol;
* :func:`simulated_power` / :func:`smallest_detectable`: the sequential design
  of :mod:`patchflow.stats` run on rounds drawn (with replacement) from that
  measured noise (centred on 0) plus a known relative shift.  This combines *measured* noise
  with *simulated* effects: it assumes the noise of a round does not depend
  on the patch (a patch that changes the noise changes the power).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from patchflow import stats
from patchflow.bench.ab import BenchDetails
from patchflow.bench.metrics import METRICS
from patchflow.config import WorkspaceConfig
from patchflow.errors import UserError
from patchflow.result import Progress, StageResult, quiet
from patchflow.typed import TypedError
from patchflow.workspace import Workspace, atomic_write_json

#: the relative shifts :func:`smallest_detectable` tries: 1% to 60% in 1% steps
GRID = tuple(i / 100 for i in range(1, 61))


@dataclass(frozen=True)
class RateRow:
    """One metric's verdicts over N A/A benches."""

    metric: str
    benches: int
    false_positives: int
    no_difference: int
    inconclusive: int
    alpha: float

    @property
    def rate(self) -> float:
        return self.false_positives / self.benches if self.benches else 0.0


def run_bench(ws: Workspace, target: str, out: Path, *, aa: bool = False,
              kernels: Mapping[str, Path] | None = None, settings: WorkspaceConfig | None = None,
              progress: Progress = quiet) -> StageResult:
    """One bench exactly as ``patchflow bench`` runs it; the result is saved as *out*."""
    from patchflow.bench.stage import bench_target
    from patchflow.context import StageContext
    from patchflow.state import State

    with State(ws.db_path) as st:
        ctx = StageContext.make(ws, st, log=out.with_suffix(".log"),
                                target=ws.config.target(target), settings=settings,
                                run_dir=out.parent / out.stem, progress=progress)
        res = bench_target(ctx, aa=aa, kernels=kernels)
    atomic_write_json(out, res.to_json())
    return res


def load_results(paths: Iterable[Path]) -> list[StageResult]:
    """Bench results saved as ``StageResult.to_json()`` files (one per bench)."""
    out = []
    for p in paths:
        try:
            out.append(StageResult.from_json(json.loads(p.read_text()), str(p)))
        except (OSError, ValueError, TypedError) as exc:
            raise UserError(f"{p}: not a saved bench result ({exc})") from None
    return out


def details(results: Iterable[StageResult]) -> list[BenchDetails]:
    """The bench details of the results that measured something."""
    return [d for r in results if (d := r.detail(BenchDetails)) is not None and d.comparisons]


def false_positive_rates(benches: Sequence[BenchDetails]) -> list[RateRow]:
    """Per judged metric: A/A verdicts that claimed a difference."""
    rows = []
    for m in METRICS.values():
        comps = [c for d in benches if (c := d.comparison(m.name)) is not None]
        if m.better == "none" or not comps:
            continue
        rows.append(RateRow(m.name, len(comps), sum(c.significant for c in comps),
                            sum(c.verdict == stats.NO_DIFFERENCE for c in comps),
                            sum(c.verdict == stats.INCONCLUSIVE for c in comps),
                            comps[0].alpha))
    return rows


def paired_noise(benches: Sequence[BenchDetails], metric: str) -> list[float]:
    """``(B - A) / median(A)`` of every complete round of every bench, for *metric*."""
    out: list[float] = []
    for d in benches:
        variants = list(dict.fromkeys(s.variant for s in d.samples))
        if len(variants) != 2:
            continue
        by = {(s.variant, s.rep): s.value for s in d.samples if s.metric == metric}
        pairs = [(by[(variants[0], r)], by[(variants[1], r)]) for r in sorted({k for _, k in by})
                 if (variants[0], r) in by and (variants[1], r) in by]
        base = stats.median([a for a, _ in pairs]) if pairs else 0.0
        if base:
            out.extend((b - a) / abs(base) for a, b in pairs)
    return out


def _one_bench(rng: random.Random, noise: Sequence[float], shift: float, plan: stats.Design,
               better: str, mei: float) -> str:
    """One simulated sequential bench of one metric; the verdict it stops with."""
    a: list[float] = []
    b: list[float] = []
    verdict = stats.INCONCLUSIVE
    for _ in range(plan.rounds):
        a.append(1.0)
        b.append(1.0 + shift + noise[rng.randrange(len(noise))])
        verdict = stats.compare_paired("m", a, b, better=better, plan=plan, mei=mei).verdict
        if verdict in stats.DECIDED:
            break
    return verdict


def simulated_power(noise: Sequence[float], shift: float, plan: stats.Design, *,
                    better: str = "higher", mei: float = 0.10, trials: int = 400,
                    seed: int = 0) -> float:
    """How often a relative *shift* is called in its direction (improved or regressed)."""
    if not noise:
        raise ValueError("no measured noise to resample")
    # A/A rounds have no true shift: their sample median is sampling error, and
    # left in it would be added to every simulated shift
    centre = stats.median(noise)
    noise = [e - centre for e in noise]
    rng = random.Random(seed)
    want = stats.IMPROVED if (shift > 0) == (better == "higher") else stats.REGRESSED
    hits = sum(_one_bench(rng, noise, shift, plan, better, mei) == want for _ in range(trials))
    return hits / trials


def smallest_detectable(noise: Sequence[float], plan: stats.Design, *, better: str,
                        sign: int = -1, power: float = 0.8, mei: float = 0.10,
                        grid: Sequence[float] = GRID,
                        trials: int = 400) -> tuple[float, float] | None:
    """The smallest |shift| on *grid* (in direction *sign*) detected with *power*, and its power."""
    for step in grid:
        p = simulated_power(noise, sign * step, plan, better=better, mei=mei, trials=trials)
        if p >= power:
            return step, p
    return None
