"""Metric kinds: one declarative record per kind of released statistic.

A ``MetricKind`` says everything the release needs to know about a statistic: whether it
measures a column, the noisy integer aggregates ("parts") it is released through with
their per-partition bounds (from which the plan derives every sensitivity), the per-row
integer term each part sums, how its values are derived from the noisy parts
(post-processing), where a released value must lie (the output contract), and its text
in the manifest and README. Plan, aggregation, noising, contracts, manifest and release
read these records; none of them tests a metric's name. Adding a metric kind is one new
record here (and its tests). Sensitivities: docs/privacy.md §4.

A tree kind (``tree=True``, ``quantiles``) has no parts: it is released through a noisy
quantile tree over the public grid on [lower, upper] (``dp_ops.quantile_tree``, docs/privacy.md
§4b), one per partition, calibrated from the metric's one budget share; its ``derive`` is
never called (the tree's descent derives its values).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NoReturn

from pipelines.derivation import (
    Derive,
    Encoding,
    Role,
    derive_count,
    derive_mean,
    derive_sum,
    derive_variance,
    variance_ceiling,
)
from pipelines.released import RANK_STATISTICS, SUFFIXES, Statistic

# Aggregated-table columns (one row per partition) shared by every metric.
UNITS = "units"
ROWS = "rows"


@dataclass(frozen=True)
class Part:
    """One noisy integer aggregate a metric kind is released through.

    Its per-partition bound (what one unit can add to one partition, in integer units) is
    ``row_bound`` per row, times Linf unless ``per_unit`` (a unit counts once); the plan
    derives the L1 and L2 sensitivities from it and L0 (docs/privacy.md §4).
    """

    role: Role
    #: Mechanism name: the metric's name itself (None) or ``<metric>.<suffix>``.
    suffix: str | None
    #: Aggregated column: ROWS or UNITS (shared by all metrics), or a prefix of the
    #: metric's own column ``<prefix>__<metric>``.
    column: str
    #: How a cell's bounded contribution to the column is computed (see
    #: cell_rules.CELL_RULES: "units" for sums, "centred", "centred_squared"); None
    #: for ROWS and UNITS, which are counted.
    term: str | None
    row_bound: Callable[[Encoding | None], int]
    per_unit: bool = False
    #: Left out when the release has a COUNT: its noisy value serves as the denominator.
    shared_count: bool = False

    def mechanism(self, metric: str) -> str:
        """The mechanism name of this part of the metric called ``metric``."""
        return metric if self.suffix is None else f"{metric}.{self.suffix}"

    def source(self, metric: str) -> str:
        """The aggregated-table column this part of ``metric`` adds noise to."""
        return self.column if self.term is None else f"{self.column}__{metric}"

    def per_partition(self, linf: int, encoding: Encoding | None) -> int:
        """Bound on what one unit adds to one partition of this aggregate."""
        bound = self.row_bound(encoding)
        return bound if self.per_unit else linf * bound


def _one(encoding: Encoding | None) -> int:
    return 1


def _max_abs(encoding: Encoding | None) -> int:
    assert encoding is not None
    return encoding.max_abs_units


def _width(encoding: Encoding | None) -> int:
    assert encoding is not None
    return encoding.width


def _width_squared(encoding: Encoding | None) -> int:
    assert encoding is not None
    return encoding.width**2


def _half_range(lower: float, upper: float) -> float:
    return (upper - lower) / 2


def _largest_magnitude(lower: float, upper: float) -> float:
    return max(abs(lower), abs(upper))


def _range(lower: float, upper: float) -> float:
    return upper - lower


def _inside_bounds(lower: float, upper: float) -> tuple[float, float]:
    return lower, upper


def _variance_range(lower: float, upper: float) -> tuple[float, float]:
    return 0.0, variance_ceiling(lower, upper)


def _no_unit(lo_units: int, hi_units: int) -> bool:
    return lo_units == hi_units == 0


def _one_point(lo_units: int, hi_units: int) -> bool:
    return lo_units == hi_units


def _both_zero(lower: float, upper: float) -> str | None:
    return "'lower' and 'upper' are both 0: the sum is always 0" if lower == upper == 0 else None


def _equal(lower: float, upper: float) -> str | None:
    if lower == upper:
        return "'lower' must be smaller than 'upper' for mean and variance"
    return None


def _equal_tree(lower: float, upper: float) -> str | None:
    if lower == upper:
        return "'lower' must be smaller than 'upper' for quantiles (the tree's grid spans them)"
    return None


def _derived_by_tree(parts: object, encoding: object, post: object, size: int) -> NoReturn:
    raise AssertionError("a tree kind's values are derived by its noisy tree, not from parts")


@dataclass(frozen=True)
class Measure:
    """How a measured metric kind picks its grid (all from public bounds and budget)."""

    #: Per-row bound in value units that sets the noise scale the grid must resolve.
    value_bound: Callable[[float, float], float]
    #: The value span the grid must resolve.
    span: Callable[[float, float], float]
    #: True when the bounds leave nothing to measure on the chosen grid.
    degenerate: Callable[[int, int], bool]
    #: Why the configured bounds measure nothing (None: they are fine).
    empty_bounds: Callable[[float, float], str | None]


@dataclass(frozen=True)
class MetricKind:
    """One kind of released statistic, declared once (see the module docstring)."""

    name: str
    parts: tuple[Part, ...]
    derive: Derive
    measure: Measure | None = None  # None: a count, which reads no column
    integer_valued: bool = False  # released as int64 (counts), else float64
    #: Where released values must lie, from the value bounds (None: no such range).
    released_range: Callable[[float, float], tuple[float, float]] | None = None
    on_grid: bool = False  # released values are multiples of the grid
    clamps_negative: bool = False  # clamp_negative_counts applies
    rounds: bool = False  # post_processing.decimals applies
    serves_as_count: bool = False  # its noisy value is the denominator of means
    #: Its true value is at most the COUNT's (consistent rows, pipelines.consistency).
    at_most_count: bool = False
    #: Its true value lies in [COUNT·lower, COUNT·upper] (consistent rows).
    within_count_bounds: bool = False
    #: The README's noise column: the std itself, or (False) std / count.
    noise_is_absolute: bool = True
    steps: tuple[str, ...] = ()  # post-processing steps, as the manifest states them
    #: Its parts include a noisy normalised sum and a count, from which a sum of the same
    #: column and bounds is post-processing (shared parts, docs/privacy.md §7).
    lends_sum: bool = False
    #: It can be derived from a ``lends_sum`` metric of the same column and bounds.
    derivable_sum: bool = False
    #: Its true value is the partition's unit count, which a threshold rule selects on.
    selection_count: bool = False
    #: Released through a noisy quantile tree (no parts; ``ranks`` configured).
    tree: bool = False

    @property
    def statistics(self) -> tuple[Statistic, ...]:
        """The statistics released per value (per rank for a tree kind)."""
        return RANK_STATISTICS if self.tree else tuple(SUFFIXES)

    @property
    def measured(self) -> bool:
        """True when the kind needs ``column``, ``lower`` and ``upper``."""
        return self.measure is not None

    def parts_for(self, count_released: bool) -> tuple[Part, ...]:
        """The parts the plan calibrates (a shared count is left out if COUNT is released)."""
        return tuple(p for p in self.parts if not (count_released and p.shared_count))


_COUNT_PART = Part("count", "count", ROWS, None, _one, shared_count=True)
_NORMALIZED_SUM = Part("value", "normalized_sum", "nsum", "centred", _width)
_CENTRED = Measure(_half_range, _range, _one_point, _equal)

COUNT = MetricKind(
    "count",
    (Part("value", None, ROWS, None, _one),),
    derive_count,
    integer_valued=True,
    clamps_negative=True,
    serves_as_count=True,
)
PRIVACY_ID_COUNT = MetricKind(
    "privacy_id_count",
    (Part("value", None, UNITS, None, _one, per_unit=True),),
    derive_count,
    integer_valued=True,
    clamps_negative=True,
    at_most_count=True,
    selection_count=True,
)
SUM = MetricKind(
    "sum",
    (Part("value", None, "sum", "units", _max_abs),),
    derive_sum,
    measure=Measure(_largest_magnitude, _largest_magnitude, _no_unit, _both_zero),
    on_grid=True,
    within_count_bounds=True,
    derivable_sum=True,
)
MEAN = MetricKind(
    "mean",
    (_COUNT_PART, _NORMALIZED_SUM),
    derive_mean,
    measure=_CENTRED,
    released_range=_inside_bounds,
    rounds=True,
    noise_is_absolute=False,
    steps=("mid + grid * noisy normalized sum / (2 * max(1, noisy count)), clamped",),
    lends_sum=True,
)
VARIANCE = replace(
    MEAN,
    name="variance",
    parts=(
        _COUNT_PART,
        _NORMALIZED_SUM,
        Part("squares", "normalized_sum_of_squares", "nsq", "centred_squared", _width_squared),
    ),
    derive=derive_variance,
    released_range=_variance_range,
    steps=("from noisy normalized sums of values and squares, clamped to >= 0",),
)

QUANTILES = MetricKind(
    "quantiles",
    (),
    _derived_by_tree,
    measure=Measure(_half_range, _range, _one_point, _equal_tree),
    released_range=_inside_bounds,
    steps=(
        "node counts made non-negative and consistent; quantiles monotone in rank, "
        "inside [lower, upper]",
    ),
    tree=True,
)

#: Every metric kind by its config name (``metrics[].metric``).
KINDS: dict[str, MetricKind] = {
    k.name: k for k in (PRIVACY_ID_COUNT, COUNT, SUM, MEAN, VARIANCE, QUANTILES)
}


def kind_of(name: str) -> MetricKind:
    """The metric kind called ``name`` (config validation guarantees it exists)."""
    return KINDS[name]
