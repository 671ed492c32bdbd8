"""Sensitivities, noise calibration and the zCDP → (ε, δ) conversion.

Oracles for the conversion (test-only):

* scipy.optimize.minimize_scalar on the CKS objective, written independently below:
  the same formula, a different minimiser. Must agree to ~1e-9 relative.
* dp_accounting.rdp.RdpAccountant with a ZCDpEvent(ρ): its compute_delta implements
  the same CKS bound (arXiv 2004.00010, Prop. 12) but only over a finite list of
  orders, so it is an UPPER bound of our infimum, equal to it as the orders densify.
* The exact (ε, δ) curve of the continuous Gaussian mechanism with ρ = Δ²/(2σ²)
  (Balle & Wang 2018, via scipy.stats.norm), cross-checked against
  dp_accounting.pld.PLDAccountant: the Gaussian mechanism is ρ-zCDP, so any valid
  conversion from ρ-zCDP must give a δ >= its exact δ. It is a LOWER bound.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar
from scipy.stats import norm

from dp_ops.calibration import (
    NOISE_PARAMETER_DENOMINATOR,
    ContributionBounds,
    Sensitivity,
    count_sensitivity,
    delta_for_rho,
    epsilon_for_rho,
    gaussian_for_epsilon_delta,
    gaussian_for_rho,
    laplace_for_epsilon,
    privacy_id_count_sensitivity,
    rho_for_epsilon_delta,
    sensitivity_for_partition_bound,
    split_by_weights,
    sum_sensitivity,
)

RHO_EPSILON_POINTS = [
    (0.5, 1.0),
    (0.1, 1.0),
    (1.0, 5.0),
    (0.01, 0.1),
    (0.03, 1.0),
    (2.0, 3.0),
    (0.005, 0.5),
    (1e-4, 0.1),
]


# ---------------------------------------------------------------- sensitivities


def test_sensitivities_follow_the_reference_table() -> None:
    bounds = ContributionBounds(max_partitions_per_unit=3, max_rows_per_unit_per_partition=5)
    count = count_sensitivity(bounds)
    assert (count.per_partition, count.l1, count.l2_squared) == (5, 15, 75)
    assert count.l2 == pytest.approx(math.sqrt(3) * 5)
    privacy_id = privacy_id_count_sensitivity(bounds)
    assert (privacy_id.per_partition, privacy_id.l1, privacy_id.l2_squared) == (1, 3, 3)
    assert privacy_id.l2 == pytest.approx(math.sqrt(3))
    total = sum_sensitivity(bounds, max_abs_units=7)
    assert (total.per_partition, total.l1, total.l2_squared) == (35, 105, 3 * 35**2)
    assert total.l2 == pytest.approx(math.sqrt(3) * 35)
    generic = sensitivity_for_partition_bound(bounds, 11)
    assert generic == Sensitivity(max_partitions_per_unit=3, per_partition=11)


def test_l2_squared_is_exact_for_large_values() -> None:
    sensitivity = Sensitivity(max_partitions_per_unit=7, per_partition=2**40 + 1)
    assert sensitivity.l2_squared == 7 * (2**40 + 1) ** 2


@pytest.mark.parametrize(("l0", "linf"), [(0, 1), (1, 0), (-1, 1), (1.5, 1), (True, 1)])
def test_bounds_are_validated(l0: object, linf: object) -> None:
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        ContributionBounds(l0, linf)  # type: ignore[arg-type]


def test_sensitivity_is_validated() -> None:
    with pytest.raises(ValueError, match="per_partition"):
        Sensitivity(1, 0)
    with pytest.raises(ValueError, match="max_abs_units"):
        sum_sensitivity(ContributionBounds(1, 1), 0)


# ---------------------------------------------------------------- calibration


def _is_dyadic(value: Fraction) -> bool:
    """A bounded denominator: exact when at most 2**20, else a multiple of 2**-20."""
    return value.denominator <= NOISE_PARAMETER_DENOMINATOR


@pytest.mark.parametrize("epsilon", [1e-3, 0.1, 1 / 3, 0.3, 1.0, 2.5, 7.0])
@pytest.mark.parametrize("l1_parts", [(1, 1), (3, 5), (10, 2**20 + 3)])
def test_laplace_round_trip_never_below_requested_privacy(
    epsilon: float, l1_parts: tuple[int, int]
) -> None:
    sensitivity = Sensitivity(*l1_parts)
    noise = laplace_for_epsilon(sensitivity, epsilon)
    exact_target = Fraction(sensitivity.l1) / Fraction(epsilon)
    assert noise.scale >= exact_target  # rounded up, never down
    assert noise.scale - exact_target < Fraction(1, NOISE_PARAMETER_DENOMINATOR)
    assert _is_dyadic(noise.scale)
    achieved = Fraction(sensitivity.l1) / noise.scale
    assert achieved <= Fraction(epsilon)
    assert float(achieved) == pytest.approx(epsilon, rel=1e-4)


@pytest.mark.parametrize("rho", [1e-4, 0.01, 0.03, 0.5, 1 / 3, 2.0])
@pytest.mark.parametrize("parts", [(1, 1), (3, 5), (10, 2**20 + 3)])
def test_gaussian_round_trip_never_below_requested_privacy(
    rho: float, parts: tuple[int, int]
) -> None:
    sensitivity = Sensitivity(*parts)
    noise = gaussian_for_rho(sensitivity, rho)
    exact_target = Fraction(sensitivity.l2_squared) / (2 * Fraction(rho))
    assert noise.sigma_squared >= exact_target
    assert noise.sigma_squared - exact_target < Fraction(1, NOISE_PARAMETER_DENOMINATOR)
    assert _is_dyadic(noise.sigma_squared)
    achieved_rho = Fraction(sensitivity.l2_squared) / (2 * noise.sigma_squared)
    assert achieved_rho <= Fraction(rho)
    assert float(achieved_rho) == pytest.approx(rho, rel=1e-4)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_calibration_rejects_bad_budgets(bad: float) -> None:
    with pytest.raises(ValueError, match="epsilon"):
        laplace_for_epsilon(Sensitivity(1, 1), bad)
    with pytest.raises(ValueError, match="rho"):
        gaussian_for_rho(Sensitivity(1, 1), bad)


# ---------------------------------------------------------------- zCDP conversion


def scipy_cks_delta(rho: float, epsilon: float) -> float:
    """The CKS objective minimised by scipy over log(α − 1), independently written."""

    def log_objective(u: float) -> float:
        alpha = 1.0 + math.exp(u)
        return (
            (alpha - 1) * (alpha * rho - epsilon)
            - math.log(alpha - 1)
            + alpha * math.log1p(-1.0 / alpha)
        )

    result = minimize_scalar(
        log_objective, bounds=(-30.0, 30.0), method="bounded", options={"xatol": 1e-12}
    )
    return min(1.0, math.exp(result.fun))


def exact_gaussian_delta(rho: float, epsilon: float) -> float:
    """Exact δ(ε) of the continuous Gaussian mechanism with Δ=1, σ = 1/sqrt(2ρ)."""
    sigma = 1.0 / math.sqrt(2.0 * rho)
    return float(
        norm.cdf(-epsilon * sigma + 1 / (2 * sigma))
        - math.exp(epsilon) * norm.cdf(-epsilon * sigma - 1 / (2 * sigma))
    )


DENSE_ORDERS = np.concatenate([np.linspace(1.01, 10, 2000), np.geomspace(10.01, 1e6, 6000)])


@pytest.mark.parametrize(("rho", "epsilon"), RHO_EPSILON_POINTS)
def test_delta_for_rho_matches_independent_minimisation(rho: float, epsilon: float) -> None:
    assert delta_for_rho(rho, epsilon) == pytest.approx(scipy_cks_delta(rho, epsilon), rel=1e-9)


@pytest.mark.parametrize(("rho", "epsilon"), RHO_EPSILON_POINTS)
def test_delta_for_rho_against_dp_accounting_rdp(rho: float, epsilon: float) -> None:
    ours = delta_for_rho(rho, epsilon)
    theirs = []
    for orders in (None, DENSE_ORDERS):
        accountant = rdp.RdpAccountant(orders=orders)
        accountant.compose(dp_accounting.ZCDpEvent(rho))
        theirs.append(accountant.get_delta(epsilon))
        assert ours <= theirs[-1] * (1 + 1e-12)  # a finite order grid can only be looser
    assert ours == pytest.approx(min(theirs), rel=1e-4)  # and a dense grid gets close


@pytest.mark.parametrize(("rho", "epsilon"), RHO_EPSILON_POINTS)
def test_delta_for_rho_is_above_the_exact_gaussian_curve(rho: float, epsilon: float) -> None:
    exact = exact_gaussian_delta(rho, epsilon)
    assert delta_for_rho(rho, epsilon) >= exact


@pytest.mark.parametrize(("rho", "epsilon"), [(0.03, 1.0), (0.5, 1.0)])
def test_exact_gaussian_curve_agrees_with_dp_accounting_pld(rho: float, epsilon: float) -> None:
    """The lower-bound oracle itself, checked against dp_accounting's PLD accountant."""
    accountant = pld.PLDAccountant(value_discretization_interval=1e-3)
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier=1 / math.sqrt(2 * rho)))
    pld_delta = accountant.get_delta(epsilon)  # pessimistic discretisation: >= exact
    exact = exact_gaussian_delta(rho, epsilon)
    assert exact <= pld_delta <= exact * 1.01
    assert delta_for_rho(rho, epsilon) >= pld_delta


