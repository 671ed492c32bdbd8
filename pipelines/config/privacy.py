"""The config sections that set the privacy guarantee and its cost.

The privacy unit, contribution bounds, metrics and their value bounds, the release
budget, the ledger with its lifetime budget, and partition selection. Nothing here is a
sensitivity or a noise scale (those are derived by code from the bounds and the budget,
see ``pipelines.plan``).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pipelines.config.fields import ConfigPath, _Frozen
from pipelines.config.limits import (
    MAX_PARTITIONS_PER_UNIT_LIMIT,
    MAX_ROWS_PER_UNIT_PER_PARTITION_LIMIT,
    MIN_UNITS_LIMIT,
    Delta,
    Epsilon,
    Integer,
    LifetimeDelta,
    LifetimeEpsilon,
    Number,
    _at_most,
)
from pipelines.config.sections import PublicKeysConfig
from pipelines.ledger import dataset_name
from pipelines.metric_kinds import kind_of

_SERVER_URL = re.compile(r"^postgres(ql)?://[^\s]+$")
# Names released as column names: no path characters, no spaces.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class PrivacyUnitConfig(_Frozen):
    """The column that identifies a privacy unit, and what one unit's data covers."""

    column: str = Field(description="Column holding the privacy unit id (a user, patient, device).")
    time_scope: str = Field(
        default="all rows of the unit in the input",
        description="Text stating which of a unit's data one release protects.",
    )


_EXACT_SUMS = "integer sums and sensitivities must stay exact"


class ContributionBoundsConfig(_Frozen):
    """How much one privacy unit may contribute (after bounding)."""

    max_partitions_per_unit: Annotated[
        Integer,
        _at_most(MAX_PARTITIONS_PER_UNIT_LIMIT, "MAX_PARTITIONS_PER_UNIT_LIMIT", _EXACT_SUMS),
    ] = Field(gt=0, description="L0: partitions one unit may touch (1 to 1,000,000).")
    max_rows_per_unit_per_partition: Annotated[
        Integer,
        _at_most(
            MAX_ROWS_PER_UNIT_PER_PARTITION_LIMIT,
            "MAX_ROWS_PER_UNIT_PER_PARTITION_LIMIT",
            _EXACT_SUMS,
        ),
    ] = Field(gt=0, description="Linf: rows per unit and partition (1 to 1,000,000).")


MetricName = Literal["count", "privacy_id_count", "sum", "mean", "variance", "quantiles"]
#: Most ranks one quantiles metric releases (all share its one budget share).
MAX_RANKS = 10


class MetricConfig(_Frozen):
    """One released statistic per partition."""

    metric: MetricName = Field(
        description="count, privacy_id_count, sum, mean, variance or quantiles."
    )
    column: str | None = Field(
        default=None, description="Measured column (sum, mean, variance, quantiles)."
    )
    lower: Number | None = Field(
        default=None, description="Lower value bound (values are clamped)."
    )
    upper: Number | None = Field(
        default=None, description="Upper value bound (values are clamped)."
    )
    name: str | None = Field(
        default=None, description="Output column name; default metric[_column]."
    )
    ranks: list[Number] | None = Field(
        default=None,
        validate_default=True,
        description=(
            "quantiles only (required): ranks strictly between 0 and 1, distinct, at most 10; "
            "each releases <name>_p<percent> (0.5: _p50, 0.995: _p99_5) with _ci_low, _ci_high."
        ),
    )

    @field_validator("ranks")
    @classmethod
    def _ranks_match_metric(
        cls, value: list[float] | None, info: ValidationInfo
    ) -> list[float] | None:
        """Invariant: ranks are given exactly for a tree kind, each in (0, 1), distinct, at
        most MAX_RANKS (the error names ``metrics[i].ranks``)."""
        metric = info.data.get("metric")
        if metric is None:
            return value  # the metric itself is invalid and reported
        if not kind_of(metric).tree:
            if value is not None:
                raise ValueError(f"metric '{metric}' takes no 'ranks' (only quantiles does)")
            return value
        if value is None:
            raise ValueError("metric 'quantiles' needs 'ranks', for example [0.5]")
        if not 1 <= len(value) <= MAX_RANKS:
            raise ValueError(f"give 1 to {MAX_RANKS} ranks (MAX_RANKS), not {len(value)}")
        outside = [r for r in value if not (math.isfinite(r) and 0 < r < 1)]
        if outside:
            raise ValueError(f"each rank must be strictly between 0 and 1: {outside}")
        if len(set(value)) != len(value):
            raise ValueError(f"ranks must be distinct: {value}")
        return value

    @model_validator(mode="after")
    def _bounds_match_metric(self) -> MetricConfig:
        measure = kind_of(self.metric).measure
        if measure is not None:
            if self.column is None:
                raise ValueError(f"metric '{self.metric}' needs 'column'")
            if self.lower is None or self.upper is None:
                raise ValueError(f"metric '{self.metric}' needs 'lower' and 'upper'")
            if not (math.isfinite(self.lower) and math.isfinite(self.upper)):
                raise ValueError("'lower' and 'upper' must be finite numbers")
            if self.lower > self.upper:
                raise ValueError(f"'lower' ({self.lower}) is greater than 'upper' ({self.upper})")
            empty = measure.empty_bounds(self.lower, self.upper)
            if empty is not None:
                raise ValueError(empty)
            if max(abs(self.lower), abs(self.upper)) > 2.0**60:
                raise ValueError("bounds beyond ±2^60 are not supported")
        elif self.column is not None or self.lower is not None or self.upper is not None:
            raise ValueError(f"metric '{self.metric}' takes no 'column', 'lower' or 'upper'")
        if self.name is not None and not _NAME.match(self.name):
            raise ValueError("'name' must be letters, digits and '_', starting with a letter")
        return self

    @property
    def output_name(self) -> str:
        """The released column name."""
        if self.name is not None:
            return self.name
        return self.metric if self.column is None else f"{self.metric}_{self.column}"


