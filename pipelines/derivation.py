"""Released values from noisy integers: the post-processing of every metric kind.

Invariant: every function here reads only noisy integers, the public noise parameters and
the configuration (bounds, grid, rounding), never a raw aggregate, so its output is
post-processing of the mechanisms and costs no budget (docs/privacy.md §4, §7). Intervals
describe the noise only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from dp_ops.grid import Grid, rounded_bounds
from dp_ops.noise import LinearNoise, NoiseDistribution

IntArray = npt.NDArray[np.int64] | npt.NDArray[np.object_]
FloatArray = npt.NDArray[np.float64]
#: What a noisy aggregate is to the metric it serves.
Role = Literal["value", "count", "squares"]


@dataclass(frozen=True)
class Encoding:
    """How one metric's measured column becomes integers: clamp, then round to grid units.

    ``units = bround(clamp(x, lower, upper) / grid.step)`` lies in [lo_units, hi_units].
    Mean and variance use the centred value ``y = 2*units - (lo_units + hi_units)``, |y| <= width.
    """

    column: str
    lower: float
    upper: float
    grid: Grid
    lo_units: int
    hi_units: int

    @property
    def width(self) -> int:
        """Bound on |y| for the centred integer value y."""
        return self.hi_units - self.lo_units

    @property
    def max_abs_units(self) -> int:
        """Bound on |units| for sums."""
        return max(abs(self.lo_units), abs(self.hi_units))


@dataclass(frozen=True)
class PostProcessing:
    """Data-free post-processing of released values (config ``post_processing``)."""

    clamp_negative_counts: bool
    decimals: int | None
    consistent_rows: bool = True  # docs/privacy.md §7, pipelines.consistency
    reliability_share: float | None = None  # flags: see ``unreliable``


@dataclass(frozen=True)
class NoisyPart:
    """One noisy aggregate of the kept partitions, with its public noise parameters."""

    values: IntArray  # exact aggregate + integer noise, in grid units
    noise: NoiseDistribution | LinearNoise  # a shared sum's: a sum of its parts' noise
    half_width: int  # grid units, at the plan's confidence level
    #: The noisy value before the consistency projection (None: not projected). The
    #: noise-only interval is built around it, then widened to hold the released value.
    center: IntArray | None = None

    @property
    def interval_center(self) -> IntArray:
        """The noisy integers the noise-only interval is centred on."""
        return self.values if self.center is None else self.center

    def widened(
        self, value: npt.NDArray[Any], low: npt.NDArray[Any], high: npt.NDArray[Any]
    ) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """The interval widened to hold ``value`` on the rows the projection moved only.

        Elsewhere it is left as computed, so a broken interval still shows in the output
        contract instead of being hidden.
        """
        if self.center is None:
            return low, high
        moved = np.asarray(self.values != self.center, dtype=bool)
        return (
            np.where(moved, np.minimum(low, value), low),
            np.where(moved, np.maximum(high, value), high),
        )


@dataclass(frozen=True)
class Released:
    """One metric's released columns for the kept partitions: value, std, interval."""

    value: npt.NDArray[np.generic]
    std: FloatArray
    low: npt.NDArray[np.generic]
    high: npt.NDArray[np.generic]


#: A metric kind's post-processing: noisy parts by role → released columns.
Derive = Callable[[Mapping[Role, NoisyPart], "Encoding | None", PostProcessing, int], Released]


#: The reliability rule, as the manifest, the README and docs/privacy.md §7 state it.
RELIABILITY_RULE = (
    "true when the interval half-width (ci_high - ci_low) / 2 exceeds share * |value|"
)


def unreliable(
    value: npt.ArrayLike, low: npt.ArrayLike, high: npt.ArrayLike, share: float
) -> npt.NDArray[np.bool_]:
    """The "use with caution" flag of released values: half-width > share · |value|.

    Reads released columns only (post-processing). Values of 0 with any noise are flagged;
    NaN (never released) compares false. The one definition: the noise step, the output
    contract and ``verify`` all call it on the same float64 values.
    """
    v, lo, hi = (np.asarray(a, dtype=np.float64) for a in (value, low, high))
    with np.errstate(invalid="ignore"):
        return np.asarray((hi - lo) / 2 > share * np.abs(v), dtype=bool)


def _as_float(values: IntArray) -> FloatArray:
    return np.asarray(values, dtype=np.float64)


def _round(values: FloatArray, decimals: int | None, lower: float, upper: float) -> FloatArray:
    """Round to ``decimals`` and stay inside [lower, upper] (docs/privacy.md §7).

    Monotone, so interval order (low <= value <= high) survives rounding.
    """
    if decimals is None:
        return values
    low, high = rounded_bounds(lower, upper, decimals)
    return np.clip(np.round(values, decimals), low, high)


def derive_count(
    parts: Mapping[Role, NoisyPart], encoding: Encoding | None, post: PostProcessing, size: int
) -> Released:
    """A noisy count, its interval; negatives reported as 0 when configured."""
    part = parts["value"]
    counts = np.asarray(part.values, dtype=np.int64)
    center = np.asarray(part.interval_center, dtype=np.int64)
    low, high = center - part.half_width, center + part.half_width
    if post.clamp_negative_counts:
        counts, low, high = (np.maximum(v, 0) for v in (counts, low, high))
    low, high = part.widened(counts, low, high)
    return Released(counts, np.full(size, part.noise.std()), low, high)