def test_delta_for_rho_edge_cases() -> None:
    assert delta_for_rho(0.0, 1.0) == 0.0
    assert 0 < delta_for_rho(50.0, 0.0) <= 1.0
    assert delta_for_rho(1e3, 0.0) == 1.0
    assert 0 < delta_for_rho(1e-3, 1.0) < 1e-100
    for rho in (0.01, 0.1, 1.0):
        values = [delta_for_rho(rho, eps) for eps in np.linspace(0, 5, 30)]
        assert all(a >= b for a, b in itertools.pairwise(values))
    with pytest.raises(ValueError, match="rho"):
        delta_for_rho(-1.0, 1.0)
    with pytest.raises(ValueError, match="epsilon"):
        delta_for_rho(1.0, -1.0)


@pytest.mark.parametrize("rho", [1e-5, 1e-3, 0.03, 0.5, 2.0])
@pytest.mark.parametrize("delta", [1e-10, 1e-6, 1e-3])
def test_epsilon_for_rho_is_smallest_valid(rho: float, delta: float) -> None:
    epsilon = epsilon_for_rho(rho, delta)
    assert delta_for_rho(rho, epsilon) <= delta
    assert delta_for_rho(rho, epsilon * (1 - 1e-9)) > delta
    # Never worse than the classic zCDP bound ρ + 2·sqrt(ρ·ln(1/δ)).
    assert epsilon <= rho + 2 * math.sqrt(rho * math.log(1 / delta))
    # dp_accounting's conversion over a dense grid agrees from above.
    accountant = rdp.RdpAccountant(orders=DENSE_ORDERS)
    accountant.compose(dp_accounting.ZCDpEvent(rho))
    theirs = accountant.get_epsilon(delta)
    assert epsilon <= theirs + 1e-12
    assert epsilon == pytest.approx(theirs, rel=1e-3)


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 1.0, 3.0, 10.0])
@pytest.mark.parametrize("delta", [1e-10, 1e-6, 1e-3])
def test_rho_for_epsilon_delta_is_largest_valid(epsilon: float, delta: float) -> None:
    rho = rho_for_epsilon_delta(epsilon, delta)
    assert delta_for_rho(rho, epsilon) <= delta
    assert delta_for_rho(rho * (1 + 1e-9), epsilon) > delta
    assert epsilon_for_rho(rho, delta) <= epsilon * (1 + 1e-9)


