"""A release of several tables: one input, one privacy unit, one budget, one publication.

``MultiTableConfig`` is the config form with ``tables:``; ``ReleaseSpec`` is what every
config becomes: its tables, each a ``JobConfig`` of its own (the shared sections, the
table's sections and its share of the budget), so every single-table rule applies to
each table unchanged. A config without ``tables:`` is a release of one table.

Invariants: table names are distinct directory names; the tables' budgets add up to at
most the release budget (sequential composition over tables, docs/privacy.md §8); a
table's delta share is 0 only when it needs no delta (public keys and Laplace noise).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from pipelines.config.accuracy import AccuracyConfig
from pipelines.config.fields import _Frozen
from pipelines.config.limits import Delta, Epsilon, Number
from pipelines.config.model import JobConfig, config_digest
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

# Table names are directory names under tables/: lower-case identifiers.
_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: The most tables one release may hold.
MAX_TABLES = 32
# Slack for budgets given as decimals that add up to the release budget (0.3 + 0.7).
_BUDGET_SLACK = 1e-9


class TableBudgetConfig(_Frozen):
    """A table's share of the release budget: a weight, or an absolute (epsilon, delta)."""

    weight: Number | None = Field(
        default=None,
        gt=0,
        description="Share of the release budget (weights of all tables are normalised).",
    )
    epsilon: Epsilon | None = Field(default=None, description="Absolute epsilon of the table.")
    delta: Delta | None = Field(default=None, description="Absolute delta of the table.")
    weights: dict[str, Number] | None = Field(
        default=None,
        description="Split of the table's budget over 'selection' and its metrics.",
    )

    @model_validator(mode="after")
    def _one_form(self) -> TableBudgetConfig:
        if self.weight is not None and (self.epsilon is not None or self.delta is not None):
            raise ValueError("give either 'weight' or an absolute 'epsilon' (and 'delta')")
        if self.delta is not None and self.epsilon is None:
            raise ValueError("an absolute 'delta' needs an absolute 'epsilon'")
        return self

    @property
    def absolute(self) -> bool:
        """Whether the table states its own (epsilon, delta)."""
        return self.epsilon is not None


class TableConfig(_Frozen):
    """One released table: its keys, bounds, metrics, selection and budget share."""

    name: str = Field(description="Table name: the directory tables/<name>/ of the version.")
    partition_columns: Annotated[list[str], Field(min_length=1)]
    contribution_bounds: ContributionBoundsConfig
    metrics: Annotated[list[MetricConfig], Field(min_length=1)]
    partition_selection: PartitionSelectionConfig = Field(default_factory=PartitionSelectionConfig)
    budget: TableBudgetConfig = Field(default_factory=TableBudgetConfig)
    accuracy: AccuracyConfig | None = Field(
        default=None, description="Planning targets of this table (`dprelease plan`)."
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _TABLE_NAME.match(value):
            raise ValueError(
                "must be 1-64 lower-case letters, digits or '_', starting with a letter"
            )
        return value


class MultiTableConfig(_Frozen):
    """A release of several tables over one input and one privacy unit."""

    release: ReleaseConfig
    input: InputConfig
    privacy_unit: PrivacyUnitConfig
    budget: BudgetConfig
    ledger: LedgerConfig
    tables: Annotated[list[TableConfig], Field(min_length=1, max_length=MAX_TABLES)]
    noise: Literal["laplace", "gaussian"] = Field(default="laplace")
    contracts: ContractsConfig = Field(default_factory=ContractsConfig)
    post_processing: PostProcessingConfig = Field(default_factory=PostProcessingConfig)
    confidence_level: Number = Field(default=0.95, gt=0, lt=1)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

    @model_validator(mode="after")
    def _consistent(self) -> MultiTableConfig:
        names = [t.name for t in self.tables]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"tables: names must be distinct, repeated: {repeated}")
        if self.budget.weights is not None:
            raise ValueError("budget.weights: give each table's split in tables[].budget.weights")
        forms = {t.budget.absolute for t in self.tables}
        if len(forms) > 1:
            raise ValueError(
                "tables: give every table a weight, or every table an absolute epsilon"
            )
        if True in forms:
            spent = math.fsum(t.budget.epsilon or 0.0 for t in self.tables)
            deltas = math.fsum(t.budget.delta or 0.0 for t in self.tables)
            if spent > self.budget.epsilon * (1 + _BUDGET_SLACK):
                raise ValueError(
                    f"tables: the tables' epsilons add up to {spent:.12g}, more than "
                    f"budget.epsilon {self.budget.epsilon:.12g}"
                )
            if deltas > self.budget.delta * (1 + _BUDGET_SLACK):
                raise ValueError(
                    f"tables: the tables' deltas add up to {deltas:.12g}, more than "
                    f"budget.delta {self.budget.delta:.12g}"
                )
        return self

    def needs_delta(self, table: TableConfig) -> bool:
        """Whether ``table``'s mechanisms need a delta (private selection or Gaussian noise)."""
        return table.partition_selection.mechanism != "public" or self.noise == "gaussian"


