"""The typed, frozen job configuration, loaded from YAML.

Invariants: every field is validated at load time; unknown keys and keys repeated in
one mapping are errors that name their field path; no numeric field accepts a boolean;
every numeric limit is a named module constant below; relative paths in a config file
mean paths relative to that file's folder; nothing here is a sensitivity or a noise
scale (those are derived by code from the bounds and the budget, see ``pipelines.plan``).
"""

from __future__ import annotations

import datetime
import math
import os
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipelines.errors import ConfigError
from pipelines.ledger import dataset_name

__all__ = ["ConfigError", "JobConfig", "config_from_mapping", "load_config"]

# Names released as column names or directory names: no path characters, no spaces.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_RELEASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# A URI with a scheme (hdfs://, s3a://, file:/...): never resolved against the config folder.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")

# Numeric limits of one release's budget, checked at load time. A lifetime budget is an
# organisation's policy over many releases: it only has to be positive (delta below 1).
# exp(epsilon) overflows double arithmetic at about 709.8 and calibration works with
# multiples of epsilon, so epsilon stays far below that; below 1e-6 the noise swamps any
# statistic and the release is meaningless.
EPSILON_MIN = 1e-6
EPSILON_MAX = 100.0
# A positive delta below 1e-100 is no safer than 0 for any real dataset but pushes
# ln(1/delta) terms towards the edge of double precision; use 0 for pure epsilon-DP.
DELTA_MIN_POSITIVE = 1e-100
# delta is the probability that the guarantee fails outright: at delta = 0.5 a mechanism
# may release single units' keys. Good practice is delta far below 1/number-of-units
# (see docs/privacy.md §6); 1e-4 is the most one release may spend.
DELTA_CEILING = 1e-4
# Integer sums must stay exact (see pipelines/aggregation.py check_exact_arithmetic):
# with L0 and Linf at most 10**6, the count sensitivity L0 * Linf stays below 2**53 (exact
# in a double) and Linf stays below 2**22, so per-(unit, partition) sums of grid integers
# fit a long.
MAX_PARTITIONS_PER_UNIT_LIMIT = 1_000_000
MAX_ROWS_PER_UNIT_PER_PARTITION_LIMIT = 1_000_000
# A pre-threshold above 10**9 units keeps no partition of any real dataset: a typo.
MIN_UNITS_LIMIT = 1_000_000_000


def _not_bool(value: object) -> object:
    """Refuse YAML true/false where a number is expected (Python counts a bool as 0 or 1)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


# Every numeric field uses one of these: a bool is never read as 0 or 1.
Number = Annotated[float, BeforeValidator(_not_bool)]
Integer = Annotated[int, BeforeValidator(_not_bool)]


def _epsilon_in_range(value: float) -> float:
    """Invariant: every accepted epsilon is finite and in [EPSILON_MIN, EPSILON_MAX]."""
    if not (math.isfinite(value) and EPSILON_MIN <= value <= EPSILON_MAX):
        raise ValueError(
            f"must be between {EPSILON_MIN:g} (EPSILON_MIN) and {EPSILON_MAX:g} (EPSILON_MAX): "
            "far above, exp(epsilon) overflows double arithmetic; below, the noise swamps "
            "any statistic"
        )
    return value


def _delta_in_range(value: float) -> float:
    """Invariant: every accepted delta is 0 or in [DELTA_MIN_POSITIVE, DELTA_CEILING]."""
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite number, at least 0")
    if 0 < value < DELTA_MIN_POSITIVE:
        raise ValueError(
            f"must be 0 or at least {DELTA_MIN_POSITIVE:g} (DELTA_MIN_POSITIVE); "
            "use 0 for pure epsilon-DP"
        )
    if value > DELTA_CEILING:
        raise ValueError(
            f"must be at most {DELTA_CEILING:g} (DELTA_CEILING): delta is the probability that "
            "the guarantee fails outright (at 0.5 a mechanism may release single units' keys); "
            "good practice is delta far below 1/number-of-units"
        )
    return value


def _positive_finite(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError("must be a finite number greater than 0")
    return value


def _probability_below_one(value: float) -> float:
    if not (math.isfinite(value) and 0 <= value < 1):
        raise ValueError("must be at least 0 and smaller than 1")
    return value


Epsilon = Annotated[Number, AfterValidator(_epsilon_in_range)]
Delta = Annotated[Number, AfterValidator(_delta_in_range)]
LifetimeEpsilon = Annotated[Number, AfterValidator(_positive_finite)]
LifetimeDelta = Annotated[Number, AfterValidator(_probability_below_one)]


def _at_most(limit: int, constant: str, reason: str) -> AfterValidator:
    """A check that an integer is at most ``limit``; the message names the constant and why."""

    def check(value: int) -> int:
        if value > limit:
            raise ValueError(f"must be at most {limit:,} ({constant}): {reason}")
        return value

    return AfterValidator(check)


def _resolve_path(value: str, info: ValidationInfo) -> str:
    """Resolve a relative path against ``base_dir`` from the validation context, if given.

    Invariant: absolute paths, URIs with a scheme and empty text are returned unchanged;
    without a ``base_dir`` (a mapping built in code) every path is returned unchanged. A
    resolved path is normalised lexically (``a/../b`` is ``b``), as Spark's Hadoop paths
    are, so Spark and the Python side (ledger, publishing) name the same file.
    """
    base = info.context.get("base_dir") if isinstance(info.context, dict) else None
    if base is None or not value or _URI.match(value) or Path(value).is_absolute():
        return value
    return os.path.normpath(Path(base) / value)


# Paths in a config file are relative to the file's folder, not the working directory.
ConfigPath = Annotated[str, AfterValidator(_resolve_path)]


def _option_text(value: object) -> object:
    """A YAML scalar option as the text Spark expects: true -> "true", 3 -> "3", 1.5 -> "1.5"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