@pytest.mark.parametrize("epsilon", [0.1, 1.0, 5.0, 10.0, 20.0])
def test_gaussian_for_epsilon_delta_is_valid(epsilon: float) -> None:
    delta = 1e-5
    sensitivity = Sensitivity(max_partitions_per_unit=4, per_partition=3)
    noise = gaussian_for_epsilon_delta(sensitivity, epsilon, delta)
    achieved_rho = float(Fraction(sensitivity.l2_squared) / (2 * noise.sigma_squared))
    assert delta_for_rho(achieved_rho, epsilon) <= delta
    assert exact_gaussian_delta(achieved_rho, epsilon) <= delta


def test_classic_gaussian_formula_is_not_used() -> None:
    """σ = Δ·sqrt(2 ln(1.25/δ))/ε differs from ours, and is invalid for large ε."""
    delta = 1e-5
    unit = Sensitivity(1, 1)

    def classic(epsilon: float) -> float:
        return math.sqrt(2 * math.log(1.25 / delta)) / epsilon

    ours_at_1 = gaussian_for_epsilon_delta(unit, 1.0, delta).sigma
    assert ours_at_1 == pytest.approx(4.0451, abs=1e-3)
    assert classic(1.0) == pytest.approx(4.8448, abs=1e-3)
    # At ε = 10 the classic σ is too small: the exact Gaussian δ exceeds the target.
    sigma_classic = classic(10.0)
    assert exact_gaussian_delta(1 / (2 * sigma_classic**2), 10.0) > delta
    ours_at_10 = gaussian_for_epsilon_delta(unit, 10.0, delta).sigma
    assert ours_at_10 > sigma_classic
    assert exact_gaussian_delta(1 / (2 * ours_at_10**2), 10.0) <= delta