class BudgetConfig(_Frozen):
    """The privacy budget of this release, and how it is split."""

    epsilon: Epsilon = Field(description="Total epsilon of the release, 1e-6 to 100.")
    delta: Delta = Field(
        default=0.0, description="Total delta of the release: 0, or 1e-100 to 1e-4 (DELTA_CEILING)."
    )
    weights: dict[str, Number] | None = Field(
        default=None,
        description=(
            "Share of the budget per mechanism: 'selection' (private selection only) and each "
            "metric's output name. Must sum to 1. Default: selection and the "
            "privacy_id_count it may threshold get equal shares, the other metrics the rest "
            "by the minimum-relative-variance rule (README, 'Default weights')."
        ),
    )
    share_parts: bool = Field(
        default=False,
        description=(
            "true: a sum whose column and bounds equal a mean's or variance's is derived from "
            "that metric's noisy normalised sum and count (no noise of its own; its weight is "
            "spent by that metric's parts), counting Linf times a cell's mean where a "
            "separate sum clamps the cell's total. Default false: the sum draws its own noise."
        ),
    )


class LifetimeBudgetConfig(_Frozen):
    """The most (epsilon, delta) all releases of one dataset and privacy unit may spend."""

    epsilon: LifetimeEpsilon = Field(
        description="Lifetime epsilon of the dataset per privacy unit (> 0)."
    )
    delta: LifetimeDelta = Field(default=0.0, description="Lifetime delta, 0 <= delta < 1.")


class LedgerConfig(_Frozen):
    """Where the spend of every run is recorded, and the lifetime budget it is checked against."""

    dataset: str = Field(
        description=(
            "Name of the private dataset this job reads. Every release of the same dataset "
            "and privacy unit draws on one lifetime budget (sequential composition). Case "
            "and surrounding spaces are ignored."
        )
    )
    lifetime_budget: LifetimeBudgetConfig
    path: ConfigPath | None = Field(
        default=None,
        description=(
            "SQLite ledger file on a local file system (relative: to the config file's "
            "folder). Default: <release.output_root>/_ledger/ledger.sqlite. Not with 'url'."
        ),
    )
    url: str | None = Field(
        default=None,
        description=(
            "PostgreSQL server ledger instead of a file: postgresql://USER@HOST:PORT/DBNAME "
            "(libpq URI; no password: libpq reads PGPASSWORD or ~/.pgpass). Not with 'path'."
        ),
    )
    policy: ConfigPath | None = Field(
        default=None,
        description=(
            "Policy file (YAML) binding this dataset to a tier whose caps the job must meet "
            "(relative: to the config file's folder). Once a dataset is charged under a "
            "tier, the ledger refuses runs without it."
        ),
    )

    @field_validator("dataset")
    @classmethod
    def _canonical_dataset(cls, value: str) -> str:
        """Invariant: the stored name is canonical, so spellings of one name share a budget."""
        return dataset_name(value)

    @field_validator("url")
    @classmethod
    def _server_url(cls, value: str | None) -> str | None:
        """Invariant: a server ledger URL is postgresql:// and carries no password (the
        config is hashed into manifests and shown in messages; secrets stay in libpq's
        environment or password file)."""
        if value is None:
            return None
        if not _SERVER_URL.match(value):
            raise ValueError("must be a PostgreSQL URI: postgresql://USER@HOST:PORT/DBNAME")
        authority = value.split("://", 1)[1].split("/", 1)[0]
        user_info = authority.rsplit("@", 1)[0] if "@" in authority else ""
        if ":" in user_info or "password=" in value.lower():
            raise ValueError(
                "must not hold a password: set PGPASSWORD or use ~/.pgpass (libpq reads both)"
            )
        return value

    @model_validator(mode="after")
    def _one_store(self) -> LedgerConfig:
        if self.path is not None and self.url is not None:
            raise ValueError("give at most one of 'path' (SQLite file) or 'url' (PostgreSQL)")
        return self


SelectionMechanism = Literal[
    "auto", "truncated_geometric", "laplace_threshold", "gaussian_threshold", "public"
]


class PartitionSelectionConfig(_Frozen):
    """How partition keys come to be released."""

    mechanism: SelectionMechanism = Field(
        default="auto",
        description=(
            "auto (default): of truncated_geometric, laplace_threshold and gaussian_threshold, "
            "the rule that keeps a partition with probability 1/2 at the fewest units, chosen "
            "from the plan alone; or one of them; or public (public_keys)."
        ),
    )
    min_units: Annotated[
        Integer, _at_most(MIN_UNITS_LIMIT, "MIN_UNITS_LIMIT", "no real partition has more units")
    ] = Field(
        default=1,
        ge=1,
        description="Pre-threshold: never release a partition with fewer units (at most 10^9).",
    )
    public_keys: PublicKeysConfig | None = Field(
        default=None, description="For mechanism 'public'."
    )
    post_aggregation: bool = Field(
        default=True,
        description=(
            "With a threshold rule and a released privacy_id_count: select by thresholding "
            "the released noisy privacy_id_count itself, one budget share (selection's plus "
            "the count's) for both. false: the rule draws its own noisy count."
        ),
    )

    @model_validator(mode="after")
    def _keys_iff_public(self) -> PartitionSelectionConfig:
        if self.mechanism == "public" and self.public_keys is None:
            raise ValueError("mechanism 'public' needs 'public_keys'")
        if self.mechanism != "public" and self.public_keys is not None:
            raise ValueError("'public_keys' is only used with mechanism 'public'")
        return self