OptionValue = Annotated[str, BeforeValidator(_option_text)]


def _period_text(value: object) -> object:
    """A YAML int or date as its text (2025 -> "2025", 2025-01-31 -> "2025-01-31")."""
    if isinstance(value, bool):
        raise ValueError("must be text such as 2026-W47, not true/false")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime.date):  # also a datetime (a YAML timestamp)
        return value.isoformat()
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class ReleaseConfig(_Frozen):
    """Where and under which name the release is published."""

    name: str = Field(
        description="Release name: the directory under output_root. No path characters."
    )
    output_root: ConfigPath = Field(
        description=(
            "Directory that holds one sub-directory per release name "
            "(relative: to the config file's folder)."
        )
    )
    data_period: Annotated[str, BeforeValidator(_period_text)] = Field(
        description=(
            "Free text naming the period the data covers, e.g. 2026-W47; a YAML number or "
            "date is read as its text."
        )
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


DeclaredType = Literal["string", "int", "long", "bigint", "double", "boolean", "date", "timestamp"]


class InputConfig(_Frozen):
    """The private table: a path in any Spark format, or a catalog table."""

    path: ConfigPath | None = Field(
        default=None,
        description="Path of the input (file or directory; relative: to the config file's folder).",
    )
    format: str = Field(
        default="parquet", description="Spark data source name: parquet, csv, json, orc, ..."
    )
    options: dict[str, OptionValue] = Field(
        default_factory=dict,
        description="Options passed to the Spark reader (YAML scalars are read as text).",
    )
    table: str | None = Field(default=None, description="Catalog table name, instead of path.")
    schema_: dict[str, DeclaredType] | None = Field(
        default=None,
        alias="schema",
        description=(
            "Declared type per column (string, int, long, bigint, double, boolean, date, "
            "timestamp). csv and json inputs are read as text and cast to these types "
            "(default: string ids and keys, double measured values); a value that does not "
            "cast is an invalid row. Typed sources (parquet, orc, tables) must match them."
        ),
    )

    # Shadows pydantic's deprecated BaseModel.schema() classmethod, which no code here uses.
    @property
    def schema(self) -> dict[str, DeclaredType] | None:  # type: ignore[override]
        """The declared column types (``input.schema``), if any."""
        return self.schema_

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


MetricName = Literal["count", "privacy_id_count", "sum", "mean", "variance"]


class MetricConfig(_Frozen):
    """One released statistic per partition."""

    metric: MetricName = Field(description="count, privacy_id_count, sum, mean or variance.")
    column: str | None = Field(default=None, description="Measured column (sum, mean, variance).")
    lower: Number | None = Field(
        default=None, description="Lower value bound (values are clamped)."
    )
    upper: Number | None = Field(
        default=None, description="Upper value bound (values are clamped)."
    )
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

    epsilon: Epsilon = Field(description="Total epsilon of the release, 1e-6 to 100.")
    delta: Delta = Field(
        default=0.0, description="Total delta of the release: 0, or 1e-100 to 1e-4 (DELTA_CEILING)."
    )
    weights: dict[str, Number] | None = Field(
        default=None,
        description=(
            "Share of the budget per mechanism: 'selection' (private selection only) and each "
            "metric's output name. Must sum to 1. Default: equal shares."
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
            "folder). Default: <release.output_root>/_ledger/ledger.sqlite."
        ),
    )

    @field_validator("dataset")
    @classmethod
    def _canonical_dataset(cls, value: str) -> str:
        """Invariant: the stored name is canonical, so spellings of one name share a budget."""
        return dataset_name(value)


class PublicKeysConfig(_Frozen):
    """Partition keys known in advance, not derived from the private data."""

    path: ConfigPath | None = Field(
        default=None,
        description=(
            "File with one column per partition column (relative: to the config file's folder)."
        ),
    )
    format: str = Field(default="csv", description="Spark data source of the keys file.")
    options: dict[str, OptionValue] = Field(
        default_factory=lambda: {"header": "true"},
        description="Options of the Spark reader; header=true unless 'header' is given.",
    )
    table: str | None = Field(default=None, description="Catalog table of keys, instead of path.")
    provenance: str = Field(
        default="", description="Where the keys come from (must not be the private data)."
    )

    @field_validator("options")
    @classmethod
    def _header_by_default(cls, value: dict[str, str]) -> dict[str, str]:
        """Invariant: the options always hold a header option (Spark names are case-blind)."""
        if any(name.lower() == "header" for name in value):
            return value
        return {"header": "true", **value}

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
    decimals: Integer | None = Field(
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
        default="publish",
        description=(
            "No usable row left after dropping: publish (default: a DP-consistent release of "
            "whatever survives, often empty; behaves alike on every input) or fail (exit 4): an "
            "operator choice that reveals one bit, whether any valid row exists."
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
    confidence_level: Number = Field(
        default=0.95, gt=0, lt=1, description="Level of the noise CIs."
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


def config_from_mapping(
    raw: Any, source: str = "config", base_dir: Path | None = None
) -> JobConfig:
    """Validate a parsed YAML document; raise ConfigError naming every bad field path.

    With ``base_dir``, relative ``input.path``, ``partition_selection.public_keys.path``,
    ``release.output_root`` and ``ledger.path`` are resolved against it (absolute paths
    and URIs with a scheme are kept); without it, paths are kept as given.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of fields")
    try:
        return JobConfig.model_validate(raw, context={"base_dir": base_dir})
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


class DuplicateKeyError(yaml.YAMLError):
    """A key given twice in one YAML mapping; the message names its path and both lines."""


def _node_paths(root: yaml.Node) -> dict[int, str]:
    """The field path (``budget.epsilon``, ``metrics[1]``) of every node, keyed by id.

    Invariant: a node reached twice (a YAML alias) keeps the path where it is first met
    in breadth-first order; recursive documents terminate.
    """
    paths: dict[int, str] = {}
    queue: list[tuple[yaml.Node, str]] = [(root, "")]
    for node, path in queue:
        if id(node) in paths:
            continue
        paths[id(node)] = path
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                queue.append((value, f"{path}.{name}" if path else str(name)))
        elif isinstance(node, yaml.SequenceNode):
            queue.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))
    return paths


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader whose mappings refuse a repeated key, at every nesting level.

    Invariant: a document loads only if no mapping in it names one key twice (merge
    keys ``<<`` are YAML's explicit override and are not counted as repeats).
    """

    _paths: dict[int, str]

    def construct_document(self, node: yaml.Node) -> Any:
        self._paths = _node_paths(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, Hashable):
                continue  # the base constructor reports an unhashable key
            if key in seen:
                parent = getattr(self, "_paths", {}).get(id(node), "")
                path = f"{parent}.{key}" if parent else str(key)
                raise DuplicateKeyError(f"{path}: duplicate key (lines {seen[key]} and {line})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """Parse one YAML document; raise DuplicateKeyError on a key repeated in a mapping."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects


def load_config(path: str | Path) -> JobConfig:
    """Read and validate a YAML job config; raise ConfigError on any problem.

    Relative paths in the file are resolved against the file's folder (as named by
    ``path``), so a job reads and writes the same files from any working directory.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{file}: cannot read config file ({type(error).__name__})") from None
    try:
        raw = parse_yaml(text)
    except DuplicateKeyError as error:
        raise ConfigError(f"{file}: invalid config\n  {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{file}: malformed YAML{where}") from None
    return config_from_mapping(raw, str(file), base_dir=file.parent)


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of the job config (what `dprelease schema` prints)."""
    return JobConfig.model_json_schema()