# ---------------------------------------------------------------- budget split


def test_split_by_weights_basic() -> None:
    shares = split_by_weights(1.0, {"selection": 0.25, "count": 0.25, "sum": 0.5})
    assert shares == {"selection": 0.25, "count": 0.25, "sum": 0.5}


@settings(max_examples=150, deadline=None)
@given(
    total=st.floats(min_value=0, max_value=100, allow_nan=False),
    raw=st.lists(st.floats(min_value=1e-3, max_value=1.0), min_size=1, max_size=8),
)
def test_split_by_weights_never_exceeds_total(total: float, raw: list[float]) -> None:
    norm_sum = math.fsum(raw)
    weights = {f"metric_{i}": value / norm_sum for i, value in enumerate(raw)}
    if abs(math.fsum(weights.values()) - 1) > 1e-9:
        return
    shares = split_by_weights(total, weights)
    assert list(shares) == list(weights)
    running = 0.0
    for value in shares.values():
        assert value >= 0
        running += value
    assert running <= total
    assert math.fsum(shares.values()) <= total
    for key, weight in weights.items():
        assert shares[key] == pytest.approx(total * weight, rel=1e-12, abs=1e-300)


def test_split_by_weights_repairs_rounding_overshoot() -> None:
    weights = {f"k{i}": 0.1 for i in range(10)}  # 0.1 is not exact in binary
    shares = split_by_weights(0.3, weights)
    total = 0.0
    for value in shares.values():
        total += value
    assert total <= 0.3


@pytest.mark.parametrize(
    ("weights", "key"),
    [
        ({"count": 0.5, "sum": float("nan")}, "sum"),
        ({"count": 0.5, "mean": -0.1, "sum": 0.6}, "mean"),
        ({"count": 1.0, "sum": 0.0}, "sum"),
        ({"count": float("inf")}, "count"),
    ],
)
def test_split_by_weights_names_the_offending_key(weights: dict[str, float], key: str) -> None:
    with pytest.raises(ValueError, match=repr(key)):
        split_by_weights(1.0, weights)


def test_split_by_weights_rejects_bad_sums_and_totals() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        split_by_weights(1.0, {"count": 0.5, "sum": 0.4})
    with pytest.raises(ValueError, match="empty"):
        split_by_weights(1.0, {})
    with pytest.raises(ValueError, match="total"):
        split_by_weights(float("nan"), {"count": 1.0})
    # Within 1e-9 of 1 is accepted.
    shares = split_by_weights(2.0, {"count": 0.5, "sum": 0.5 + 5e-10})
    assert math.fsum(shares.values()) <= 2.0
