"""Unit tests of patchflow.stats on known distributions."""

from __future__ import annotations

import math
import random

import pytest

from patchflow import stats


def test_exact_p_of_completely_separated_groups() -> None:
    # 5 vs 5, every B above every A: only 2 of C(10,5)=252 labellings are that extreme
    a, b = [1.0, 2, 3, 4, 5], [6.0, 7, 8, 9, 10]
    assert stats.mann_whitney_p(a, b) == pytest.approx(2 / 252)
    assert stats.min_p(5, 5) == pytest.approx(2 / 252)


def test_exact_p_matches_the_textbook_table() -> None:
    # n=m=4, U=1: the exact two-sided p is 2 * P(U<=1) = 2 * 2/70
    a, b = [1.0, 2, 3, 5], [4.0, 6, 7, 8]
    assert stats.u_statistic(a, b) == 1
    assert stats.mann_whitney_p(a, b) == pytest.approx(4 / 70)


def test_identical_samples_are_not_significant() -> None:
    a = [10.0, 10, 10, 10, 10]
    assert stats.mann_whitney_p(a, list(a)) == 1.0
    c = stats.compare("x", a, list(a), better="higher")
    # the unpaired test has no equivalence margin: not significant is not "no difference"
    assert c.verdict == stats.INCONCLUSIVE and c.change == 0


def test_three_reps_can_never_be_significant() -> None:
    c = stats.compare("bogo", [1.0, 2, 3], [10.0, 11, 12], better="higher")
    assert c.p_value == pytest.approx(0.1)
    assert c.verdict == stats.INCONCLUSIVE  # never an improvement without significance


def test_clear_improvement_and_regression_by_direction() -> None:
    rng = random.Random(1)
    a = [100 + rng.gauss(0, 2) for _ in range(8)]
    b = [120 + rng.gauss(0, 2) for _ in range(8)]
    up = stats.compare("bogo_ops_per_s", a, b, better="higher")
    assert up.verdict == stats.IMPROVED
    assert 0.15 < up.change < 0.25 and up.ci_low > 0.1 and up.ci_high < 0.3
    down = stats.compare("tlb_shootdowns", a, b, better="lower")
    assert down.verdict == stats.REGRESSED
    none = stats.compare("pgscan", a, b, better="none")
    assert none.verdict == stats.NOT_JUDGED


def test_same_distribution_is_mostly_not_significant() -> None:
    """Under H0 the test rejects at about alpha: a false-positive rate check."""
    rng = random.Random(7)
    trials, rejections = 200, 0
    for _ in range(trials):
        a = [rng.gauss(100, 5) for _ in range(6)]
        b = [rng.gauss(100, 5) for _ in range(6)]
        rejections += stats.mann_whitney_p(a, b) < 0.05
    assert rejections / trials < 0.1


def test_ties_are_handled() -> None:
    # U = 2 (the four 2-vs-2 ties count one half each), centre 8: of the C(8,4) = 70
    # relabellings of [1,1,2,2,2,2,3,3], 12 are at least as far from the centre
    # (enumerated by hand with exact fractions): p = 12/70
    a, b = [1.0, 1, 2, 2], [2.0, 2, 3, 3]
    assert stats.u_statistic(a, b) == 2
    assert stats.mann_whitney_p(a, b) == pytest.approx(12 / 70)


def test_monte_carlo_beyond_exact_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats, "EXACT_LIMIT", 10)
    monkeypatch.setattr(stats, "PERMUTATIONS", 2000)
    p = stats.mann_whitney_p([1.0, 2, 3, 4, 5], [6.0, 7, 8, 9, 10])
    assert p < 0.05 and p == pytest.approx(2 / 252, abs=0.01)


def test_bootstrap_ci_contains_the_point_estimate() -> None:
    a, b = [10.0, 11, 9, 10, 12], [12.0, 13, 11, 12, 14]
    lo, hi = stats.bootstrap_ci(a, b)
    assert lo <= stats.rel_change(a, b) <= hi


