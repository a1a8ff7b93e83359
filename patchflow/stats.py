"""Comparison statistics for A/B benchmark samples, in pure Python (no scipy).

Owns every judgement of a benchmark comparison:

* the bench's verdict: a **group-sequential paired test** (below), used by
  :mod:`patchflow.bench.ab`;
* the older unpaired tools: the median, a bootstrap interval of the relative
  change of the median, and the exact two-sided Mann-Whitney U test (every
  relabelling enumerated while that is cheap, seeded Monte-Carlo beyond).

The sequential rule (:func:`design`, :func:`compare_paired`)
-------------------------------------------------------------
A bench is rounds of one base and one patched boot (A B, B A, ...); round *n*
gives the paired difference ``d_n = B_n - A_n`` of each metric.  After every
round *n* (a "look") each judged metric is tested with **Wilcoxon's signed-rank
test** on ``d_1..d_n`` (exact null distribution; zeros dropped, midranks for
ties) against a **group-sequential boundary**: the type-I error is spent over
the looks with the **Lan-DeMets O'Brien-Fleming-type spending function**
``alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t))``, ``t = n / N`` (*N*: the planned
maximum number of rounds, the profile's ``reps``).  The per-look critical values
come from the *joint* null distribution of the signed-rank statistics at all
looks, which is distribution-free (under H0 the signs are fair coins
independent of the ranks of ``|d|``, and each new ``|d|`` falls at a uniformly
random rank among the previous ones); :func:`design` computes it exactly by
dynamic programming over the sign patterns for ``N <= EXACT_DESIGN_LIMIT``
and by a seeded simulation of the same process beyond.  Because the statistic
is discrete, each look takes the largest rejection region whose cumulative
null probability stays within ``alpha(t)``: the overall type-I error is at
most ``alpha`` (tests/unit/test_stats.py::test_sequential_type_one_error).

The estimate is the **Hodges-Lehmann** shift (median of the Walsh averages of
the differences) and the interval is the matching **repeated confidence
interval** (Jennison & Turnbull 1989): the shifts the sequential test would not
reject at this look, read off the ordered Walsh averages.  Repeated intervals
cover the true shift at every look simultaneously with probability at least
``1 - alpha``, so the verdict is valid at whatever look the bench stops, for
every metric, including a stop forced by the time budget.  Verdicts:

* ``improved`` / ``regressed``: the signed-rank p is at or below the look's
  nominal threshold *and* the interval excludes zero (the direction is the
  metric's declared "better");
* ``no significant difference``: an equivalence claim, allowed only when the
  whole interval lies inside ``+-mei`` (the metric's minimal effect of interest,
  relative to the base median, :data:`patchflow.bench.metrics.METRICS`): a
  change of at least ``mei`` is then excluded at level ``alpha``;
* ``inconclusive``: anything else, when the rounds or the budget run out.

References: P. C. O'Brien, T. R. Fleming, "A multiple testing procedure for
clinical trials", Biometrics 35 (1979); K. K. G. Lan, D. L. DeMets, "Discrete
sequential boundaries for clinical trials", Biometrika 70 (1983); C. Jennison,
B. W. Turnbull, "Interim analyses: the repeated confidence interval approach",
JRSS B 51 (1989) and *Group Sequential Methods with Applications to Clinical
Trials* (2000); F. Wilcoxon (1945); J. L. Hodges, E. L. Lehmann (1963).
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

IMPROVED = "improved"
REGRESSED = "regressed"
NO_DIFFERENCE = "no significant difference"
INCONCLUSIVE = "inconclusive"
DECIDED = (IMPROVED, REGRESSED, NO_DIFFERENCE)
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

    ``change`` and the interval are relative to the base median (0.25 is
    +25%); None where the base median is 0 and a ratio means nothing, or (the
    interval) where this look cannot reject anything yet.  The fields after
    ``verdict`` describe the sequential paired test (:func:`compare_paired`);
    records written before it have their defaults (``method`` "mann-whitney").
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
    method: str = "mann-whitney"
    #: the nominal p this look had to reach (the boundary); 0 = no verdict possible yet
    p_threshold: float | None = None
    #: the minimal effect of interest (relative): "no significant difference" excludes it
    mei: float | None = None
    #: the planned maximum number of rounds (pairs) of the design
    planned: int = 0

    @property
    def significant(self) -> bool:
        return self.verdict in (IMPROVED, REGRESSED)

    @property
    def decided(self) -> bool:
        return self.verdict in DECIDED


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else x


def compare(metric: str, a: Sequence[float], b: Sequence[float], *, better: str,
            alpha: float = 0.05, level: float = 0.95, seed: int = 0) -> Comparison:
    """Compare variant B (patched) against A (baseline) for one metric, unpaired.

    "improved"/"regressed" only when the Mann-Whitney test is significant at
    *alpha* and the bootstrap interval of the median's change excludes zero;
    otherwise "inconclusive" (this test has no equivalence margin, so it never
    claims "no significant difference").
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
        verdict = INCONCLUSIVE
    else:
        up = median(b) > median(a)
        verdict = IMPROVED if up == (better == "higher") else REGRESSED
    return Comparison(metric, better, len(a), len(b), median(a), median(b), _finite(change),
                      _finite(lo), _finite(hi), p, alpha, verdict)


