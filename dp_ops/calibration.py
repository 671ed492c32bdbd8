"""Sensitivities from contribution bounds, and noise calibrated to a privacy budget.

Every sensitivity is derived here from the bounds (docs/privacy.md §4), never typed by
a user. Noise parameters are rounded only in the safe direction (larger noise), so
the guarantee actually delivered is never weaker than the one requested.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from dp_ops.checks import check_delta, check_positive, check_positive_int
from dp_ops.noise import DiscreteGaussian, DiscreteLaplace

__all__ = [
    "NOISE_PARAMETER_DENOMINATOR",
    "ContributionBounds",
    "Sensitivity",
    "count_sensitivity",
    "delta_for_rho",
    "epsilon_for_rho",
    "exact_shares",
    "float_down",
    "float_up",
    "gaussian_for_epsilon_delta",
    "gaussian_for_rho",
    "laplace_for_epsilon",
    "privacy_id_count_sensitivity",
    "rho_for_epsilon_delta",
    "sensitivity_for_partition_bound",
    "split_by_weights",
    "sum_sensitivity",
]

# Noise parameters are rationals with this (power-of-two) denominator, rounded up.
NOISE_PARAMETER_DENOMINATOR = 2**20

_BISECTION_STEPS = 200


def _round_up(value: Fraction) -> Fraction:
    """``value`` itself when its denominator is at most NOISE_PARAMETER_DENOMINATOR (an exact
    share such as 10/3 stays exact), else the smallest multiple of 1/NOISE_PARAMETER_DENOMINATOR
    that is >= value. Either way the result is >= value with a bounded denominator."""
    if value.denominator <= NOISE_PARAMETER_DENOMINATOR:
        return value
    numerator = math.ceil(value * NOISE_PARAMETER_DENOMINATOR)
    return Fraction(numerator, NOISE_PARAMETER_DENOMINATOR)


@dataclass(frozen=True)
class ContributionBounds:
    """Public contribution bounds applied before aggregation.

    After bounding, each privacy unit touches at most `max_partitions_per_unit` (L0)
    partitions and contributes at most `max_rows_per_unit_per_partition` (Linf) rows
    to each of them.
    """

    max_partitions_per_unit: int
    max_rows_per_unit_per_partition: int

    def __post_init__(self) -> None:
        check_positive_int("max_partitions_per_unit", self.max_partitions_per_unit)
        check_positive_int("max_rows_per_unit_per_partition", self.max_rows_per_unit_per_partition)


@dataclass(frozen=True)
class Sensitivity:
    """How much one privacy unit can move an integer, per-partition aggregate vector.

    One unit changes at most `max_partitions_per_unit` (L0) partitions, each by at most
    `per_partition` grid units in L1 (parallel composition through the L0 factor).

    `per_partition_l2_squared` is the exact squared L2 bound of one partition's change
    when it is tighter than per_partition² (a vector aggregate such as the quantile tree,
    docs/privacy.md §4b); None means per_partition², a scalar aggregate. Invariant:
    1 <= per_partition_l2_squared <= per_partition² (an L2 norm never exceeds the L1 norm).
    """

    max_partitions_per_unit: int
    per_partition: int
    per_partition_l2_squared: int | None = None

    def __post_init__(self) -> None:
        check_positive_int("max_partitions_per_unit", self.max_partitions_per_unit)
        check_positive_int("per_partition", self.per_partition)
        if self.per_partition_l2_squared is not None:
            check_positive_int("per_partition_l2_squared", self.per_partition_l2_squared)
            if self.per_partition_l2_squared > self.per_partition**2:
                raise ValueError(
                    "per_partition_l2_squared must be <= per_partition**2 "
                    f"({self.per_partition**2}), got {self.per_partition_l2_squared!r}"
                )

    @property
    def l1(self) -> int:
        """L1 sensitivity: L0 · per_partition."""
        return self.max_partitions_per_unit * self.per_partition

    @property
    def l2(self) -> float:
        """L2 sensitivity: sqrt(L0) · per_partition (use l2_squared for exact work)."""
        return math.sqrt(self.l2_squared)

    @property
    def l2_squared(self) -> int:
        """Squared L2 sensitivity, exact: L0 · per_partition² (or L0 · per_partition_l2_squared)."""
        per_partition = self.per_partition_l2_squared
        if per_partition is None:
            per_partition = self.per_partition**2
        return self.max_partitions_per_unit * per_partition


def sensitivity_for_partition_bound(bounds: ContributionBounds, per_partition: int) -> Sensitivity:
    """Aggregate that one unit moves by <= per_partition in each of its <= L0 partitions."""
    return Sensitivity(bounds.max_partitions_per_unit, per_partition)


def count_sensitivity(bounds: ContributionBounds) -> Sensitivity:
    """COUNT of rows: one unit adds <= Linf rows to each of <= L0 partitions."""
    return sensitivity_for_partition_bound(bounds, bounds.max_rows_per_unit_per_partition)


def privacy_id_count_sensitivity(bounds: ContributionBounds) -> Sensitivity:
    """PRIVACY_ID_COUNT: one unit adds 1 to each of <= L0 partitions."""
    return sensitivity_for_partition_bound(bounds, 1)


def sum_sensitivity(bounds: ContributionBounds, max_abs_units: int) -> Sensitivity:
    """SUM of grid values with |value| <= max_abs_units (M): Linf·M in each of L0 partitions."""
    check_positive_int("max_abs_units", max_abs_units)
    return sensitivity_for_partition_bound(
        bounds, bounds.max_rows_per_unit_per_partition * max_abs_units
    )


def laplace_for_epsilon(sensitivity: Sensitivity, epsilon: float | Fraction) -> DiscreteLaplace:
    """Discrete Laplace that is epsilon-DP for this sensitivity.

    scale = l1/epsilon (with the exact rational value of epsilon, a Fraction or a float),
    kept exact when its denominator is at most 2**20, else rounded UP to a multiple of
    2**-20, so l1/scale <= epsilon always (docs/privacy.md §8).
    """
    check_positive("epsilon", float(epsilon))
    return DiscreteLaplace(_round_up(Fraction(sensitivity.l1) / Fraction(epsilon)))


def gaussian_for_rho(sensitivity: Sensitivity, rho: float) -> DiscreteGaussian:
    """Discrete Gaussian that is rho-zCDP for this sensitivity (CKS 2020, Thm. 4).

    sigma² = l2_squared/(2·rho), exact rational, kept when its denominator is at most
    2**20, else rounded UP to a multiple of 2**-20, so l2_squared/(2·sigma²) <= rho always.
    """
    check_positive("rho", rho)
    return DiscreteGaussian(_round_up(Fraction(sensitivity.l2_squared) / (2 * Fraction(rho))))


def _log_delta_at(rho: float, epsilon: float, u: float) -> float:
    """log of exp((α−1)(αρ−ε))/(α−1)·(1−1/α)^α at α = 1 + e^u."""
    a_minus_1 = math.exp(u)
    alpha = 1.0 + a_minus_1
    log_one_minus_inv_alpha = u - math.log1p(a_minus_1)  # log((α−1)/α)
    return a_minus_1 * (alpha * rho - epsilon) - u + alpha * log_one_minus_inv_alpha


def _log_delta_slope(rho: float, epsilon: float, u: float) -> float:
    """d/dα of the log above: 2ρα − ρ − ε + log((α−1)/α); increasing in α."""
    a_minus_1 = math.exp(u)
    return 2.0 * rho * (1.0 + a_minus_1) - rho - epsilon + (u - math.log1p(a_minus_1))


def delta_for_rho(rho: float, epsilon: float) -> float:
    """Smallest delta for which rho-zCDP implies (epsilon, delta)-DP, by the tight conversion.

    δ = inf_{α>1} exp((α−1)(αρ−ε))/(α−1) · (1−1/α)^α (Canonne–Kamath–Steinke 2020,
    Prop. 12 / Cor. 13), capped at 1. The log of the objective is convex in α (a convex
    quadratic plus (α−1)log(α−1) − α·log α), so its unique minimiser is found by
    bisection on the increasing derivative, in u = log(α−1). Every α gives a valid
    bound, so an inexact minimiser can only overstate delta (the safe direction).
    """
    if not (math.isfinite(rho) and rho >= 0):
        raise ValueError(f"rho must be finite and >= 0, got {rho!r}")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon must be finite and >= 0, got {epsilon!r}")
    if rho == 0:
        return 0.0
    # At α_hi the slope is >= 2ρα − ρ − ε − log 2 >= 1 − log 2 > 0; as α → 1 it is −∞.
    alpha_hi = max(2.0, (rho + epsilon + 1.0) / (2.0 * rho))
    hi = math.log(alpha_hi - 1.0)
    lo = -745.0  # α−1 = e^{-745}: slope ≈ −745 + (2α−1)ρ − ε < 0 unless ρ is huge
    if _log_delta_slope(rho, epsilon, lo) >= 0:
        return 1.0
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi):
            break
        if _log_delta_slope(rho, epsilon, mid) < 0:
            lo = mid
        else:
            hi = mid
    log_delta = min(_log_delta_at(rho, epsilon, lo), _log_delta_at(rho, epsilon, hi))
    return 1.0 if log_delta >= 0 else math.exp(log_delta)


def _bisect(lo: float, hi: float, low_side: Callable[[float], bool]) -> tuple[float, float]:
    """Narrow [lo, hi] to about 1e-13 relative around where ``low_side`` turns false.

    ``low_side`` holds at ``lo`` and fails at ``hi``, and both stay so.
    """
    for _ in range(_BISECTION_STEPS):
        if hi - lo <= 1e-13 * hi:
            break
        mid = (lo + hi) / 2.0
        if low_side(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def epsilon_for_rho(rho: float, delta: float) -> float:
    """Smallest epsilon (to ~1e-12 relative, rounded up) with delta_for_rho(rho, epsilon) <= delta.

    The returned epsilon always satisfies delta_for_rho(rho, epsilon) <= delta.
    """
    if not (math.isfinite(rho) and rho >= 0):
        raise ValueError(f"rho must be finite and >= 0, got {rho!r}")
    check_delta("delta", delta)
    if delta_for_rho(rho, 0.0) <= delta:
        return 0.0
    lo, hi = 0.0, max(1e-12, rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta)))
    while delta_for_rho(rho, hi) > delta:
        lo, hi = hi, 2.0 * hi
    return _bisect(lo, hi, lambda epsilon: delta_for_rho(rho, epsilon) > delta)[1]


def rho_for_epsilon_delta(epsilon: float, delta: float) -> float:
    """Largest rho (to ~1e-12 relative, rounded down) with delta_for_rho(rho, epsilon) <= delta.

    The returned rho always satisfies delta_for_rho(rho, epsilon) <= delta.
    """
    check_positive("epsilon", epsilon)
    check_delta("delta", delta)
    lo, hi = 0.0, epsilon
    while delta_for_rho(hi, epsilon) <= delta:
        lo, hi = hi, 2.0 * hi
    lo, _ = _bisect(lo, hi, lambda rho: delta_for_rho(rho, epsilon) <= delta)
    if lo == 0.0:
        raise ValueError(f"no rho > 0 reaches (epsilon={epsilon!r}, delta={delta!r})")
    return lo


def gaussian_for_epsilon_delta(
    sensitivity: Sensitivity, epsilon: float, delta: float
) -> DiscreteGaussian:
    """Discrete Gaussian that is (epsilon, delta)-DP for this sensitivity.

    Calibrated through zCDP: rho = rho_for_epsilon_delta(epsilon, delta), then
    gaussian_for_rho (sigma² rounded up). Never the classic Δ·sqrt(2 ln(1.25/δ))/ε.
    """
    return gaussian_for_rho(sensitivity, rho_for_epsilon_delta(epsilon, delta))


def split_by_weights(total: float, weights: Mapping[str, float]) -> dict[str, float]:
    """Split a budget by weights; the shares are >= 0 and their float sum never exceeds total.

    Weights must be finite, > 0 and sum to 1 within 1e-9. Shares are total·w/Σw, then
    nudged down by a few ulps if rounding would make their sum (in any order: checked
    left to right and with fsum) exceed total.
    """
    if not (isinstance(total, int | float) and math.isfinite(total) and total >= 0):
        raise ValueError(f"total must be finite and >= 0, got {total!r}")
    if not weights:
        raise ValueError("weights must not be empty")
    for key, weight in weights.items():
        if not (isinstance(weight, int | float) and math.isfinite(weight) and weight > 0):
            raise ValueError(f"weight {key!r} must be finite and > 0, got {weight!r}")
    weight_sum = math.fsum(weights.values())
    if abs(weight_sum - 1.0) > 1e-9:
        raise ValueError(
            f"weights must sum to 1 (within 1e-9), got {weight_sum!r} for keys {sorted(weights)}"
        )
    shares = {key: total * (weight / weight_sum) for key, weight in weights.items()}

    def exceeds(values: list[float]) -> bool:
        running = 0.0
        for value in values:
            running += value
        return running > total or math.fsum(values) > total

    while exceeds(list(shares.values())):
        shares = {key: math.nextafter(value, 0.0) for key, value in shares.items()}
    return shares


def float_up(value: Fraction) -> float:
    """The smallest double >= value: a charge or a total never shown below the exact one."""
    result = float(value)
    if Fraction(result) < value:
        result = math.nextafter(result, math.inf)
    return result


def float_down(value: Fraction) -> float:
    """The largest double <= value: a mechanism run with it spends at most ``value``."""
    result = float(value)
    if Fraction(result) > value:
        result = math.nextafter(result, -math.inf)
    return result


def exact_shares(weights: Mapping[str, float]) -> dict[str, Fraction]:
    """Budget shares as exact rationals that sum to exactly 1 (docs/privacy.md §8).

    Each weight is read as the decimal the config states (0.1 is 1/10, through the
    shortest repr of the double), then divided by their exact sum. Weights must be finite,
    > 0 and sum to 1 within 1e-9 (as ``split_by_weights``). Invariant: ``sum(shares) == 1``
    exactly, so epsilon times the shares composes back to epsilon with no rounding.
    """
    split_by_weights(1.0, weights)  # the same validation and messages
    decimals = {key: Fraction(repr(float(weight))) for key, weight in weights.items()}
    total = sum(decimals.values(), Fraction(0))
    return {key: value / total for key, value in decimals.items()}
