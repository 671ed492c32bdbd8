"""Private partition selection: which partition keys present in the data may be released.

n is the number of distinct privacy units in a partition AFTER contribution bounding,
so one unit changes n by at most 1 in each of at most L0 partitions. A partition
absent from one of two neighbouring datasets has n = 1 in the other; every rule below
releases such a partition with probability <= delta_p, which is where the delta of
selection goes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from dp_ops.accounting import MechanismSpend
from dp_ops.calibration import (
    Sensitivity,
    gaussian_for_rho,
    laplace_for_epsilon,
    rho_for_epsilon_delta,
)
from dp_ops.noise import DiscreteGaussian, DiscreteLaplace

__all__ = [
    "MAX_KEEP_TABLE_LENGTH",
    "MIN_KEEP_TABLE_DELTA",
    "GaussianThresholdSelection",
    "LaplaceThresholdSelection",
    "SelectionRule",
    "TruncatedGeometricSelection",
    "gaussian_threshold",
    "keep_probabilities",
    "keep_probability_for_units",
    "keep_table_length_lower_bound",
    "laplace_threshold",
    "per_partition_budget",
    "truncated_geometric_keep_table",
]

SPEND_NAME = "selection"
#: Longest keep table built, its min_units − 1 leading zeros included (it has about
#: 2·ln(ε_p/(2δ_p))/ε_p entries, see keep_table_length_lower_bound). Certifying an entry
#: takes about 1 µs and the table ships inside the noise step (about 9 bytes an entry when
#: pickled), so 10**7 entries is about 10 s on the driver and 90 MB per task at most.
MAX_KEEP_TABLE_LENGTH = 10_000_000
#: Smallest δ_p the float64 keep table can certify: its last step to 1.0 needs
#: 1 − π(n−1) <= δ_p with π(n−1) a double below 1, i.e. δ_p well above 2**-53.
MIN_KEEP_TABLE_DELTA = 1e-15
# Thresholds ask for tail <= δ_p·(1 − margin), absorbing float error in the tail sums.
_THRESHOLD_MARGIN = 1e-9


def _check_epsilon(epsilon: float) -> None:
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be finite and > 0, got {epsilon!r}")


def _check_delta(delta: float) -> None:
    if not (math.isfinite(delta) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def per_partition_budget(
    epsilon: float, delta: float, max_partitions_per_unit: int
) -> tuple[float, float]:
    """(ε/L0, δ/L0): spending this on each of a unit's <= L0 partitions costs (ε, δ) in total."""
    _check_epsilon(epsilon)
    _check_delta(delta)
    _check_positive_int("max_partitions_per_unit", max_partitions_per_unit)
    return epsilon / max_partitions_per_unit, delta / max_partitions_per_unit


# Exact checks use integers: the table's floats (0, or >= δ_p >= 1e-15 > 2**-50, so
# with no bits below 2**-103) are exactly int(x·2**_FIXED_BITS).
_FIXED_BITS = 128
_FIXED_ONE = 1 << _FIXED_BITS
_MAX_EPSILON_P = 700.0  # math.exp overflows a little above 709


def _fixed(value: float) -> int:
    """value·2**128 as an exact integer (ValueError if value has bits below 2**-128)."""
    numerator, denominator = value.as_integer_ratio()  # denominator is a power of two
    shift = _FIXED_BITS - (denominator.bit_length() - 1)
    if shift < 0:
        raise ValueError(f"{value!r} is too small for the exact keep-table check")
    return numerator << shift


def _keep_step_holds(previous: int, current: int, e_low: int, delta: int) -> bool:
    """Both (ε, δ) inequalities between n−1 and n, exactly.

    previous, current, delta are fixed-point (_fixed); e_low is a lower bound of e^ε
    times 2**52 (an exact integer).
    """
    scale = 1 << 52
    keep_ok = current * scale <= e_low * previous + delta * scale
    drop_ok = (_FIXED_ONE - previous) * scale <= e_low * (_FIXED_ONE - current) + delta * scale
    return keep_ok and drop_ok


