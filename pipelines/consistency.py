"""Consistent rows: a data-free projection of each released row onto what true values obey.

After contribution bounding the true aggregates of a partition satisfy, for its COUNT C,
PRIVACY_ID_COUNT U and the SUM S of a column with bounds [lo_u, hi_u] in grid units:
C >= U >= 0 (each kept cell adds 1 to U and c >= 1 to C) and C·lo_u <= S <= C·hi_u (each
cell's sum lies in [c·lo_u, c·hi_u]). Independent noise breaks these; this module restores
them. Invariant: every function reads only noisy integers, public noise variances and
public bounds, never a raw aggregate, so its output is post-processing and costs no
budget (docs/privacy.md §7, "Consistent rows").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from pipelines.derivation import IntArray, PostProcessing

if TYPE_CHECKING:
    from pipelines.plan import OutputMetric

LongArray = npt.NDArray[np.int64]
#: Past this magnitude an integer array is kept as Python ints (exact), as in noising.
_LONG_LIMIT = 2**62


@dataclass(frozen=True)
class Bounded:
    """One released metric a rule adjusts: its output name and its noisy aggregate."""

    output: str
    aggregate: str


@dataclass(frozen=True)
class SumBound:
    """A released SUM and its column's bounds in grid units: C·lo_u <= S <= C·hi_u."""

    metric: Bounded
    lo_units: int
    hi_units: int
    grid: float


@dataclass(frozen=True)
class RowRules:
    """The inequalities the release makes hold on every row (from the plan, data-free)."""

    count: Bounded | None  # the COUNT, if released
    units: tuple[Bounded, ...]  # PRIVACY_ID_COUNTs: at most the COUNT
    sums: tuple[SumBound, ...]  # SUMs: inside [C·lo_u, C·hi_u], or by sign without a COUNT

    @property
    def empty(self) -> bool:
        """True when no rule applies (nothing to project, nothing to check)."""
        return not self.units and not self.sums


NO_RULES = RowRules(None, (), ())


def row_rules(outputs: Iterable[OutputMetric], post: PostProcessing) -> RowRules:
    """The consistency rules of a plan's outputs (none when ``consistent_rows`` is off)."""
    if not post.consistent_rows:
        return NO_RULES
    outputs = tuple(outputs)
    count = next(
        (Bounded(o.name, o.value_aggregate) for o in outputs if o.kind.serves_as_count), None
    )
    units = tuple(Bounded(o.name, o.value_aggregate) for o in outputs if o.kind.at_most_count)
    sums = tuple(
        SumBound(
            Bounded(o.name, o.value_aggregate),
            o.encoding.lo_units,
            o.encoding.hi_units,
            o.encoding.grid.step,
        )
        for o in outputs
        if o.kind.within_count_bounds and o.encoding is not None
    )
    return RowRules(count, units if count is not None else (), sums)


def project_count_pair(
    units: IntArray, rows: IntArray, units_variance: float, rows_variance: float
) -> tuple[LongArray, LongArray]:
    """Weighted least-squares projection of noisy (U, C) onto C >= U, rounded to integers.

    Where C < U, both become the inverse-variance weighted mean
    (var_C·U + var_U·C) / (var_U + var_C), rounded half to even; elsewhere nothing changes.
    Clamping both at 0 afterwards (``clamp_negative_counts``) makes the result the exact
    projection onto C >= U >= 0. A function of the noisy values and variances only.
    """
    u = np.asarray(units, dtype=np.int64)
    c = np.asarray(rows, dtype=np.int64)
    total = units_variance + rows_variance
    merged = np.rint((rows_variance * u + units_variance * c) / total).astype(np.int64)
    crossed = c < u
    return np.where(crossed, merged, u), np.where(crossed, merged, c)


def _exact(values: IntArray) -> IntArray:
    """Object arrays back to int64 when every value fits (like the noisy integers)."""
    if values.dtype != object or len(values) == 0:
        return values
    if max(abs(int(v)) for v in values) < _LONG_LIMIT:
        return values.astype(np.int64)
    return values


def clip_sum(total: IntArray, count: IntArray | None, lo_units: int, hi_units: int) -> IntArray:
    """A noisy sum (grid units) clipped to [max(C, 0)·lo_u, max(C, 0)·hi_u].

    Without a released count only the sign the bounds imply is kept: >= 0 when lo_u >= 0,
    <= 0 when hi_u <= 0. Exact integer arithmetic (Python ints where longs could overflow).
    """
    values = np.asarray(total, dtype=object)
    if count is None:
        if lo_units >= 0:
            values = np.maximum(values, 0)
        if hi_units <= 0:
            values = np.minimum(values, 0)
        return _exact(values)
    rows = np.maximum(np.asarray(count, dtype=object), 0)
    low, high = rows * lo_units, rows * hi_units
    return _exact(np.minimum(np.maximum(values, low), high))


def consistent_values(
    rules: RowRules, noisy: Mapping[str, IntArray], variances: Mapping[str, float]
) -> dict[str, IntArray]:
    """The projected noisy integers, by aggregate name, of the aggregates that change.

    First every PRIVACY_ID_COUNT is projected with the COUNT (``project_count_pair``) and
    capped at the final COUNT; then each SUM is clipped with the released COUNT
    (``clip_sum``). Reads only ``noisy`` and the public ``variances``.
    """
    out: dict[str, IntArray] = {}
    count = rules.count
    if count is not None and rules.units:
        rows = np.asarray(noisy[count.aggregate], dtype=np.int64)
        for units in rules.units:
            out[units.aggregate], rows = project_count_pair(
                noisy[units.aggregate],
                rows,
                variances[units.aggregate],
                variances[count.aggregate],
            )
        out[count.aggregate] = rows
        for units in rules.units:
            out[units.aggregate] = np.minimum(out[units.aggregate], rows)
    released_count = None
    if count is not None:
        released_count = out.get(count.aggregate, noisy[count.aggregate])
    for bound in rules.sums:
        name = bound.metric.aggregate
        out[name] = clip_sum(noisy[name], released_count, bound.lo_units, bound.hi_units)
    return out


def consistency_steps(rules: RowRules, output: str) -> list[str]:
    """The consistent-row steps of one output, as the manifest lists its post-processing."""
    count = rules.count
    if count is None:
        return [
            "clipped to the sign its bounds imply (lower >= 0: >= 0; upper <= 0: <= 0)"
            for bound in rules.sums
            if bound.metric.output == output and (bound.lo_units >= 0 or bound.hi_units <= 0)
        ]
    units = [u.output for u in rules.units]
    steps = []
    if output in units or (output == count.output and units):
        steps.append(
            f"made consistent: where '{count.output}' < {units}, both replaced by their "
            "inverse-variance weighted mean (weighted least-squares projection onto "
            f"'{count.output}' >= each of {units}), rounded to an integer"
        )
    if any(bound.metric.output == output for bound in rules.sums):
        steps.append(
            f"clipped to ['{count.output}' * lower, '{count.output}' * upper] "
            "(bounds rounded to the grid)"
        )
    return steps
