"""The config sections that name the data and where it goes.

The release (name, output root, period), the input table, public partition keys, the
input contract's rules and the post-processing of noisy values.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from pipelines.config.fields import ConfigPath, OptionValue, _Frozen, _period_text
from pipelines.config.key_generators import KeyGenerator, check_generated_values
from pipelines.config.limits import Integer, Number

# Release names are directory names: no path characters, no spaces.
_RELEASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


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


def _check_one_source(path: object, table: object) -> None:
    """A source section names exactly one of ``path`` and ``table``."""
    if (path is None) == (table is None):
        raise ValueError("give exactly one of 'path' or 'table'")


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
        _check_one_source(self.path, self.table)
        return self


class PublicKeysConfig(_Frozen):
    """Partition keys known in advance, not derived from the private data: a keys file or
    table, generated ``values``, or the product of both (docs/privacy.md §6)."""

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
    values: dict[str, KeyGenerator] | None = Field(
        default=None,
        description=(
            "Generated keys per partition column: a list of values, {range: [first, last]} "
            "(integers, inclusive) or {iso_weeks: [YYYY-Www, YYYY-Www]} (every ISO week, "
            "inclusive). The keys are the cross product, times the keys file's keys when "
            "'path' or 'table' is also given (the file then holds the other partition columns)."
        ),
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
        if self.values is None or self.path is not None or self.table is not None:
            _check_one_source(self.path, self.table)
        if self.values is not None:
            if not self.values:
                raise ValueError("values: name at least one partition column")
            check_generated_values(self.values)
        return self

    @property
    def has_file(self) -> bool:
        """Whether a keys file or table is part of the keys."""
        return self.path is not None or self.table is not None


class PostProcessingConfig(_Frozen):
    """Free transformations of the noisy values (no extra budget)."""

    clamp_negative_counts: bool = Field(default=True, description="Report negative counts as 0.")
    decimals: Integer | None = Field(
        default=None, ge=0, le=15, description="Round mean and variance to this many decimals."
    )
    consistent_rows: bool = Field(
        default=True,
        description=(
            "Project each released row onto count >= privacy_id_count and sums inside "
            "[count*lower, count*upper], from noisy values only."
        ),
    )
    reliability_share: Number | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Release a boolean <metric>_unreliable column per metric, true when the interval "
            "half-width (ci_high - ci_low) / 2 exceeds this share of |value| (e.g. 0.5)."
        ),
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