def derive_sum(
    parts: Mapping[Role, NoisyPart], encoding: Encoding | None, post: PostProcessing, size: int
) -> Released:
    """A noisy sum on its grid: g · (exact units + noise), or its consistent projection."""
    assert encoding is not None
    part, g = parts["value"], encoding.grid.step
    total, h = _as_float(part.values), part.half_width
    center = _as_float(part.interval_center)
    low, high = part.widened(total, center - h, center + h)
    return Released(total * g, np.full(size, part.noise.std() * g), low * g, high * g)


@dataclass(frozen=True)
class _Ratio:
    """A noisy normalised sum over a noisy count (>= 1), with corner bounds of the ratio."""

    encoding: Encoding
    total: FloatArray
    count: FloatArray
    count_low: FloatArray
    count_high: FloatArray
    mean_y: FloatArray
    y_low: FloatArray
    y_high: FloatArray


def _corners(
    total: FloatArray, half_width: int, low: FloatArray, high: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Least and greatest of (total ± half_width) / count over count in {low, high}."""
    corners = [(total + s * half_width) / c for s in (-1, 1) for c in (low, high)]
    return np.minimum.reduce(corners), np.maximum.reduce(corners)


def _ratio(parts: Mapping[Role, NoisyPart], encoding: Encoding | None) -> _Ratio:
    assert encoding is not None
    numerator, counter = parts["value"], parts["count"]
    total = _as_float(numerator.values)
    count = np.maximum(_as_float(counter.values), 1.0)
    count_low = np.maximum(count - counter.half_width, 1.0)
    count_high = count + counter.half_width
    y_low, y_high = _corners(total, numerator.half_width, count_low, count_high)
    return _Ratio(encoding, total, count, count_low, count_high, total / count, y_low, y_high)


def _finish(
    value: FloatArray,
    std: FloatArray,
    low: FloatArray,
    high: FloatArray,
    post: PostProcessing,
    floor: float,
    top: float,
) -> Released:
    """Order the interval around the value, then round everything inside [floor, top]."""
    low, high = np.minimum(low, value), np.maximum(high, value)
    return Released(
        _round(value, post.decimals, floor, top),
        std,
        _round(low, post.decimals, floor, top),
        _round(high, post.decimals, floor, top),
    )


def derive_mean(
    parts: Mapping[Role, NoisyPart], encoding: Encoding | None, post: PostProcessing, size: int
) -> Released:
    """mid + g · noisy normalised sum / (2 · max(1, noisy count)), clamped to the bounds."""
    r = _ratio(parts, encoding)
    g, mid_units = r.encoding.grid.step, (r.encoding.lo_units + r.encoding.hi_units) / 2
    numerator, counter = parts["value"], parts["count"]
    lower, upper = r.encoding.lower, r.encoding.upper
    # Mean in centred units: y = 2*units - (lo + hi), so x = g * (mid + y / 2).
    value = np.clip(g * (mid_units + r.mean_y / 2), lower, upper)
    std = (
        g
        / 2
        * np.sqrt(
            (numerator.noise.std() / r.count) ** 2
            + (r.total * counter.noise.std() / r.count**2) ** 2
        )
    )
    low = np.clip(g * (mid_units + r.y_low / 2), lower, upper)
    high = np.clip(g * (mid_units + r.y_high / 2), lower, upper)
    return _finish(value, std, low, high, post, lower, upper)


def variance_ceiling(lower: float, upper: float) -> float:
    """The largest variance of values in [lower, upper]: ((upper − lower) / 2)²."""
    return ((upper - lower) / 2) ** 2


def derive_variance(
    parts: Mapping[Role, NoisyPart], encoding: Encoding | None, post: PostProcessing, size: int
) -> Released:
    """Noisy mean of squares minus squared noisy mean, clamped to [0, ((u − l)/2)²]."""
    r = _ratio(parts, encoding)
    ceiling = variance_ceiling(r.encoding.lower, r.encoding.upper)
    scale = r.encoding.grid.step * r.encoding.grid.step / 4
    numerator, squares = parts["value"], parts["squares"]
    square_total = _as_float(squares.values)
    value = np.clip(scale * (square_total / r.count - r.mean_y**2), 0.0, ceiling)
    q_low, q_high = _corners(square_total, squares.half_width, r.count_low, r.count_high)
    straddles = (r.y_low <= 0) & (r.y_high >= 0)
    m2_low = np.where(straddles, 0.0, np.minimum(r.y_low**2, r.y_high**2))
    m2_high = np.maximum(r.y_low**2, r.y_high**2)
    low = np.clip(scale * (q_low - m2_high), 0.0, ceiling)
    high = np.clip(scale * (q_high - m2_low), 0.0, ceiling)
    std = scale * np.sqrt(
        (squares.noise.std() / r.count) ** 2 + (2 * r.mean_y * numerator.noise.std() / r.count) ** 2
    )
    return _finish(value, std, low, high, post, 0.0, ceiling)
