"""Comparison statistics for A/B benchmark samples, in pure Python (no scipy).

Owns the median, the bootstrap confidence interval of the relative change of
the median, the two-sided Mann-Whitney U test (exact: every relabelling is
enumerated while that is cheap, a seeded Monte-Carlo permutation test beyond),
and the per-metric verdict.  The verdict never says "improved" or "regressed"
unless the test is significant *and* the interval excludes zero.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

IMPROVED = "improved"
REGRESSED = "regressed"
NO_DIFFERENCE = "no significant difference"
NOT_JUDGED = "not judged"  # a metric with no "better" direction (reported only)
DIRECTIONS = ("higher", "lower", "none")

#: above this many relabellings the exact test switches to Monte-Carlo
EXACT_LIMIT = 50_000
PERMUTATIONS = 20_000


def median(xs: Sequence[float]) -> float:
    if not xs:
        raise ValueError("median of no samples")
    return float(statistics.median(xs))


def rel_change(a: Sequence[float], b: Sequence[float]) -> float:
    """(median(b) - median(a)) / |median(a)|; ``nan`` when the baseline median is 0."""
    ma = median(a)
    if ma == 0:
        return 0.0 if median(b) == 0 else math.nan
    return (median(b) - ma) / abs(ma)


def bootstrap_ci(a: Sequence[float], b: Sequence[float], *, level: float = 0.95,
                 resamples: int = 5000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`rel_change`, resampling each group."""
    rng = random.Random(seed)
    vals: list[float] = []
    for _ in range(resamples):
        ra = [a[rng.randrange(len(a))] for _ in a]
        rb = [b[rng.randrange(len(b))] for _ in b]
        v = rel_change(ra, rb)
        if not math.isnan(v):
            vals.append(v)
    if not vals:
        return (math.nan, math.nan)
    vals.sort()
    lo = vals[int(math.floor((1 - level) / 2 * (len(vals) - 1)))]
    hi = vals[int(math.ceil((1 + level) / 2 * (len(vals) - 1)))]
    return (lo, hi)


def u_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """Mann-Whitney U of *a*: pairs where a > b, ties counting one half."""
    return sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in a for y in b)


def mann_whitney_p(a: Sequence[float], b: Sequence[float], *, seed: int = 0) -> float:
    """Two-sided p-value of the Mann-Whitney U test by permutation of the labels.

    Exact (all C(n+m, n) relabellings) while that is at most :data:`EXACT_LIMIT`;
    ties are handled naturally because the statistic is recomputed per labelling.
    """
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        raise ValueError("both groups need samples")
    pooled = list(a) + list(b)
    centre = n * m / 2
    observed = abs(u_statistic(a, b) - centre)

    def extreme(idx: Sequence[int]) -> bool:
        chosen = set(idx)
        ga = [pooled[i] for i in idx]
        gb = [pooled[i] for i in range(n + m) if i not in chosen]
        # a float tolerance so that equal statistics count as "as extreme"
        return abs(u_statistic(ga, gb) - centre) >= observed - 1e-9

    total = math.comb(n + m, n)
    if total <= EXACT_LIMIT:
        hits = sum(1 for idx in itertools.combinations(range(n + m), n) if extreme(idx))
        return hits / total
    rng = random.Random(seed)
    hits = 0
    for _ in range(PERMUTATIONS):
        hits += extreme(rng.sample(range(n + m), n))
    # +1 on both sides: a Monte-Carlo p-value is never exactly 0
    return (hits + 1) / (PERMUTATIONS + 1)


def min_p(n: int, m: int) -> float:
    """The smallest two-sided p the exact test can give with n and m samples."""
    return 2 / math.comb(n + m, n) if n and m else 1.0


@dataclass(frozen=True)
class Comparison:
    """Variant B (patched) against A (baseline) for one metric: the one judgement.

    ``change`` and the interval are relative changes of the median (0.25 is
    +25%); None where the baseline median is 0 and a ratio means nothing.
    """

    metric: str
    better: str  # "higher", "lower" or "none"
    n_a: int
    n_b: int
    median_a: float
    median_b: float
    change: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float
    alpha: float
    verdict: str

    @property
    def significant(self) -> bool:
        return self.verdict in (IMPROVED, REGRESSED)


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else x


def compare(metric: str, a: Sequence[float], b: Sequence[float], *, better: str,
            alpha: float = 0.05, level: float = 0.95, seed: int = 0) -> Comparison:
    """Compare variant B (patched) against A (baseline) for one metric.

    "improved"/"regressed" only when the Mann-Whitney test is significant at
    *alpha* and the bootstrap interval of the median's change excludes zero.
    """
    if better not in DIRECTIONS:
        raise ValueError(f"better must be one of {DIRECTIONS}, not {better!r}")
    change = rel_change(a, b)
    lo, hi = bootstrap_ci(a, b, level=level, seed=seed)
    p = mann_whitney_p(a, b, seed=seed)
    significant = p < alpha and not math.isnan(lo) and (lo > 0 or hi < 0)
    if better == "none":
        verdict = NOT_JUDGED
    elif not significant:
        verdict = NO_DIFFERENCE
    else:
        up = median(b) > median(a)
        verdict = IMPROVED if up == (better == "higher") else REGRESSED
    return Comparison(metric, better, len(a), len(b), median(a), median(b), _finite(change),
                      _finite(lo), _finite(hi), p, alpha, verdict)