@dataclass(frozen=True)
class TableSpec:
    """One table of a release: its name (None: the one table of a single-table config,
    published under ``data/``) and its config as a job of its own."""

    name: str | None
    config: JobConfig

    @property
    def data_dir(self) -> str:
        """The table's directory inside a version."""
        return "data" if self.name is None else f"tables/{self.name}"

    @property
    def label(self) -> str:
        """The table's name in messages and plans."""
        return self.name or self.config.release.name


@dataclass(frozen=True)
class ReleaseSpec:
    """Every table of one release, and the digest of the whole config."""

    tables: tuple[TableSpec, ...]
    config_sha256: str
    budget_epsilon: float
    budget_delta: float

    @property
    def config(self) -> JobConfig:
        """The release-level sections (release, input, unit, ledger, ...): equal in every table."""
        return self.tables[0].config

    @property
    def multi(self) -> bool:
        """Whether the release uses the ``tables/<name>/`` layout."""
        return self.tables[0].name is not None


def single_table(config: JobConfig) -> ReleaseSpec:
    """A single-table config as a release of one table."""
    return ReleaseSpec(
        (TableSpec(None, config),),
        config_digest(config),
        config.budget.epsilon,
        config.budget.delta,
    )


def _shares(multi: MultiTableConfig) -> list[tuple[float, float]]:
    """Each table's (epsilon, delta): absolute, or the release budget split by weight
    (delta only over the tables that need one)."""
    tables, budget = multi.tables, multi.budget
    if tables[0].budget.absolute:
        return [(t.budget.epsilon or 0.0, t.budget.delta or 0.0) for t in tables]
    weights = [t.budget.weight or 1.0 for t in tables]
    total = math.fsum(weights)
    needing = math.fsum(w for w, t in zip(weights, tables, strict=True) if multi.needs_delta(t))
    out = []
    for weight, table in zip(weights, tables, strict=True):
        delta = budget.delta * weight / needing if multi.needs_delta(table) else 0.0
        out.append((budget.epsilon * weight / total, delta))
    return out


def _table_job(
    multi: MultiTableConfig, table: TableConfig, epsilon: float, delta: float
) -> JobConfig:
    """``table`` as a job of its own: the shared sections, its sections, its budget."""
    return JobConfig(
        release=multi.release,
        input=multi.input,
        privacy_unit=multi.privacy_unit,
        partition_columns=table.partition_columns,
        contribution_bounds=table.contribution_bounds,
        metrics=table.metrics,
        budget=BudgetConfig(epsilon=epsilon, delta=delta, weights=table.budget.weights),
        ledger=multi.ledger,
        noise=multi.noise,
        partition_selection=table.partition_selection,
        contracts=multi.contracts,
        post_processing=multi.post_processing,
        confidence_level=multi.confidence_level,
        accuracy=table.accuracy,
        registry=multi.registry,
    )


class TableInvalidError(Exception):
    """A table breaks a rule of a job of its own; carries its index for the message."""

    def __init__(self, index: int, error: ValidationError) -> None:
        super().__init__(f"tables[{index}]")
        self.index, self.error = index, error


def release_spec(multi: MultiTableConfig) -> ReleaseSpec:
    """The tables of ``multi``, each validated as a job of its own.

    Raises TableInvalidError for a rule a table breaks as a job (a partition column that
    clashes with an output column, weights that miss a metric, ...).
    """
    tables = []
    for index, (table, (epsilon, delta)) in enumerate(
        zip(multi.tables, _shares(multi), strict=True)
    ):
        try:
            tables.append(TableSpec(table.name, _table_job(multi, table, epsilon, delta)))
        except ValidationError as error:
            raise TableInvalidError(index, error) from None
    digest = config_digest(multi)
    return ReleaseSpec(tuple(tables), digest, multi.budget.epsilon, multi.budget.delta)


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of job configs, either form (what `dprelease schema` prints)."""
    schema: dict[str, Any] = TypeAdapter(JobConfig | MultiTableConfig).json_schema()
    schema["title"] = "dprelease job config: one table, or a release of several (tables:)"
    return schema
