"""The output contract, run on the staged Parquet files before the manifest is written.

Checks: the release schema, unique keys, finite values, ``ci_low <= value <= ci_high``,
non-negative stds, and what each metric kind promises (``MetricKind``: values on the
grid, non-negative counts when clamped, values inside their released range). A failure
blocks publishing. Only counts reach the driver, never released rows or keys; GX judges
them (docs/privacy.md §9).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.contracts.report import ROWS, Verdict, failed_metas, figures_frame, validate
from pipelines.errors import OutputContractError
from pipelines.plan import OutputMetric, ReleasePlan
from pipelines.released import released_name, released_names
from pipelines.source import quoted

log = logging.getLogger("dprelease")


def _double(value: float) -> str:
    """A Spark SQL double literal that parses back to exactly ``value``."""
    return f"CAST('{value!r}' AS DOUBLE)"


def _non_finite(column: str, data_type: T.DataType) -> str:
    """SQL: true where a released value is null, or (floating columns) NaN or infinite."""
    if isinstance(data_type, T.FloatType | T.DoubleType):
        return f"({column} IS NULL OR isnan({column}) OR abs({column}) = {_double(float('inf'))})"
    return f"({column} IS NULL)"


def _is_number(column: str) -> str:
    """SQL: true where a value is neither null nor NaN (Spark orders NaN above numbers)."""
    return f"({column} IS NOT NULL AND NOT isnan(CAST({column} AS DOUBLE)))"


@dataclass(frozen=True)
class _OutputCheck:
    """One value check: its figure's name, the column it is about, and its failing rows."""

    figure: str
    column: str
    what: str
    failing: str  # SQL condition, true on the rows that break the check

    @property
    def count(self) -> str:
        """SQL: the number of rows that break the check (null counts as false)."""
        return f"count(CASE WHEN {self.failing} THEN 1 END)"


def _kind_checks(output: OutputMetric, plan: ReleasePlan) -> list[_OutputCheck]:
    """What the metric's kind promises about its released values."""
    name, kind, encoding = output.name, output.kind, output.encoding
    value = quoted(name)
    low = quoted(released_name(name, "ci_low"))
    checks = []
    if kind.on_grid and encoding is not None:
        grid = encoding.grid.step
        units = f"(CAST({value} AS DOUBLE) / {_double(grid)})"
        failing = f"{_is_number(units)} AND {units} != bround({units}, 0)"
        checks.append(
            _OutputCheck(f"off_grid.{name}", name, f"value off the grid {grid:g}", failing)
        )
    if kind.clamps_negative and plan.post.clamp_negative_counts:
        checks.append(
            _OutputCheck(
                f"negative_count.{name}", name, "negative count", f"({value} < 0 OR {low} < 0)"
            )
        )
    if kind.released_range is not None and encoding is not None:
        lower, upper = kind.released_range(encoding.lower, encoding.upper)
        outside = f"({value} < {_double(lower)} OR {value} > {_double(upper)})"
        checks.append(
            _OutputCheck(
                f"outside_bounds.{name}",
                name,
                f"value outside [{lower:g}, {upper:g}]",
                f"{_is_number(value)} AND {outside}",
            )
        )
    return checks


def _output_checks(plan: ReleasePlan, types: dict[str, T.DataType]) -> list[_OutputCheck]:
    """Every value check of the released table, in release column order."""
    checks = [
        _OutputCheck(f"null_key.{k}", k, "null partition key", f"{quoted(k)} IS NULL")
        for k in plan.columns.partition_columns
    ]
    for output in plan.outputs:
        name = output.name
        columns = released_names(name)
        for column in columns:
            failing = _non_finite(quoted(column), types[column])
            checks.append(
                _OutputCheck(f"non_finite.{column}", column, "null, NaN or infinite value", failing)
            )
        value, std, low, high = (quoted(c) for c in columns)
        numbers = " AND ".join(_is_number(c) for c in (value, low, high))
        inside = f"{numbers} AND {low} <= {value} AND {value} <= {high}"
        checks.append(
            _OutputCheck(
                f"outside_interval.{name}",
                name,
                "value outside [ci_low, ci_high]",
                f"NOT coalesce({inside}, false)",
            )
        )
        checks.append(
            _OutputCheck(
                f"negative_std.{name}",
                columns[1],
                "negative std",
                f"{_is_number(std)} AND {std} < 0",
            )
        )
        checks.extend(_kind_checks(output, plan))
    return checks