# --------------------------------------------------------------------------
# the sequential paired design: the bench's verdict (module docstring)

#: planned rounds up to which :func:`design` enumerates every sign pattern (2^N states)
EXACT_DESIGN_LIMIT = 14
#: simulated null paths of :func:`design` beyond that (seeded: the same boundary every run)
DESIGN_PATHS = 40_000
_EPS = 1e-12


def obf_spending(t: float, alpha: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type alpha spent by information fraction *t*."""
    if t <= 0:
        return 0.0
    if t >= 1:
        return alpha
    nd = statistics.NormalDist()
    return 2 * (1 - nd.cdf(nd.inv_cdf(1 - alpha / 2) / math.sqrt(t)))


def _null_counts(ranks2: Sequence[int]) -> list[int]:
    """How many of the 2^n sign patterns give each (doubled) positive-rank sum."""
    counts = [1] + [0] * sum(ranks2)
    top = 0
    for r in ranks2:
        top += r
        for s in range(top, r - 1, -1):
            counts[s] += counts[s - r]
    return counts


def _doubled_midranks(values: Sequence[float]) -> list[int]:
    """Twice the ascending midranks of *values* (integers even with ties)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = i + j + 2
        i = j + 1
    return out


def signed_rank_p(d: Sequence[float]) -> float:
    """Exact two-sided p of Wilcoxon's signed-rank test of "d is centred on 0".

    Zeros are dropped (Wilcoxon's convention) and tied ``|d|`` get midranks;
    the null distribution is enumerated for exactly those ranks.
    """
    nz = [x for x in d if x != 0]
    if not nz:
        return 1.0
    r2 = _doubled_midranks([abs(x) for x in nz])
    counts = _null_counts(r2)
    total = sum(r2)
    t = sum(r for r, x in zip(r2, nz, strict=True) if x > 0)
    dev = abs(2 * t - total)
    hits = sum(c for s, c in enumerate(counts) if c and abs(2 * s - total) >= dev)
    return min(1.0, hits / (1 << len(nz)))


def walsh_averages(d: Sequence[float]) -> list[float]:
    """Every (d_i + d_j) / 2 with i <= j, sorted."""
    return sorted((d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d)))


def hodges_lehmann(d: Sequence[float]) -> float:
    """The Hodges-Lehmann shift estimate: the median of the Walsh averages."""
    return median(walsh_averages(d))


