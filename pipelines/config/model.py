"""The job configuration: ``JobConfig``, the one model a job config file validates into."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from pipelines.config.accuracy import AccuracyConfig
from pipelines.config.fields import _Frozen
from pipelines.config.key_generators import check_key_columns
from pipelines.config.limits import Number
from pipelines.config.privacy import (
    BudgetConfig,
    ContributionBoundsConfig,
    LedgerConfig,
    MetricConfig,
    PartitionSelectionConfig,
    PrivacyUnitConfig,
)
from pipelines.config.registry import RegistryConfig
from pipelines.config.sections import (
    ContractsConfig,
    InputConfig,
    PostProcessingConfig,
    ReleaseConfig,
)
from pipelines.config.weights import default_weights, shared_sums
from pipelines.released import metric_column_names


class JobConfig(_Frozen):
    """One release job."""

    release: ReleaseConfig
    input: InputConfig
    privacy_unit: PrivacyUnitConfig
    partition_columns: Annotated[list[str], Field(min_length=1)]
    contribution_bounds: ContributionBoundsConfig
    metrics: Annotated[list[MetricConfig], Field(min_length=1)]
    budget: BudgetConfig
    ledger: LedgerConfig
    noise: Literal["laplace", "gaussian"] = Field(default="laplace")
    partition_selection: PartitionSelectionConfig = Field(default_factory=PartitionSelectionConfig)
    contracts: ContractsConfig = Field(
        default_factory=ContractsConfig,
        description="Input contract rules: drop or fail per rule, and what an empty input does.",
    )
    post_processing: PostProcessingConfig = Field(default_factory=PostProcessingConfig)
    confidence_level: Number = Field(
        default=0.95, gt=0, lt=1, description="Level of the noise CIs."
    )
    accuracy: AccuracyConfig | None = Field(
        default=None,
        description="Planning targets for `dprelease plan` (accuracy first); runs ignore it.",
    )
    registry: RegistryConfig = Field(
        default_factory=RegistryConfig,
        description="Purpose, owner and approval reference, recorded with every charge.",
    )

    @field_validator("partition_columns")
    @classmethod
    def _distinct_columns(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("partition columns must be distinct")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JobConfig:
        names = [m.output_name for m in self.metrics]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"metrics: output names must be distinct, repeated: {duplicates}")
        if self.privacy_unit.column in self.partition_columns:
            raise ValueError("privacy_unit.column must not be a partition column")
        columns = [c for m in self.metrics for c in metric_column_names(m.output_name, m.ranks)]
        clash = set(self.partition_columns) & set(columns)
        if clash:
            raise ValueError(f"partition columns clash with output columns: {sorted(clash)}")
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ValueError(f"metrics: released column names must be distinct: {repeated}")
        keys = self.partition_selection.public_keys
        if keys is not None:
            check_key_columns(keys.values, keys.has_file, self.partition_columns)
        private = self.partition_selection.mechanism != "public"
        if self.budget.delta == 0 and (private or self.noise == "gaussian"):
            raise ValueError(
                "budget.delta must be greater than 0 with private partition selection or "
                "gaussian noise"
            )
        if self.budget.weights is not None:
            expected = set(names) | ({"selection"} if private else set())
            given = set(self.budget.weights)
            if given != expected:
                raise ValueError(
                    f"budget.weights must name exactly {sorted(expected)}; "
                    f"missing {sorted(expected - given)}, unknown {sorted(given - expected)}"
                )
            bad = [k for k, w in self.budget.weights.items() if not (math.isfinite(w) and w > 0)]
            if bad:
                raise ValueError(f"budget.weights must be greater than 0: {sorted(bad)}")
            total = sum(self.budget.weights.values())
            if abs(total - 1.0) > 1e-9:
                raise ValueError(f"budget.weights must sum to 1 (they sum to {total:.12g})")
        return self

    @property
    def weights(self) -> dict[str, float]:
        """Budget shares per mechanism name (explicit, or ``default_weights``)."""
        if self.budget.weights is not None:
            return dict(self.budget.weights)
        return default_weights(self)

    @property
    def shared_sums(self) -> dict[str, str]:
        """Each sum derived from a mean's or variance's parts: sum output → that output."""
        return shared_sums(self.metrics, self.budget.share_parts)

    @property
    def ledger_path(self) -> Path:
        """The ledger file: ``ledger.path``, or ``_ledger/ledger.sqlite`` under the output root."""
        if self.ledger.path is not None:
            return Path(self.ledger.path)
        return Path(self.release.output_root) / "_ledger" / "ledger.sqlite"

    @property
    def invalid_values(self) -> dict[str, str]:
        """The input contract's rules as the manifest records them (configuration, not counts)."""
        return dict(self.contracts.model_dump())

    @property
    def measured_columns(self) -> list[str]:
        """Measured input columns, in first-use order."""
        seen: list[str] = []
        for m in self.metrics:
            if m.column is not None and m.column not in seen:
                seen.append(m.column)
        return seen


def config_digest(config: _Frozen) -> str:
    """SHA-256 of the canonical JSON of a config, one table's or a whole release's
    (identifies the job, not the data)."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
