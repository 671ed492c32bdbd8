"""The ``accuracy`` section: planning targets, read by `dprelease plan` only.

Invariant: nothing here changes a release. Targets and partition sizes are public
planning assumptions (no data is read to state them); ``build_plan`` ignores the section,
so a run's noise, spend and manifest are the same with or without it (docs/privacy.md §7).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from pipelines.config.fields import _Frozen
from pipelines.config.limits import Integer, Number

# Largest partition size (privacy units) a target or a reported size may state.
MAX_PLANNED_UNITS = 10**12


class AccuracyTarget(_Frozen):
    """One metric's target: its interval half-width at a partition of ``units`` units."""

    metric: str = Field(description="Output name of a metric (e.g. mean_rating, count).")
    units: Annotated[Integer, Field(ge=1, le=MAX_PLANNED_UNITS)] = Field(
        description="Partition size, in privacy units, at which the target must hold."
    )
    half_width: Annotated[Number, Field(gt=0)] | None = Field(
        default=None,
        description="Absolute interval half-width, in the metric's own units (5.2 ± 0.3).",
    )
    relative: Annotated[Number, Field(gt=0, le=10)] | None = Field(
        default=None,
        description=(
            "Half-width as a fraction of the value at that size: counts of rows "
            "units x rows_per_unit, unit counts units, sums units x rows_per_unit x "
            "max(|lower|, |upper|), means the width of their bounds (upper - lower); "
            "quantiles: a half-width in ranks, a fraction of the partition's values "
            "(0.05: within 5 percentile points), the only target they take."
        ),
    )

    @model_validator(mode="after")
    def _one_kind(self) -> AccuracyTarget:
        if (self.half_width is None) == (self.relative is None):
            raise ValueError("give exactly one of 'half_width' (absolute) or 'relative'")
        return self


class AccuracyConfig(_Frozen):
    """Planning assumptions and targets for `dprelease plan` (the release ignores them)."""

    rows_per_unit: Annotated[Integer, Field(ge=1)] = Field(
        default=1,
        description=(
            "Rows each unit is assumed to add to a partition (capped at "
            "max_rows_per_unit_per_partition): sets the row count at a partition size."
        ),
    )
    units: Annotated[
        list[Annotated[Integer, Field(ge=1, le=MAX_PLANNED_UNITS)]], Field(min_length=1)
    ] = Field(
        default_factory=lambda: [10, 100, 1000, 10000],
        description="Partition sizes (privacy units) at which plan reports expected intervals.",
    )
    targets: list[AccuracyTarget] = Field(
        default_factory=list,
        description="Per-metric targets: plan finds the smallest epsilon and split meeting all.",
    )
