"""The convergence rate L (BDNN-dsd eq. 4.1, BSP eq. 6) on hand-made curves with known answers."""

import math

import pytest

from devnets.convergence import convergence, convergence_rate, first_epochs, mean_std, paired_rates

BASELINE = [10, 20, 30, 40, 50]
FAST = [30, 50, 50, 50, 50]


def test_first_epochs_are_one_based_and_count_the_first_epoch_at_or_above_the_level():
    assert first_epochs([10, 30, 20, 40], [5, 10, 20, 25, 30, 40]).tolist() == [1, 1, 2, 2, 2, 4]


def test_rate_is_baseline_epochs_over_method_epochs_where_they_differ_most():
    # first epochs at levels 10..50: baseline 1 2 3 4 5, method 1 1 1 2 2; the gap is largest (3) at 50
    result = convergence(FAST, BASELINE)
    assert (result.level, result.epoch_reference, result.epoch_method) == (50, 5, 2)
    assert result.rate == 2.5


def test_a_method_slower_than_the_baseline_has_rate_below_one():
    assert convergence_rate(BASELINE, FAST) == pytest.approx(0.4)
    assert convergence_rate(BASELINE, FAST) == pytest.approx(1 / convergence_rate(FAST, BASELINE))


def test_a_tie_in_the_epoch_gap_is_resolved_at_the_highest_level():
    # gaps 0 1 1 1 at levels 0 10 20 30: the highest tied level, 30, gives 4/3 (level 10 would give 2)
    result = convergence([10, 20, 30, 30], [0, 10, 20, 30])
    assert result.level == 30
    assert result.rate == pytest.approx(4 / 3)


def test_identical_curves_give_one():
    assert convergence_rate(BASELINE, BASELINE) == 1.0


def test_only_levels_both_curves_reach_count():
    # the method never drops to 30 or below, so it reaches every common level (≤ 30) at epoch 1
    result = convergence([60, 70], [10, 20, 30])
    assert (result.level, result.rate) == (30, 3.0)


def test_a_dip_does_not_undo_reaching_a_level():
    assert convergence_rate([50, 40, 60], [10, 20, 30, 40, 50, 60]) == 5.0


def test_missing_epochs_reach_nothing():
    assert convergence_rate([math.nan, 50, 60], [40, 50, 60]) == pytest.approx(1 / 2)


@pytest.mark.parametrize("curve", [[], [math.nan, math.nan], [None]])
def test_curves_that_never_meet_give_nan(curve):
    assert math.isnan(convergence_rate(curve, BASELINE))
    assert math.isnan(convergence_rate(BASELINE, curve))


def test_rate_against_another_method_pairs_seeds():
    dropout = {0: [20, 30, 40], 1: [10, 20, 40], 5: [10, 10, 10]}
    bsp = {0: [40, 40, 40], 1: [20, 40, 40], 2: [40, 40, 40]}
    assert paired_rates(bsp, dropout) == {0: 3.0, 1: 1.5}


def test_mean_std_is_the_sample_std_over_finite_values():
    assert mean_std([2.0, 4.0, 6.0]) == (4.0, 2.0, 3)
    mean, std, count = mean_std([math.nan, 1.0, 3.0])
    assert (mean, count) == (2.0, 2) and std == pytest.approx(math.sqrt(2))
    mean, std, count = mean_std([5.0])
    assert (mean, count) == (5.0, 1) and math.isnan(std)
    mean, std, count = mean_std([])
    assert count == 0 and math.isnan(mean) and math.isnan(std)