def test_zero_baseline() -> None:
    assert math.isnan(stats.rel_change([0.0, 0.0], [1.0, 1.0]))
    c = stats.compare("tlb", [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], better="lower")
    assert c.verdict == stats.INCONCLUSIVE


def test_bad_direction() -> None:
    with pytest.raises(ValueError):
        stats.compare("x", [1.0], [2.0], better="sideways")


# --------------------------------------------------------------------------
# the sequential paired design


def test_signed_rank_exact_p() -> None:
    # all 6 differences positive: 2 of 2^6 sign patterns are that extreme
    assert stats.signed_rank_p([1.0, 2, 3, 4, 5, 6]) == pytest.approx(2 / 64)
    # n=5, W+ = 1 (only the smallest negative... reversed): P(W+ <= 1) = 2/32 each side
    assert stats.signed_rank_p([-1.0, 2, 3, 4, 5]) == pytest.approx(4 / 32)
    # ties: |d| = 1,1,2 -> midranks 1.5,1.5,3; all positive is one of 8 patterns a side
    assert stats.signed_rank_p([1.0, 1, 2]) == pytest.approx(2 / 8)
    assert stats.signed_rank_p([0.0, 0.0]) == 1.0  # zeros are dropped: nothing to test


def test_hodges_lehmann_and_walsh() -> None:
    d = [1.0, 2.0, 6.0]
    assert stats.walsh_averages(d) == [1.0, 1.5, 2.0, 3.5, 4.0, 6.0]
    assert stats.hodges_lehmann(d) == pytest.approx(2.75)


def test_obf_spending() -> None:
    assert stats.obf_spending(1.0, 0.05) == 0.05
    assert stats.obf_spending(0.0, 0.05) == 0.0
    # alpha(0.5) = 2 - 2 Phi(1.96 / sqrt(0.5)) = 0.0056 (Lan & DeMets 1983, table 1 shape)
    assert stats.obf_spending(0.5, 0.05) == pytest.approx(0.00557, abs=1e-4)


@pytest.mark.parametrize("rounds", [3, 6, 8, 10, 14, 16])
def test_design_spends_at_most_alpha(rounds: int) -> None:
    plan = stats.design(rounds, 0.05)
    for n, spent in enumerate(plan.spent, start=1):
        assert spent <= stats.obf_spending(n / rounds, 0.05) + 1e-9
    assert plan.spent[-1] <= 0.05
    if rounds <= 5:  # 2 / 2^5 > alpha at every look: no verdict is ever possible
        assert plan.first_decisive() is None and plan.spent[-1] == 0
    else:
        assert plan.first_decisive() is not None and plan.spent[-1] > 0.025


def test_design_simulated_matches_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    exact = stats.design(10, 0.05)
    monkeypatch.setattr(stats, "EXACT_DESIGN_LIMIT", 5)
    sim = stats.design.__wrapped__(10, 0.05)
    assert not sim.exact and exact.exact
    # the boundary is discrete; a simulated one may differ by a step at a look
    for c_e, c_s in zip(exact.critical, sim.critical, strict=True):
        assert (c_e is None) == (c_s is None) or abs((c_e or 0) - (c_s or 0)) <= 4


def _sequential(rng: random.Random, shift: float, sd: float, rounds: int, *,
                mei: float = 0.1, drift: float = 0.0, heavy: bool = False) -> str:
    """One simulated bench of one metric: look after each round, stop when decided."""
    plan = stats.design(rounds, 0.05)
    a: list[float] = []
    b: list[float] = []
    for r in range(rounds):
        noise = [rng.gauss(0, sd) * (rng.expovariate(1) if heavy else 1) for _ in range(2)]
        # A B, B A: the run second in a round sees the drift first
        t_a, t_b = (2 * r, 2 * r + 1) if r % 2 == 0 else (2 * r + 1, 2 * r)
        a.append(100 * (1 + drift * t_a) * (1 + noise[0]))
        b.append(100 * (1 + shift) * (1 + drift * t_b) * (1 + noise[1]))
        c = stats.compare_paired("bogo", a, b, better="higher", plan=plan, mei=mei)
        if c.decided:
            return c.verdict
    return c.verdict


