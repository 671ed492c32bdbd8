"""Private partition selection: which partition keys present in the data may be released.

n is the number of distinct privacy units in a partition AFTER contribution bounding,
so one unit changes n by at most 1 in each of at most L0 partitions. A partition
absent from one of two neighbouring datasets has n = 1 in the other; every rule below
releases such a partition with probability <= delta_p, which is where the delta of
selection goes.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from dp_ops.checks import check_delta, check_positive, check_positive_int
from dp_ops.noise import DiscreteGaussian, DiscreteLaplace, smallest_integer

__all__ = [
    "MAX_KEEP_TABLE_LENGTH",
    "MIN_KEEP_TABLE_DELTA",
    "gaussian_threshold",
    "keep_probabilities",
    "keep_table_length_lower_bound",
    "laplace_threshold",
    "noise_threshold",
    "per_partition_budget",
    "truncated_geometric_keep_table",
]

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


def per_partition_budget(
    epsilon: float, delta: float, max_partitions_per_unit: int
) -> tuple[float, float]:
    """(ε/L0, δ/L0): spending this on each of a unit's <= L0 partitions costs (ε, δ) in total."""
    check_positive("epsilon", epsilon)
    check_delta("delta", delta)
    check_positive_int("max_partitions_per_unit", max_partitions_per_unit)
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
    check_positive("epsilon_p", epsilon_p)
    if not (math.isfinite(delta_p) and 0 < delta_p < 1):
        raise ValueError(f"delta_p must be in (0, 1), got {delta_p!r}")
    check_positive_int("min_units", min_units)
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
    check_positive("epsilon_p", epsilon_p)
    if epsilon_p > _MAX_EPSILON_P:
        raise ValueError(f"epsilon_p must be <= {_MAX_EPSILON_P}, got {epsilon_p!r}")
    if not (math.isfinite(delta_p) and MIN_KEEP_TABLE_DELTA <= delta_p < 1):
        raise ValueError(f"delta_p must be in [{MIN_KEEP_TABLE_DELTA}, 1), got {delta_p!r}")
    check_positive_int("min_units", min_units)
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


def noise_threshold(
    noise: DiscreteLaplace | DiscreteGaussian, delta_p: float, min_units: int = 1
) -> int:
    """Threshold T for noisy unit counts: the smallest integer with P(1 + X >= T) <= δ_p,
    raised by min_units − 1 (docs/privacy.md §6)."""
    check_delta("delta_p", delta_p)
    check_positive_int("min_units", min_units)
    target = delta_p * (1.0 - _THRESHOLD_MARGIN)
    # P(1 + X >= T) = P(X >= T − 1)
    smallest = smallest_integer(lambda threshold: noise.upper_tail(threshold - 1) <= target)
    return smallest + (min_units - 1)


def laplace_threshold(noise: DiscreteLaplace, delta_p: float, min_units: int = 1) -> int:
    """Smallest integer T with P(1 + X >= T) <= δ_p, plus (min_units − 1); keep iff n + X >= T.

    The tail is the exact discrete Laplace tail of the noise actually sampled (asked
    to be <= δ_p·(1 − 1e-9) to absorb float error). A partition that only one unit
    makes present (n = 1) is then kept with probability <= δ_p; shifting T up only
    lowers that probability.
    """
    return noise_threshold(noise, delta_p, min_units)


def gaussian_threshold(noise: DiscreteGaussian, delta_p: float, min_units: int = 1) -> int:
    """Same as laplace_threshold with the discrete Gaussian tail (summed pmf)."""
    return noise_threshold(noise, delta_p, min_units)