def keep_table_length_lower_bound(epsilon_p: float, delta_p: float, min_units: int = 1) -> int:
    """In O(1), a number <= len(truncated_geometric_keep_table(epsilon_p, delta_p, min_units)).

    The keep inequality π(n) <= e^ε·π(n−1) + δ gives π(n) <= δ·(e^{nε} − 1)/(e^ε − 1), so
    π reaches 1/2 only after L = ln(1 + (e^ε − 1)/(2δ))/ε steps; the drop inequality is
    the same recursion for 1 − π read backwards from the table's end, so reaching 1 from
    1/2 takes at least L more. The stored table (rounded down) grows no faster. Lets a
    caller refuse a table far over MAX_KEEP_TABLE_LENGTH without building it.
    """
    _check_epsilon(epsilon_p)
    if not (math.isfinite(delta_p) and 0 < delta_p < 1):
        raise ValueError(f"delta_p must be in (0, 1), got {delta_p!r}")
    _check_positive_int("min_units", min_units)
    # log(e^ε − 1) without overflow, then log(1 + e^a) for a = log((e^ε − 1)/(2δ)).
    log_growth = (
        math.log(math.expm1(epsilon_p))
        if epsilon_p < 1
        else epsilon_p + math.log1p(-math.exp(-epsilon_p))
    )
    a = log_growth - math.log(2 * delta_p)
    log_steps = a + math.log1p(math.exp(-a)) if a > 0 else math.log1p(math.exp(a))
    half = log_steps / epsilon_p
    if not math.isfinite(half) or half > 2**62:
        return 2**63
    return 2 * math.floor(half) + min_units


def truncated_geometric_keep_table(
    epsilon_p: float, delta_p: float, min_units: int = 1
) -> NDArray[np.float64]:
    """Keep probabilities π(n) of the truncated geometric rule, for n = 0..len−1.

    π(0) = 0 and π(n) = min(e^ε·π(n−1) + δ, 1 − e^{−ε}·(1 − π(n−1) − δ), 1), the
    largest values with π(n) <= e^ε·π(n−1) + δ and 1 − π(n−1) <= e^ε·(1 − π(n)) + δ
    (keeping and dropping are both (ε_p, δ_p)-indistinguishable between n−1 and n;
    the reverse inequalities hold since π is non-decreasing). The table ends with its
    first 1.0; entries beyond it mean 1.0.

    Rounding: each float entry is checked in exact (integer) arithmetic, with a lower
    bound of e^ε, against both inequalities and lowered ulp by ulp until they hold,
    so the table is (ε_p, δ_p)-valid as stored.

    min_units = m >= 1 shifts the rule: π_m(n) = π_1(max(0, n − m + 1)), so π_m(n) = 0
    for n < m. This keeps the guarantee because n ↦ max(0, n − m + 1) is public and
    changes by at most 1 when n does: π_m is π_1 applied to a sensitivity-1 count, and
    the inequalities of π_1 therefore hold between every n−1 and n.
    """
    _check_epsilon(epsilon_p)
    if epsilon_p > _MAX_EPSILON_P:
        raise ValueError(f"epsilon_p must be <= {_MAX_EPSILON_P}, got {epsilon_p!r}")
    if not (math.isfinite(delta_p) and MIN_KEEP_TABLE_DELTA <= delta_p < 1):
        raise ValueError(f"delta_p must be in [{MIN_KEEP_TABLE_DELTA}, 1), got {delta_p!r}")
    _check_positive_int("min_units", min_units)
    too_long = ValueError(
        f"keep table for epsilon_p={epsilon_p!r}, delta_p={delta_p!r}, min_units={min_units} "
        f"is longer than {MAX_KEEP_TABLE_LENGTH:,} entries (MAX_KEEP_TABLE_LENGTH)"
    )
    if keep_table_length_lower_bound(epsilon_p, delta_p, min_units) > MAX_KEEP_TABLE_LENGTH:
        raise too_long
    e_low_float = math.exp(epsilon_p)
    for _ in range(4):  # 4 ulps below the float exp (error < 1 ulp): a lower bound of e^ε
        e_low_float = math.nextafter(e_low_float, 0.0)
    e_low_float = max(e_low_float, 1.0)  # e^ε >= 1 exactly (an ε_p below 1e-15 got below 1)
    numerator, denominator = e_low_float.as_integer_ratio()  # >= 1, so denominator <= 2**52
    e_low = numerator << (52 - (denominator.bit_length() - 1))  # e_low_float·2**52, exact
    exact_delta = _fixed(delta_p)

    values = [0.0]
    previous, exact_previous = 0.0, 0
    while previous < 1.0:
        if len(values) + min_units - 1 >= MAX_KEEP_TABLE_LENGTH:
            raise too_long
        # The recursion with the lower bound of e^ε, one ulp down: usually valid already.
        keep_bound = e_low_float * previous + delta_p
        drop_bound = 1.0 - (1.0 - previous - delta_p) / e_low_float
        current = min(keep_bound, drop_bound, 1.0)
        if 0.0 < current < 1.0:
            current = math.nextafter(current, 0.0)
        exact_current = _fixed(current)
        while not _keep_step_holds(exact_previous, exact_current, e_low, exact_delta):
            current = math.nextafter(current, 0.0)
            exact_current = _fixed(current)
        if current <= previous:
            raise ValueError(f"delta_p={delta_p!r} is too small for a float64 keep table")
        values.append(current)
        previous, exact_previous = current, exact_current
    table = np.asarray(values, dtype=np.float64)
    if min_units > 1:
        table = np.concatenate([np.zeros(min_units - 1, dtype=np.float64), table])
    return table


