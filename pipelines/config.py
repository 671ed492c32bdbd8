"""The typed, frozen job configuration, loaded from YAML.

Invariants: every field is validated at load time; unknown keys are errors that name
their field path; nothing here is a sensitivity or a noise scale (those are derived
by code from the bounds and the budget, see ``pipelines.plan``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Names released as column names or directory names: no path characters, no spaces.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_RELEASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ConfigError(Exception):
    """A problem the user can fix in the config file; the message names the field path."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class ReleaseConfig(_Frozen):
    """Where and under which name the release is published."""

    name: str = Field(
        description="Release name: the directory under output_root. No path characters."
    )
    output_root: str = Field(description="Directory that holds one sub-directory per release name.")
    data_period: str = Field(
        description="Free text naming the period the data covers, e.g. 2026-W47."
    )
    description: str = Field(
        default="", description="Free text copied into the manifest and README."
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _RELEASE_NAME.match(value) or ".." in value:
            raise ValueError(
                "must be 1-128 characters of letters, digits, '_', '.', '-', start with a letter "
                "or digit and contain no '..' or '/'"
            )
        return value

    @field_validator("data_period")
    @classmethod
    def _period_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class InputConfig(_Frozen):
    """The private table: a path in any Spark format, or a catalog table."""

    path: str | None = Field(default=None, description="Path of the input (file or directory).")
    format: str = Field(
        default="parquet", description="Spark data source name: parquet, csv, json, orc, ..."
    )
    options: dict[str, str] = Field(
        default_factory=dict, description="Options passed to the Spark reader."
    )
    table: str | None = Field(default=None, description="Catalog table name, instead of path.")

    @model_validator(mode="after")
    def _one_source(self) -> InputConfig:
        if (self.path is None) == (self.table is None):
            raise ValueError("give exactly one of 'path' or 'table'")
        return self


class PrivacyUnitConfig(_Frozen):
    """The column that identifies a privacy unit, and what one unit's data covers."""

    column: str = Field(description="Column holding the privacy unit id (a user, patient, device).")
    time_scope: str = Field(
        default="all rows of the unit in the input",
        description="Text stating which of a unit's data one release protects.",
    )


class ContributionBoundsConfig(_Frozen):
    """How much one privacy unit may contribute (after bounding)."""

    max_partitions_per_unit: int = Field(gt=0, description="L0: partitions one unit may touch.")
    max_rows_per_unit_per_partition: int = Field(
        gt=0, description="Linf: rows per unit and partition."
    )


MetricName = Literal["count", "privacy_id_count", "sum", "mean", "variance"]


class MetricConfig(_Frozen):
    """One released statistic per partition."""

    metric: MetricName = Field(description="count, privacy_id_count, sum, mean or variance.")
    column: str | None = Field(default=None, description="Measured column (sum, mean, variance).")
    lower: float | None = Field(default=None, description="Lower value bound (values are clamped).")
    upper: float | None = Field(default=None, description="Upper value bound (values are clamped).")
    name: str | None = Field(
        default=None, description="Output column name; default metric[_column]."
    )

    @model_validator(mode="after")
    def _bounds_match_metric(self) -> MetricConfig:
        measured = self.metric in ("sum", "mean", "variance")
        if measured:
            if self.column is None:
                raise ValueError(f"metric '{self.metric}' needs 'column'")
            if self.lower is None or self.upper is None:
                raise ValueError(f"metric '{self.metric}' needs 'lower' and 'upper'")
            if not (math.isfinite(self.lower) and math.isfinite(self.upper)):
                raise ValueError("'lower' and 'upper' must be finite numbers")
            if self.lower > self.upper:
                raise ValueError(f"'lower' ({self.lower}) is greater than 'upper' ({self.upper})")
            if self.metric == "sum" and self.lower == self.upper == 0:
                raise ValueError("'lower' and 'upper' are both 0: the sum is always 0")
            if self.metric in ("mean", "variance") and self.lower == self.upper:
                raise ValueError("'lower' must be smaller than 'upper' for mean and variance")
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

    epsilon: float = Field(description="Total epsilon of the release (> 0).")
    delta: float = Field(default=0.0, description="Total delta of the release, 0 <= delta < 1.")
    weights: dict[str, float] | None = Field(
        default=None,
        description=(
            "Share of the budget per mechanism: 'selection' (private selection only) and each "
            "metric's output name. Must sum to 1. Default: equal shares."
        ),
    )

    @field_validator("epsilon")
    @classmethod
    def _epsilon_positive(cls, value: float) -> float:
        if not math.isfinite(value) or value <= 0:
            raise ValueError("must be a finite number greater than 0")
        return value

    @field_validator("delta")
    @classmethod
    def _delta_in_range(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0 or value >= 1:
            raise ValueError("must be at least 0 and smaller than 1")
        return value


class LifetimeBudgetConfig(_Frozen):
    """The most (epsilon, delta) all releases of one dataset and privacy unit may spend."""

    epsilon: float = Field(description="Lifetime epsilon of the dataset per privacy unit (> 0).")
    delta: float = Field(default=0.0, description="Lifetime delta, 0 <= delta < 1.")

    @field_validator("epsilon")
    @classmethod
    def _epsilon_positive(cls, value: float) -> float:
        return BudgetConfig._epsilon_positive(value)

    @field_validator("delta")
    @classmethod
    def _delta_in_range(cls, value: float) -> float:
        return BudgetConfig._delta_in_range(value)


class LedgerConfig(_Frozen):
    """Where the spend of every run is recorded, and the lifetime budget it is checked against."""

    dataset: str = Field(
        description=(
            "Name of the private dataset this job reads. Every release of the same dataset "
            "and privacy unit draws on one lifetime budget (sequential composition)."
        )
    )
    lifetime_budget: LifetimeBudgetConfig
    path: str | None = Field(
        default=None,
        description=(
            "SQLite ledger file on a local file system. Default: "
            "<release.output_root>/_ledger/ledger.sqlite."
        ),
    )

    @field_validator("dataset")
    @classmethod
    def _dataset_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class PublicKeysConfig(_Frozen):
    """Partition keys known in advance, not derived from the private data."""

    path: str | None = Field(default=None, description="File with one column per partition column.")
    format: str = Field(default="csv", description="Spark data source of the keys file.")
    options: dict[str, str] = Field(default_factory=lambda: {"header": "true"})
    table: str | None = Field(default=None, description="Catalog table of keys, instead of path.")
    provenance: str = Field(
        default="", description="Where the keys come from (must not be the private data)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> PublicKeysConfig:
        if (self.path is None) == (self.table is None):
            raise ValueError("give exactly one of 'path' or 'table'")
        return self


SelectionMechanism = Literal[
    "truncated_geometric", "laplace_threshold", "gaussian_threshold", "public"
]


class PartitionSelectionConfig(_Frozen):
    """How partition keys come to be released."""

    mechanism: SelectionMechanism = Field(default="truncated_geometric")
    min_units: int = Field(
        default=1, ge=1, description="Pre-threshold: never release a partition with fewer units."
    )
    public_keys: PublicKeysConfig | None = Field(
        default=None, description="For mechanism 'public'."
    )

    @model_validator(mode="after")
    def _keys_iff_public(self) -> PartitionSelectionConfig:
        if self.mechanism == "public" and self.public_keys is None:
            raise ValueError("mechanism 'public' needs 'public_keys'")
        if self.mechanism != "public" and self.public_keys is not None:
            raise ValueError("'public_keys' is only used with mechanism 'public'")
        return self


class PostProcessingConfig(_Frozen):
    """Free transformations of the noisy values (no extra budget)."""

    clamp_negative_counts: bool = Field(default=True, description="Report negative counts as 0.")
    decimals: int | None = Field(
        default=None, ge=0, le=15, description="Round mean and variance to this many decimals."
    )


RowRule = Literal["drop_row", "fail"]
EmptyInputRule = Literal["fail", "publish"]


class ContractsConfig(_Frozen):
    """What the input contract does with rows that break it, per rule.

    ``drop_row`` removes the offending rows before contribution bounding; ``fail`` stops
    the run (exit 4) before any noise is drawn. The output contract has no options: a
    failing output contract always blocks publishing.
    """

    null_privacy_unit: RowRule = Field(
        default="drop_row", description="Rows whose privacy unit id is null: drop_row or fail."
    )
    null_partition_key: RowRule = Field(
        default="drop_row",
        description="Rows with a null in any partition column: drop_row or fail.",
    )
    non_finite_value: RowRule = Field(
        default="drop_row",
        description="Rows with a null, NaN or infinite measured value: drop_row or fail.",
    )
    empty_input: EmptyInputRule = Field(
        default="fail",
        description=(
            "No usable row left after dropping: fail (exit 4; tells the operator that no valid "
            "row exists) or publish (a DP-consistent release of whatever survives: often empty)."
        ),
    )


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
    confidence_level: float = Field(default=0.95, gt=0, lt=1, description="Level of the noise CIs.")

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
        clash = set(self.partition_columns) & {
            f"{n}{suffix}" for n in names for suffix in ("", "_std", "_ci_low", "_ci_high")
        }
        if clash:
            raise ValueError(f"partition columns clash with output columns: {sorted(clash)}")
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
        """Budget shares per mechanism name (explicit, or equal shares)."""
        if self.budget.weights is not None:
            return dict(self.budget.weights)
        names = [m.output_name for m in self.metrics]
        if self.partition_selection.mechanism != "public":
            names = ["selection", *names]
        return {n: 1.0 / len(names) for n in names}

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


def _field_path(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as a dotted field path like metrics[1].lower."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before") or "[" in str(part):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def config_from_mapping(raw: Any, source: str = "config") -> JobConfig:
    """Validate a parsed YAML document; raise ConfigError naming every bad field path."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of fields")
    try:
        return JobConfig.model_validate(raw)
    except ValidationError as error:
        lines = []
        for item in error.errors(include_url=False, include_input=False):
            path = _field_path(tuple(item["loc"]))
            message = item["msg"]
            if item["type"] == "extra_forbidden":
                message = "unknown field (check the spelling; `dprelease schema` lists the fields)"
            elif item["type"] == "missing":
                message = "required field is missing"
            message = message.removeprefix("Value error, ")
            lines.append(f"{path}: {message}")
        raise ConfigError(f"{source}: invalid config\n  " + "\n  ".join(lines)) from None


def load_config(path: str | Path) -> JobConfig:
    """Read and validate a YAML job config; raise ConfigError on any problem."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{file}: cannot read config file ({type(error).__name__})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{file}: malformed YAML{where}") from None
    return config_from_mapping(raw, str(file))


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of the job config (what `dprelease schema` prints)."""
    return JobConfig.model_json_schema()
