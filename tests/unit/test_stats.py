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
    assert c.verdict == stats.NO_DIFFERENCE and c.change == 0


def test_three_reps_can_never_be_significant() -> None:
    c = stats.compare("bogo", [1.0, 2, 3], [10.0, 11, 12], better="higher")
    assert c.p_value == pytest.approx(0.1)
    assert c.verdict == stats.NO_DIFFERENCE  # never an improvement without significance


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
    assert c.verdict == stats.NO_DIFFERENCE


def test_bad_direction() -> None:
    with pytest.raises(ValueError):
        stats.compare("x", [1.0], [2.0], better="sideways")