def keep_probabilities(
    table: NDArray[np.float64], n_units: NDArray[np.int64]
) -> NDArray[np.float64]:
    """P(keep | n) for each n: table[n], 0.0 for n <= 0, 1.0 for n >= len(table)."""
    n = np.asarray(n_units, dtype=np.int64)
    result = np.ones(n.shape, dtype=np.float64)
    result[n <= 0] = 0.0
    inside = (n > 0) & (n < len(table))
    result[inside] = table[n[inside]]
    return result


def _smallest_integer(predicate: Callable[[int], bool]) -> int:
    """Smallest integer s with predicate(s) true, for a predicate monotone (false→true) in s."""
    if predicate(0):
        hi, step = 0, 1
        while predicate(hi - step):
            hi -= step
            step *= 2
        lo = hi - step  # predicate(lo) is false
    else:
        lo, step = 0, 1
        while not predicate(lo + step):
            lo += step
            step *= 2
        hi = lo + step  # predicate(hi) is true
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if predicate(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _threshold(noise: DiscreteLaplace | DiscreteGaussian, delta_p: float, min_units: int) -> int:
    _check_delta(delta_p)
    _check_positive_int("min_units", min_units)
    target = delta_p * (1.0 - _THRESHOLD_MARGIN)
    # P(1 + X >= T) = P(X >= T − 1)
    smallest = _smallest_integer(lambda threshold: noise.upper_tail(threshold - 1) <= target)
    return smallest + (min_units - 1)


def laplace_threshold(noise: DiscreteLaplace, delta_p: float, min_units: int = 1) -> int:
    """Smallest integer T with P(1 + X >= T) <= δ_p, plus (min_units − 1); keep iff n + X >= T.

    The tail is the exact discrete Laplace tail of the noise actually sampled (asked
    to be <= δ_p·(1 − 1e-9) to absorb float error). A partition that only one unit
    makes present (n = 1) is then kept with probability <= δ_p; shifting T up only
    lowers that probability.
    """
    return _threshold(noise, delta_p, min_units)


def gaussian_threshold(noise: DiscreteGaussian, delta_p: float, min_units: int = 1) -> int:
    """Same as laplace_threshold with the discrete Gaussian tail (summed pmf)."""
    return _threshold(noise, delta_p, min_units)


def _check_rule(epsilon: float, delta: float, max_partitions_per_unit: int, min_units: int) -> None:
    _check_epsilon(epsilon)
    _check_delta(delta)
    _check_positive_int("max_partitions_per_unit", max_partitions_per_unit)
    _check_positive_int("min_units", min_units)


@dataclass(frozen=True)
class TruncatedGeometricSelection:
    """Truncated geometric selection (optimal; the default): (ε, δ)-DP over all partitions.

    Each partition is kept with probability π(n) from the (ε/L0, δ/L0) keep table.
    It releases nothing else.
    """

    epsilon: float
    delta: float
    max_partitions_per_unit: int
    min_units: int = 1

    def __post_init__(self) -> None:
        _check_rule(self.epsilon, self.delta, self.max_partitions_per_unit, self.min_units)

    @property
    def epsilon_p(self) -> float:
        """Per-partition ε: ε/L0."""
        return self.epsilon / self.max_partitions_per_unit

    @property
    def delta_p(self) -> float:
        """Per-partition δ: δ/L0."""
        return self.delta / self.max_partitions_per_unit

    @cached_property
    def table(self) -> NDArray[np.float64]:
        """Keep probability by unit count n (see truncated_geometric_keep_table)."""
        table = truncated_geometric_keep_table(self.epsilon_p, self.delta_p, self.min_units)
        table.setflags(write=False)
        return table

    def keep_probability(self, n: int) -> float:
        """P(keep | n units)."""
        return float(keep_probabilities(self.table, np.asarray([n], dtype=np.int64))[0])

    def spend(self) -> MechanismSpend:
        """(ε, δ) for the whole selection."""
        return MechanismSpend(
            name=SPEND_NAME,
            mechanism="truncated_geometric",
            epsilon=self.epsilon,
            delta=self.delta,
            l1_sensitivity=float(self.max_partitions_per_unit),
        )


@dataclass(frozen=True)
class LaplaceThresholdSelection:
    """Laplace thresholding: keep iff n + X >= T, X discrete Laplace of scale L0/ε (unit counts).

    The noisy count is ε-DP (L1 sensitivity L0); a partition only one dataset has is
    kept with probability <= δ/L0, at most L0 such partitions: (ε, δ)-DP in total.
    The noisy n + X may be released as PRIVACY_ID_COUNT at no extra cost.
    """

    epsilon: float
    delta: float
    max_partitions_per_unit: int
    min_units: int = 1

    def __post_init__(self) -> None:
        _check_rule(self.epsilon, self.delta, self.max_partitions_per_unit, self.min_units)

    @property
    def epsilon_p(self) -> float:
        """Per-partition ε: ε/L0."""
        return self.epsilon / self.max_partitions_per_unit

    @property
    def delta_p(self) -> float:
        """Per-partition δ: δ/L0."""
        return self.delta / self.max_partitions_per_unit

    @cached_property
    def noise(self) -> DiscreteLaplace:
        """Discrete Laplace with scale L0/ε rounded up (unit counts)."""
        return laplace_for_epsilon(Sensitivity(self.max_partitions_per_unit, 1), self.epsilon)

    @cached_property
    def threshold(self) -> int:
        """Integer T: keep iff n + X >= T."""
        return laplace_threshold(self.noise, self.delta_p, self.min_units)

    def keep_probability(self, n: int) -> float:
        """P(keep | n units) = P(X >= T − n); 0 for n <= 0 (the key is not in the data)."""
        if n <= 0:
            return 0.0
        return self.noise.upper_tail(self.threshold - n)

    def spend(self) -> MechanismSpend:
        """(ε, δ) for the whole selection."""
        return MechanismSpend(
            name=SPEND_NAME,
            mechanism="laplace_threshold",
            epsilon=self.epsilon,
            delta=self.delta,
            l1_sensitivity=float(self.max_partitions_per_unit),
            noise_scale=float(self.noise.scale),
        )


@dataclass(frozen=True)
class GaussianThresholdSelection:
    """Gaussian thresholding: keep iff n + X >= T, X discrete Gaussian (unit counts).

    σ is calibrated to (ε, δ/2) for L2 sensitivity √L0 through the tight zCDP
    conversion; T keeps a one-unit partition with probability <= (δ/2)/L0, at most L0
    of them: (ε, δ)-DP in total. The noisy n + X may be released as PRIVACY_ID_COUNT.
    """

    epsilon: float
    delta: float
    max_partitions_per_unit: int
    min_units: int = 1

    def __post_init__(self) -> None:
        _check_rule(self.epsilon, self.delta, self.max_partitions_per_unit, self.min_units)

    @property
    def epsilon_p(self) -> float:
        """ε/L0, for display only: the Gaussian noise is calibrated jointly over L0 partitions."""
        return self.epsilon / self.max_partitions_per_unit

    @property
    def delta_p(self) -> float:
        """Per-partition δ of the threshold: (δ/2)/L0."""
        return (self.delta / 2.0) / self.max_partitions_per_unit

    @cached_property
    def rho(self) -> float:
        """zCDP parameter of the noisy counts: largest ρ that converts to (ε, δ/2)."""
        return rho_for_epsilon_delta(self.epsilon, self.delta / 2.0)

    @cached_property
    def noise(self) -> DiscreteGaussian:
        """Discrete Gaussian with σ² = L0/(2ρ) rounded up (unit counts)."""
        return gaussian_for_rho(Sensitivity(self.max_partitions_per_unit, 1), self.rho)

    @cached_property
    def threshold(self) -> int:
        """Integer T: keep iff n + X >= T."""
        return gaussian_threshold(self.noise, self.delta_p, self.min_units)

    def keep_probability(self, n: int) -> float:
        """P(keep | n units) = P(X >= T − n); 0 for n <= 0 (the key is not in the data)."""
        if n <= 0:
            return 0.0
        return self.noise.upper_tail(self.threshold - n)

    def spend(self) -> MechanismSpend:
        """(ε, δ) for the whole selection (ε and δ/2 from the noise, δ/2 from the threshold)."""
        return MechanismSpend(
            name=SPEND_NAME,
            mechanism="gaussian_threshold",
            epsilon=self.epsilon,
            delta=self.delta,
            l2_sensitivity=math.sqrt(self.max_partitions_per_unit),
            noise_scale=self.noise.sigma,
        )


SelectionRule = TruncatedGeometricSelection | LaplaceThresholdSelection | GaussianThresholdSelection


def keep_probability_for_units(rule: SelectionRule, n: int) -> float:
    """P(keep | n distinct units after bounding) under the rule (for plan printing)."""
    return rule.keep_probability(n)