@dataclass(frozen=True)
class Design:
    """A planned sequential design: the boundary at each look n = 1..rounds.

    ``critical[n-1]``: the smallest ``|2 W+ - n(n+1)/2|`` that rejects at look n
    (None: nothing can be rejected there yet); ``thresholds[n-1]``: the same as
    a nominal two-sided signed-rank p; ``spent[n-1]``: the null probability of
    having rejected by look n (at most ``alpha(n / rounds)``).
    """

    rounds: int
    alpha: float
    critical: tuple[int | None, ...]
    thresholds: tuple[float, ...]
    spent: tuple[float, ...]
    exact: bool

    def first_decisive(self) -> int | None:
        """The first look at which a verdict is possible at all."""
        return next((n for n, c in enumerate(self.critical, start=1) if c is not None), None)


def _critical(devs: dict[int, float], allowed: float) -> int | None:
    """The smallest deviation whose null tail mass (dev >= it) is within *allowed*."""
    tail, best = 0.0, None
    for dev in sorted(devs, reverse=True):
        tail += devs[dev]
        if tail > allowed + _EPS:
            break
        best = dev
    return best


def _fixed_tail(n: int, crit: int | None) -> float:
    """P(|2W+ - T| >= crit) for n untied ranks: the look's nominal p threshold."""
    if crit is None:
        return 0.0
    counts = _null_counts([2 * r for r in range(1, n + 1)])
    total = n * (n + 1)
    hits = sum(c for s, c in enumerate(counts) if c and abs(2 * s - total) // 2 >= crit)
    return hits / (1 << n)


def _insert(mask: int, w: int, j: int, bit: int) -> tuple[int, int]:
    """A new |d| at ascending rank j (0-based): the signs above it move one rank up."""
    above = mask >> j
    new = (mask & ((1 << j) - 1)) | (above << (j + 1)) | (bit << j)
    return new, w + above.bit_count() + (j + 1 if bit else 0)


#: null mass of the design's dynamic programme: key -> (probability, W+, sign pattern)
_States = dict[int, tuple[float, int, int]]


def _look(states: _States, n: int, allowed: float) -> tuple[_States, int | None, float]:
    """Reject the surviving null mass beyond the look's boundary; returns what survives."""
    total = n * (n + 1) // 2
    devs: dict[int, float] = {}
    for p, w, _m in states.values():
        dev = abs(2 * w - total)
        devs[dev] = devs.get(dev, 0.0) + p
    crit = _critical(devs, allowed)
    if crit is None:
        return states, None, 0.0
    rejected = sum(p for p, w, _m in states.values() if abs(2 * w - total) >= crit)
    kept = {k: v for k, v in states.items() if abs(2 * v[1] - total) < crit}
    return kept, crit, rejected


def _grow_exact(states: _States, n: int) -> _States:
    """Every sign pattern of n pairs: the n-th |d| at each rank, with each sign."""
    new: _States = {}
    for mask, (p, w, _m) in states.items():
        q = p / (2 * n)
        for j in range(n):
            for bit in (0, 1):
                m2, w2 = _insert(mask, w, j, bit)
                new[m2] = (new[m2][0] + q if m2 in new else q, w2, m2)
    return new


def _grow_paths(states: _States, n: int, rng: random.Random) -> _States:
    """Simulated null paths (key: path number): the n-th |d| at a random rank and sign."""
    out: _States = {}
    for k, (p, w, mask) in states.items():
        m2, w2 = _insert(mask, w, rng.randrange(n), rng.randrange(2))
        out[k] = (p, w2, m2)
    return out


@functools.lru_cache(maxsize=64)
def design(rounds: int, alpha: float) -> Design:
    """The O'Brien-Fleming-type (Lan-DeMets) boundary for *rounds* planned looks.

    Exact for ``rounds <= EXACT_DESIGN_LIMIT`` (every sign pattern and rank
    order weighted by its null probability), else from :data:`DESIGN_PATHS`
    simulated null paths with a fixed seed.
    """
    if rounds < 1 or not 0 < alpha < 1:
        raise ValueError(f"a design needs rounds >= 1 and 0 < alpha < 1 ({rounds}, {alpha})")
    exact = rounds <= EXACT_DESIGN_LIMIT
    rng = random.Random(0)
    states: _States = ({0: (1.0, 0, 0)} if exact else
                       {k: (1 / DESIGN_PATHS, 0, 0) for k in range(DESIGN_PATHS)})
    crits: list[int | None] = []
    spent: list[float] = []
    done = 0.0
    for n in range(1, rounds + 1):
        states = _grow_exact(states, n) if exact else _grow_paths(states, n, rng)
        states, crit, rejected = _look(states, n, obf_spending(n / rounds, alpha) - done)
        done += rejected
        crits.append(crit)
        spent.append(done)
    return Design(rounds, alpha, tuple(crits),
                  tuple(_fixed_tail(n, c) for n, c in enumerate(crits, start=1)),
                  tuple(spent), exact)


def repeated_ci(d: Sequence[float], crit: int | None) -> tuple[float, float] | None:
    """The shifts the look's boundary would not reject, from the ordered Walsh averages.

    The test of "shift = theta" rejects when ``W+(d - theta) <= w`` or ``>= T - w``
    with ``w = (T - crit) // 2``; ``W+(d - theta)`` counts the Walsh averages above
    theta, so the accepted thetas run from the (w+1)-th to the (M-w)-th of them.
    None while the look cannot reject anything (the interval is unbounded).
    """
    n = len(d)
    if crit is None or n == 0:
        return None
    w = (n * (n + 1) // 2 - crit) // 2
    walsh = walsh_averages(d)
    return walsh[w], walsh[len(walsh) - 1 - w]


def _rel(x: float, base: float) -> float | None:
    return x / abs(base) if base else None


def paired_verdict(better: str, significant: bool, up: bool, equivalent: bool) -> str:
    """The verdict word (module docstring) from what the look established."""
    if better == "none":
        return NOT_JUDGED
    if significant:
        return IMPROVED if up == (better == "higher") else REGRESSED
    return NO_DIFFERENCE if equivalent else INCONCLUSIVE


def compare_paired(metric: str, a: Sequence[float], b: Sequence[float], *, better: str,
                   plan: Design, mei: float) -> Comparison:
    """Judge pairs ``(a[i], b[i])`` (round i's base and patched run) at look ``len(a)``.

    See the module docstring: the signed-rank p against the look's boundary, the
    Hodges-Lehmann shift and its repeated interval, relative to the base median.
    """
    if better not in DIRECTIONS:
        raise ValueError(f"better must be one of {DIRECTIONS}, not {better!r}")
    if len(a) != len(b) or not a:
        raise ValueError("paired samples need equal, non-zero lengths")
    n = len(a)
    d = [y - x for x, y in zip(a, b, strict=True)]
    crit = plan.critical[n - 1] if n <= plan.rounds else None
    threshold = plan.thresholds[n - 1] if n <= plan.rounds else 0.0
    ci = repeated_ci(d, crit)
    p = signed_rank_p(d)
    shift, base = hodges_lehmann(d), median(a)
    significant = (ci is not None and p <= threshold + _EPS and (ci[0] > 0 or ci[1] < 0))
    margin = mei * abs(base)
    equivalent = ci is not None and base != 0 and -margin < ci[0] and ci[1] < margin
    lo, hi = (None, None) if ci is None else (_rel(ci[0], base), _rel(ci[1], base))
    return Comparison(metric, better, n, n, base, median(b), _rel(shift, base), lo, hi, p,
                      plan.alpha, paired_verdict(better, significant, shift > 0, equivalent),
                      "wilcoxon-signed-rank, group-sequential (OBF spending)", threshold, mei,
                      plan.rounds)
