"""Fixed-point grid: clamped values become exact integers before aggregation.

A grid is a power-of-two step g = 2**exponent, chosen from the public value bounds
and the public noise scale only, never from the data. encode() clamps to the bounds
and rounds x/g half-to-even, so sums can be exact integer sums whose sensitivity
follows from the bounds; released values are g·(integer), on the public grid.

Overflow proof (for the Spark side): choose_grid keeps every encoded row within
|units| <= 2**40. Sums are computed as decimal(38,0); a Spark partition holds at most
2**63 rows (row counts are longs), so |sum| <= 2**63 · 2**40 = 2**103 < 10**38 and no
overflow, hence no data-dependent failure, is possible. (An int64 sum is NOT safe
beyond 2**23 rows of maximal magnitude: keep the decimal, or Python ints, downstream.)

Spark agreement: Spark computes bround(least(greatest(x, lower), upper) / g) with
HALF_EVEN. Dividing a double by a power of two is exact (barring underflow to
subnormals, which round to 0 either way), and Spark rounds the shortest decimal
representation of that double, which is exactly k + 0.5 only when the double is, so
the result equals np.rint here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["MAX_ABS_UNITS", "Grid", "choose_grid", "count_grid"]

# Largest |encoded value| of one row that choose_grid allows.
MAX_ABS_UNITS = 2**40
_MIN_EXPONENT = -1000
_MAX_EXPONENT = 1000


def _check_bounds(lower: float, upper: float) -> None:
    if not (math.isfinite(lower) and math.isfinite(upper) and lower <= upper):
        raise ValueError(f"bounds must be finite with lower <= upper, got [{lower!r}, {upper!r}]")


@dataclass(frozen=True)
class Grid:
    """The public grid of step 2**exponent."""

    exponent: int

    def __post_init__(self) -> None:
        if isinstance(self.exponent, bool) or not isinstance(self.exponent, int):
            raise ValueError(f"exponent must be an int, got {self.exponent!r}")
        if not _MIN_EXPONENT <= self.exponent <= _MAX_EXPONENT:
            raise ValueError(
                f"exponent must be in [{_MIN_EXPONENT}, {_MAX_EXPONENT}], got {self.exponent}"
            )

    @property
    def step(self) -> float:
        """g = 2**exponent, an exact power of two."""
        return math.ldexp(1.0, self.exponent)

    def encode(self, values: ArrayLike, lower: float, upper: float) -> NDArray[np.int64]:
        """rint(clamp(x, lower, upper)/g) as int64; |result| <= max_abs_units(lower, upper).

        NaN is a ValueError (clamp(NaN) would be NaN); ±inf clamp to the bounds.
        """
        _check_bounds(lower, upper)
        x = np.asarray(values, dtype=np.float64)
        if np.isnan(x).any():
            raise ValueError("cannot encode NaN; drop or replace NaN values before encoding")
        clamped = np.clip(x, lower, upper)
        scaled = np.ldexp(clamped, -self.exponent)  # exact division by g
        if np.abs(scaled).max(initial=0.0) >= 2.0**63:
            raise ValueError("encoded values do not fit in int64; use a coarser grid")
        return np.rint(scaled).astype(np.int64)

    @overload
    def decode(self, units: int) -> float: ...

    @overload
    def decode(self, units: NDArray[np.int64]) -> NDArray[np.float64]: ...

    def decode(self, units: int | NDArray[np.int64]) -> NDArray[np.float64] | float:
        """units·g: exact while |units| < 2**53, correctly rounded to float beyond."""
        if isinstance(units, int | np.integer):
            return math.ldexp(float(int(units)), self.exponent)
        array = np.asarray(units)
        if array.dtype == object:
            flat = [math.ldexp(float(int(u)), self.exponent) for u in array.ravel().tolist()]
            return np.asarray(flat, dtype=np.float64).reshape(array.shape)
        return np.asarray(np.ldexp(array.astype(np.float64), self.exponent), dtype=np.float64)

    def units_range(self, lower: float, upper: float) -> tuple[int, int]:
        """(encode(lower), encode(upper)): every encoded value lies in this range."""
        low, high = self.encode(np.asarray([lower, upper]), lower, upper).tolist()
        return int(low), int(high)

    def max_abs_units(self, lower: float, upper: float) -> int:
        """max |encode(x)| over x in [lower, upper] (encode is monotone: an endpoint)."""
        low, high = self.units_range(lower, upper)
        return max(abs(low), abs(high))


def choose_grid(lower: float, upper: float, noise_scale: float, resolution_bits: int = 10) -> Grid:
    """Grid from public inputs only: a deterministic function of its arguments.

    Rule: g is the largest power of two <= noise_scale / 2**resolution_bits (noise_scale
    in value units: the Laplace b or Gaussian σ that the metric will get), so the
    rounding error per row, <= g/2, is at most 2**-(resolution_bits+1) of the noise
    scale. Then g is coarsened (doubled) until max_abs_units(lower, upper) <= 2**40,
    which bounds every encoded row and makes decimal(38,0) sums overflow-free (module
    docstring). Nothing else (in particular no data) enters the choice.
    """
    _check_bounds(lower, upper)
    if not (math.isfinite(noise_scale) and noise_scale > 0):
        raise ValueError(f"noise_scale must be finite and > 0, got {noise_scale!r}")
    if isinstance(resolution_bits, bool) or not isinstance(resolution_bits, int):
        raise ValueError(f"resolution_bits must be an int, got {resolution_bits!r}")
    if not 0 <= resolution_bits <= 60:
        raise ValueError(f"resolution_bits must be in [0, 60], got {resolution_bits}")
    _, exponent_of_scale = math.frexp(noise_scale)  # noise_scale = m·2**e, m in [0.5, 1)
    exponent = max(_MIN_EXPONENT, exponent_of_scale - 1 - resolution_bits)
    bound = max(abs(lower), abs(upper))
    if bound > 0:
        # Jump close to the smallest exponent with bound/g <= 2**40, then settle exactly.
        _, exponent_of_bound = math.frexp(bound)
        exponent = max(exponent, exponent_of_bound - 41)
    if exponent > _MAX_EXPONENT:
        raise ValueError("bounds or noise scale too large for a grid")
    while Grid(exponent).max_abs_units(lower, upper) > MAX_ABS_UNITS:
        exponent += 1
    return Grid(exponent)


def count_grid() -> Grid:
    """The grid of counts: step 1 (exponent 0)."""
    return Grid(0)


def rounded_bounds(lower: float, upper: float, decimals: int) -> tuple[float, float]:
    """The smallest and largest numbers with ``decimals`` decimals inside [lower, upper].

    Raises ValueError if there is none (the plan refuses such a config).
    """
    scale = 10.0**decimals
    low, high = math.ceil(lower * scale - 1e-9) / scale, math.floor(upper * scale + 1e-9) / scale
    low, high = max(low, lower), min(high, upper)
    if low > high:
        raise ValueError(f"no number with {decimals} decimal(s) lies in [{lower}, {upper}]")
    return low, high