def _schema_verdict(files: list[Path], expected: pa.Schema) -> Verdict | None:
    """The staged files' column types against ``expected``: a failing verdict, or None."""
    from great_expectations.expectations.core.expect_column_values_to_be_in_set import (
        ExpectColumnValuesToBeInSet,
    )
    from great_expectations.expectations.core.expect_table_columns_to_match_ordered_list import (
        ExpectTableColumnsToMatchOrderedList,
    )

    # One row per staged file: the Arrow type of each of its columns.
    types = [{f.name: str(f.type) for f in pq.read_schema(file)} for file in files]
    expectations: list[Any] = [
        ExpectTableColumnsToMatchOrderedList(column_list=expected.names, meta={"check": "columns"}),
        *[
            ExpectColumnValuesToBeInSet(
                column=f.name, value_set=[str(f.type)], meta={"check": "type", "column": f.name}
            )
            for f in expected
        ],
    ]
    facts = pd.DataFrame(types, columns=list(dict.fromkeys(n for row in types for n in row)))
    result = validate(facts, expectations, "output_schema")
    results: dict[str, dict[str, Any]] = {"output_schema": result}
    if files and not failed_metas(result):
        return Verdict("output", results)
    actual = [f"{n} {t}" for n, t in types[0].items()] if types else "no data file"
    wanted = [f"{f.name} {f.type}" for f in expected]
    error = f"output: the staged release has {actual}; the release schema is {wanted}"
    return Verdict("output", results, OutputContractError(error))


def check_output_contract(
    spark: SparkSession, plan: ReleasePlan, expected: pa.Schema, data: Path
) -> Verdict:
    """Validate the staged release files against ``expected``; the error names the columns.

    Reads the written files (never the lazy noisy frame, which must not be recomputed).
    Column types come from the file footers; the value checks are counted by Spark over
    the files, so only the counts reach the driver, never released rows or keys. GX
    judges two fact tables: each file's column types, and one count per value check.
    """
    from great_expectations.expectations.core.expect_column_max_to_be_between import (
        ExpectColumnMaxToBeBetween,
    )

    files = sorted(data.glob("*.parquet"))
    schema = _schema_verdict(files, expected)
    if schema is None or schema.error is not None:
        return schema or Verdict("output", {})
    # One row per released row, read back from the staged files.
    table = spark.read.parquet(*[str(file) for file in files])
    checks = _output_checks(plan, {f.name: f.dataType for f in table.schema.fields})
    keys = [quoted(k) for k in plan.columns.partition_columns]
    sql = {
        ROWS: "count(1)",
        # Rows beyond the first of each distinct key (null keys compare equal here).
        "duplicate_keys": f"count(1) - count(DISTINCT struct({', '.join(keys)}))",
    } | {check.figure: check.count for check in checks}
    # One row in all: every check's count, computed by Spark in one job.
    counted = table.agg(*[F.expr(text).alias(name) for name, text in sql.items()]).first()
    assert counted is not None
    figures = {name: int(counted[name] or 0) for name in sql}
    expectations: list[Any] = [
        ExpectColumnMaxToBeBetween(column=ROWS, min_value=0, meta={"what": "rows"}),
        ExpectColumnMaxToBeBetween(
            column="duplicate_keys",
            max_value=0,
            meta={"column": ", ".join(plan.columns.partition_columns), "what": "duplicate key"},
        ),
        *[
            ExpectColumnMaxToBeBetween(
                column=check.figure, max_value=0, meta={"column": check.column, "what": check.what}
            )
            for check in checks
        ],
    ]
    values_result = validate(figures_frame(figures), expectations, "output_values")
    results = schema.results | {"output_values": values_result}
    failed = failed_metas(values_result)
    if failed:
        parts = [f"{m['what']} in column '{m['column']}'" for m in failed]
        error = "output: the release breaks its contract: " + "; ".join(parts)
        return Verdict("output", results, OutputContractError(error))
    log.info("output contract: %d released row(s) pass every check", figures[ROWS])
    return Verdict("output", results)
