"""Private partition selection: keep tables, thresholds and worked values of docs/privacy.md §6."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from dp_ops.calibration import delta_for_rho, rho_for_epsilon_delta
from dp_ops.noise import DiscreteGaussian, DiscreteLaplace
from dp_ops.selection import (
    gaussian_threshold,
    keep_probabilities,
    laplace_threshold,
    per_partition_budget,
    truncated_geometric_keep_table,
)
from dp_ops.selection_rules import (
    GaussianThresholdSelection,
    LaplaceThresholdSelection,
    TruncatedGeometricSelection,
)

TABLE_PARAMETERS = [
    (1.0, 1e-5),
    (1 / 3, 1e-5 / 3),
    (0.1, 1e-8),
    (2.0, 1e-6),
    (0.01, 1e-10),
    (5.0, 1e-3),
    (1.0, 1e-15),
    (0.5, 0.2),
]
TOLERANCE = 1e-12


def assert_dp_table(table: np.ndarray, epsilon: float, delta: float) -> None:
    """Both (ε, δ) inequalities at every n, including n = len (where π = 1)."""
    e = math.exp(epsilon)
    pi = np.concatenate([table, [1.0]])  # index len(table) means 1.0
    previous, current = pi[:-1], pi[1:]
    assert np.all(current <= e * previous + delta + TOLERANCE)
    assert np.all(1 - previous <= e * (1 - current) + delta + TOLERANCE)
    # The reverse directions follow from monotonicity.
    assert np.all(np.diff(pi) >= 0)


@pytest.mark.parametrize(("epsilon", "delta"), TABLE_PARAMETERS)
def test_keep_table_satisfies_the_dp_inequalities(epsilon: float, delta: float) -> None:
    table = truncated_geometric_keep_table(epsilon, delta)
    assert table[0] == 0.0
    assert table[-1] == 1.0
    assert np.all(table[:-1] < 1.0)  # ends at its first 1.0
    assert_dp_table(table, epsilon, delta)


@pytest.mark.parametrize(("epsilon", "delta"), TABLE_PARAMETERS)
def test_keep_table_is_the_optimal_recursion(epsilon: float, delta: float) -> None:
    """Rounding only ever lowers π(n), and by no more than float noise."""
    table = truncated_geometric_keep_table(epsilon, delta)
    for n in range(1, len(table)):
        previous = table[n - 1]
        ideal = min(
            math.exp(epsilon) * previous + delta,
            1 - math.exp(-epsilon) * (1 - previous - delta),
            1.0,
        )
        assert table[n] <= ideal + TOLERANCE
        assert table[n] >= ideal - 1e-12 or (ideal >= 1 and 1 - previous <= delta + 1e-12)


def test_keep_table_length_is_logarithmic() -> None:
    epsilon, delta = 0.1, 1e-8
    table = truncated_geometric_keep_table(epsilon, delta)
    assert len(table) <= 2 * math.log(1 / delta) / epsilon + 10


@pytest.mark.parametrize(("l0", "half_at"), [(1, 12), (3, 33)])
def test_truncated_geometric_worked_values(l0: int, half_at: int) -> None:
    rule = TruncatedGeometricSelection(epsilon=1.0, delta=1e-5, max_partitions_per_unit=l0)
    first_half = next(n for n in range(1, 1000) if rule.keep_probability(n) >= 0.5)
    assert first_half == half_at
    assert rule.keep_probability(1) == pytest.approx(1e-5 / l0, rel=1e-9)


@pytest.mark.parametrize(("l0", "continuous", "discrete"), [(1, 11.82, 13), (3, 36.76, 38)])
def test_laplace_threshold_worked_values(l0: int, continuous: float, discrete: int) -> None:
    epsilon, delta = 1.0, 1e-5
    _, delta_p = per_partition_budget(epsilon, delta, l0)
    # The continuous form of docs/privacy.md §6.
    assert 1 - (l0 / epsilon) * math.log(2 * delta_p) == pytest.approx(continuous, abs=0.01)
    rule = LaplaceThresholdSelection(epsilon=epsilon, delta=delta, max_partitions_per_unit=l0)
    assert rule.noise.scale == Fraction(l0)
    assert rule.threshold == discrete
    assert abs(rule.threshold - math.ceil(continuous)) <= 1


def test_gaussian_threshold_worked_values() -> None:
    """ε=1, δ=1e-5: σ from (1, 5e-6) with Δ2 = sqrt(L0); T from (δ/2)/L0."""
    for l0, expected_threshold in [(1, 20), (3, 36)]:
        rule = GaussianThresholdSelection(epsilon=1.0, delta=1e-5, max_partitions_per_unit=l0)
        assert rule.delta_p == pytest.approx(5e-6 / l0)
        assert rule.rho == pytest.approx(rho_for_epsilon_delta(1.0, 5e-6))
        assert float(rule.noise.sigma_squared) == pytest.approx(l0 / (2 * rule.rho), rel=1e-6)
        assert delta_for_rho(l0 / (2 * float(rule.noise.sigma_squared)), 1.0) <= 5e-6
        assert rule.threshold == expected_threshold
        assert rule.noise.upper_tail(rule.threshold - 1) <= rule.delta_p


def test_min_units_shifts_the_table() -> None:
    epsilon, delta = 0.5, 1e-6
    base = truncated_geometric_keep_table(epsilon, delta)
    for m in (1, 2, 5):
        shifted = truncated_geometric_keep_table(epsilon, delta, min_units=m)
        assert len(shifted) == len(base) + m - 1
        assert np.all(shifted[:m] == 0.0)
        for n in range(m, len(shifted)):
            assert shifted[n] == base[n - m + 1]
        assert_dp_table(shifted, epsilon, delta)


def test_min_units_shifts_the_thresholds() -> None:
    laplace = DiscreteLaplace(Fraction(3))
    gaussian = DiscreteGaussian(Fraction(40))
    for m in (1, 2, 7):
        assert laplace_threshold(laplace, 1e-6, m) == laplace_threshold(laplace, 1e-6) + m - 1
        assert gaussian_threshold(gaussian, 1e-6, m) == gaussian_threshold(gaussian, 1e-6) + m - 1
    rule = LaplaceThresholdSelection(1.0, 1e-5, 1, min_units=4)
    assert rule.threshold == 13 + 3


def brute_force_upper_tail(dist: DiscreteLaplace | DiscreteGaussian, k: int) -> float:
    width = 80 * math.ceil(dist.std()) + 50
    ks = np.arange(k, k + width)
    if k <= 0:  # P(X >= k) = 1 − P(X <= k − 1) = 1 − P(X >= 1 − k)
        return 1 - brute_force_upper_tail(dist, 1 - k)
    pmf = dist.pmf(ks)
    return math.fsum(pmf[::-1].tolist())


@pytest.mark.parametrize(
    "noise",
    [
        DiscreteLaplace(Fraction(1)),
        DiscreteLaplace(Fraction(3)),
        DiscreteLaplace(Fraction("7.3")),
        DiscreteGaussian(Fraction(9)),
        DiscreteGaussian(Fraction(250, 3)),
    ],
)
@pytest.mark.parametrize("delta_p", [1e-3, 1e-6, 1e-10])
def test_thresholds_are_exact_against_brute_force_tails(
    noise: DiscreteLaplace | DiscreteGaussian, delta_p: float
) -> None:
    if isinstance(noise, DiscreteLaplace):
        threshold = laplace_threshold(noise, delta_p)
    else:
        threshold = gaussian_threshold(noise, delta_p)
    # P(1 + X >= T) = P(X >= T − 1) <= δ_p, and T − 1 would not do.
    assert brute_force_upper_tail(noise, threshold - 1) <= delta_p
    assert brute_force_upper_tail(noise, threshold - 2) > delta_p


def test_keep_probabilities_vectorised_lookup() -> None:
    table = truncated_geometric_keep_table(1.0, 1e-5)
    n = np.array([-3, 0, 1, 5, len(table) - 1, len(table), 10**9], dtype=np.int64)
    result = keep_probabilities(table, n)
    expected = [0.0, 0.0, table[1], table[5], 1.0, 1.0, 1.0]
    np.testing.assert_array_equal(result, expected)
    assert keep_probabilities(table, np.zeros(0, dtype=np.int64)).shape == (0,)


RULES = [
    TruncatedGeometricSelection(1.0, 1e-5, 1),
    TruncatedGeometricSelection(0.5, 1e-7, 4, min_units=3),
    LaplaceThresholdSelection(1.0, 1e-5, 3),
    LaplaceThresholdSelection(0.3, 1e-8, 2, min_units=2),
    GaussianThresholdSelection(1.0, 1e-5, 3),
    GaussianThresholdSelection(2.0, 1e-9, 10, min_units=5),
]


@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_keep_probability_is_monotone_and_bounded(
    rule: TruncatedGeometricSelection | LaplaceThresholdSelection | GaussianThresholdSelection,
) -> None:
    values = [rule.keep_probability(n) for n in range(0, 400)]
    assert values[0] == 0.0
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert values[-1] > 0.999
    # A partition made present by one unit is kept with probability <= δ_p.
    assert values[1] <= rule.delta_p * (1 + 1e-12)


@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_rules_report_their_spend(
    rule: TruncatedGeometricSelection | LaplaceThresholdSelection | GaussianThresholdSelection,
) -> None:
    spend = rule.spend()
    assert spend.name == "selection"
    assert spend.epsilon == rule.epsilon
    assert spend.delta == rule.delta
    assert spend.rho is None
    expected_mechanism = {
        TruncatedGeometricSelection: "truncated_geometric",
        LaplaceThresholdSelection: "laplace_threshold",
        GaussianThresholdSelection: "gaussian_threshold",
    }[type(rule)]
    assert spend.mechanism == expected_mechanism
    assert rule.epsilon_p == pytest.approx(rule.epsilon / rule.max_partitions_per_unit)


def test_per_partition_budget() -> None:
    assert per_partition_budget(1.0, 1e-5, 4) == (0.25, 2.5e-6)
    with pytest.raises(ValueError, match="max_partitions_per_unit"):
        per_partition_budget(1.0, 1e-5, 0)
    with pytest.raises(ValueError, match="delta"):
        per_partition_budget(1.0, 0.0, 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilon": 0.0, "delta": 1e-5, "max_partitions_per_unit": 1},
        {"epsilon": 1.0, "delta": 1.0, "max_partitions_per_unit": 1},
        {"epsilon": 1.0, "delta": 1e-5, "max_partitions_per_unit": 0},
        {"epsilon": 1.0, "delta": 1e-5, "max_partitions_per_unit": 1, "min_units": 0},
    ],
)
def test_rules_validate_their_parameters(kwargs: dict[str, float]) -> None:
    for cls in (TruncatedGeometricSelection, LaplaceThresholdSelection, GaussianThresholdSelection):
        with pytest.raises(ValueError, match="must be"):
            cls(**kwargs)  # type: ignore[arg-type]


def test_keep_table_rejects_unusable_parameters() -> None:
    with pytest.raises(ValueError, match="delta_p"):
        truncated_geometric_keep_table(1.0, 0.0)
    with pytest.raises(ValueError, match="delta_p"):
        truncated_geometric_keep_table(1.0, 1e-20)
    with pytest.raises(ValueError, match="epsilon"):
        truncated_geometric_keep_table(float("inf"), 1e-5)