@pytest.mark.parametrize(("rounds", "drift", "heavy"), [(10, 0.0, False), (10, 0.004, False),
                                                        (8, 0.0, True), (16, 0.0, False)])
def test_sequential_type_one_error(rounds: int, drift: float, heavy: bool) -> None:
    """Null runs (no shift), looked at after every round: false verdicts <= alpha + tolerance."""
    rng = random.Random(1234 + rounds)
    trials = 1500
    verdicts = [_sequential(rng, 0.0, 0.08, rounds, drift=drift, heavy=heavy)
                for _ in range(trials)]
    false = sum(v in (stats.IMPROVED, stats.REGRESSED) for v in verdicts)
    # alpha 0.05; binomial sd at 1500 trials is 0.0056: 0.015 is ~2.7 sd of slack
    assert false / trials <= 0.05 + 0.015


def test_no_difference_claim_excludes_the_margin() -> None:
    """A true change as large as the margin is claimed "no difference" at most alpha."""
    rng = random.Random(99)
    trials = 1000
    verdicts = [_sequential(rng, 0.10, 0.03, 10, mei=0.10) for _ in range(trials)]
    wrong = sum(v == stats.NO_DIFFERENCE for v in verdicts)
    assert wrong / trials <= 0.05 + 0.02


def test_sequential_power_on_shifts() -> None:
    """Power of the default 10-round design on simulated shifts (8% run-to-run noise)."""
    rng = random.Random(5)

    def power(shift: float) -> float:
        vs = [_sequential(rng, shift, 0.08, 10) for _ in range(300)]
        want = stats.IMPROVED if shift > 0 else stats.REGRESSED
        return sum(v == want for v in vs) / len(vs)

    assert power(-0.30) >= 0.95   # a regression like the fixture's is always caught
    assert power(0.20) >= 0.70    # the seed's +20% claim, confirmed most of the time
    assert power(0.02) <= 0.20    # a small shift is mostly not called


def test_quiet_identical_runs_are_no_difference() -> None:
    plan = stats.design(10, 0.05)
    rng = random.Random(3)
    a = [100 + rng.gauss(0, 0.5) for _ in range(8)]
    b = [x + rng.gauss(0, 0.5) for x in a]
    c = stats.compare_paired("bogo", a, b, better="higher", plan=plan, mei=0.05)
    assert c.verdict == stats.NO_DIFFERENCE
    assert c.ci_low is not None and c.ci_high is not None and -0.05 < c.ci_low < c.ci_high < 0.05


def test_early_look_is_inconclusive_with_no_interval() -> None:
    plan = stats.design(10, 0.05)
    c = stats.compare_paired("bogo", [100.0, 101, 99], [50.0, 51, 49], better="higher",
                             plan=plan, mei=0.1)
    assert c.verdict == stats.INCONCLUSIVE and c.ci_low is None and c.p_threshold == 0
    assert c.change == pytest.approx(-0.5)


def test_clear_regression_at_the_first_decisive_look() -> None:
    plan = stats.design(10, 0.05)
    a = [100.0, 102, 98, 101, 99, 100, 103]
    b = [60.0, 61, 59, 62, 58, 60, 61]
    c = stats.compare_paired("bogo", a, b, better="higher", plan=plan, mei=0.1)
    assert c.verdict == stats.REGRESSED and c.p_value <= c.p_threshold
    assert c.ci_high is not None and c.ci_high < 0
    down = stats.compare_paired("tlb", a, b, better="lower", plan=plan, mei=0.1)
    assert down.verdict == stats.IMPROVED
