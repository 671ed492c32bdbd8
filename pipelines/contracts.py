"""Data contracts: Great Expectations suites on the way in and on the way out.

Input contract (built from the job config): the required columns exist with usable types;
privacy units and partition keys are not null; measured values are finite. Each row rule
drops the offending rows or fails the run (``contracts`` in the config); an input with no
usable row fails unless ``contracts.empty_input`` is ``publish``.

Output contract (run on the staged Parquet files before the manifest is written): the
release schema, unique keys, finite values, ``ci_low <= value <= ci_high``, counts and sums
on their grid, means and variances inside their bounds. A failure blocks publishing.

Cost. The input contract adds no pass over the input: its schema suite runs on a zero-row
view (Spark metadata only), and every row figure is counted by ``DataFrame.observe`` while
the release itself reads the input (the pass that bounds and aggregates it). Only an input
whose scan reports no metrics (it has no Spark partition: an empty table) is counted by one
explicit aggregation, which then reads nothing. The output contract reads the staged
release (one row per released partition) once, file by file with pyarrow on the driver: no
Spark job. Great Expectations judges the figures, as small pandas fact tables.

Privacy invariants: the figures are statistics without noise, so they go to the operator
log and to ``<output_root>/<release>/_operator/<run_id>/`` only (owner-only permissions),
never into the staging directory, the manifest or the release. Error messages name rules,
fields and columns, never a value or a key from the data.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.config import JobConfig
from pipelines.errors import InputContractError, OutputContractError
from pipelines.noising import COUNT_METRICS
from pipelines.plan import ReleasePlan
from pipelines.source import KEY_TYPES, NUMERIC, quoted
from pipelines.source import column as named_column

log = logging.getLogger("dprelease")

OPERATOR = "_operator"
INPUT_REPORT = "input_validation.json"
OUTPUT_REPORT = "output_validation.json"
SUMMARY = "summary.json"
ROWS = "rows"
ROWS_KEPT = "rows_kept"
# No partial lists of unexpected values: reports hold counts, never data values or keys.
_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 0}

RuleName = Literal["null_privacy_unit", "null_partition_key", "non_finite_value"]
_RULE_TEXT = {
    "null_privacy_unit": "a null privacy unit",
    "null_partition_key": "a null partition key",
    "non_finite_value": "a null, NaN or infinite value",
}


@dataclass(frozen=True)
class Verdict:
    """GX validation results of one contract step, and the error they prove (None: passed)."""

    contract: Literal["input", "output"]
    results: dict[str, dict[str, Any]]
    error: InputContractError | OutputContractError | None = None


@dataclass(frozen=True)
class InputRule:
    """One row rule of the input contract, on one column."""

    rule: RuleName
    column: str
    field: str  # the config field(s) naming the column
    action: Literal["drop_row", "fail"]

    @property
    def figure(self) -> str:
        """Name of the rule's row count among the contract figures."""
        return f"{self.rule}.{self.column}"

    def offending(self) -> Column:
        """True for the rows that break this rule."""
        if self.rule != "non_finite_value":
            return named_column(self.column).isNull()
        value = named_column(self.column).cast(T.DoubleType())
        return value.isNull() | F.isnan(value) | (F.abs(value) == F.lit(float("inf")))


def input_rules(config: JobConfig) -> list[InputRule]:
    """The input contract's row rules, in config order."""
    rules = config.contracts
    out = [
        InputRule(
            "null_privacy_unit",
            config.privacy_unit.column,
            "privacy_unit.column",
            rules.null_privacy_unit,
        )
    ]
    for index, name in enumerate(config.partition_columns):
        out.append(
            InputRule(
                "null_partition_key", name, f"partition_columns[{index}]", rules.null_partition_key
            )
        )
    for column in config.measured_columns:
        fields = [
            f"metrics[{i}].column" for i, m in enumerate(config.metrics) if m.column == column
        ]
        out.append(InputRule("non_finite_value", column, ", ".join(fields), rules.non_finite_value))
    return out


def _any(conditions: list[Column]) -> Column:
    combined = F.lit(False)
    for condition in conditions:
        combined = combined | condition
    return combined


def rows_meeting_contract(frame: DataFrame, config: JobConfig) -> DataFrame:
    """Rows that break no row rule: the only rows the release may use.

    Rows under a ``fail`` rule are removed too (the run fails on their count before any
    noise is drawn); clamping a NaN, or grouping by a null unit, never happens.
    """
    offending = _any([rule.offending() for rule in input_rules(config)])
    # One row per input row that breaks no rule.
    return frame.filter(~offending)


def _figure_columns(config: JobConfig) -> list[Column]:
    rules = input_rules(config)
    return [
        F.count(F.lit(1)).alias(ROWS),
        F.count_if(~_any([r.offending() for r in rules])).alias(ROWS_KEPT),
        *[F.count_if(rule.offending()).alias(rule.figure) for rule in rules],
    ]


@dataclass(frozen=True)
class ObservedInput:
    """The input with the contract figures attached; they are read after its first action."""

    frame: DataFrame
    source: DataFrame
    observation: Observation
    config: JobConfig

    def figures(self) -> dict[str, int]:
        """The counted figures (call after an action that read ``frame``).

        An input with no Spark partition reports no metrics; it is counted by one explicit
        aggregation instead, which has no row to read.
        """
        row: dict[str, Any] = {}
        # Observation.get would block forever if no action completed: check first.
        java = getattr(self.observation, "_jo", None)
        if java is not None and java.future().isCompleted() and java.getRow().length() > 0:
            row = dict(self.observation.get)
        if not row:
            counted = self.source.agg(*_figure_columns(self.config)).first()
            assert counted is not None
            row = counted.asDict()
        return {name: int(value or 0) for name, value in row.items()}


def observe_input(frame: DataFrame, config: JobConfig) -> ObservedInput:
    """Attach the input contract's figures to ``frame``: counted on the release's own pass."""
    observation = Observation()
    # One row per input row (pass-through); the figures are counted on the way.
    observed = frame.observe(observation, *_figure_columns(config))
    return ObservedInput(observed, frame, observation, config)


def operator_dir(release: Path, run_id: str) -> Path:
    """The run's operator-only directory (created, owner-only): validation results, summary.

    Never inside staging (staging becomes the public version) and never read by consumers.
    """
    root = release / OPERATOR
    root.mkdir(mode=0o700, exist_ok=True)
    path = root / run_id
    path.mkdir(mode=0o700, exist_ok=False)
    return path


def write_operator_file(directory: Path, name: str, content: Mapping[str, Any]) -> None:
    """Write one operator-only JSON file (mode 0600)."""
    path = directory / name
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2, default=str)
        handle.write("\n")


def _validate(
    batch_frame: DataFrame | pd.DataFrame, expectations: list[Any], name: str
) -> dict[str, Any]:
    """Validate one batch with a suite in an ephemeral GX context; the result as JSON."""
    # Imported here: Great Expectations takes seconds to import; `plan` and `schema` skip it.
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # In memory only: no docs site, no progress bars on stderr.
    settings = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=settings)
    if isinstance(batch_frame, pd.DataFrame):
        asset: Any = context.data_sources.add_pandas(name).add_dataframe_asset(name)
    else:
        asset = context.data_sources.add_spark(name).add_dataframe_asset(name)
    definition = asset.add_batch_definition_whole_dataframe(name)
    batch = definition.get_batch(batch_parameters={"dataframe": batch_frame})
    suite = gx.ExpectationSuite(name=name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    validation: Any = batch.validate(suite, result_format=_RESULT_FORMAT)
    result: dict[str, Any] = validation.to_json_dict()
    return result


def _failed(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Metas of the failed expectations of a GX validation result."""
    return [
        dict(item["expectation_config"].get("meta") or {})
        for item in result.get("results", [])
        if not item.get("success")
    ]


def _gx_spark_column(name: str) -> str:
    """How GX's Spark column metadata names a top-level column (it backticks dotted names)."""
    if "." not in name or (name.startswith("`") and name.endswith("`")):
        return name
    return f"`{name}`"


def _schema_expectations(config: JobConfig) -> list[Any]:
    from great_expectations.expectations.core.expect_column_to_exist import ExpectColumnToExist
    from great_expectations.expectations.core.expect_column_values_to_be_in_type_list import (
        ExpectColumnValuesToBeInTypeList,
    )

    key_types = [t.__name__ for t in KEY_TYPES]
    wanted = [
        (
            "privacy_unit.column",
            config.privacy_unit.column,
            key_types,
            "use a string or integer id",
        ),
        *[
            (
                "partition_columns",
                name,
                key_types,
                "use a string, integer, boolean, date or timestamp column",
            )
            for name in config.partition_columns
        ],
        *[
            ("metric column", name, [t.__name__ for t in NUMERIC], "it must be numeric")
            for name in config.measured_columns
        ],
    ]
    expectations: list[Any] = []
    for label, column, types, advice in wanted:
        meta = {"label": label, "column": column, "advice": advice}
        name = _gx_spark_column(column)
        expectations.append(ExpectColumnToExist(column=name, meta=meta | {"check": "exists"}))
        expectations.append(
            ExpectColumnValuesToBeInTypeList(
                column=name, type_list=types, meta=meta | {"check": "type"}
            )
        )
    return expectations


def check_input_schema(frame: DataFrame, config: JobConfig) -> Verdict:
    """Run the input schema suite on a zero-row view of ``frame`` (no pass over the input).

    The verdict's error names every missing column, or the first column with an unusable type.
    """
    # Zero rows, the input's schema: Spark answers from metadata.
    result = _validate(frame.limit(0), _schema_expectations(config), "input_schema")
    results = {"input_schema": result}
    failed = _failed(result)
    missing = [m for m in failed if m.get("check") == "exists"]
    if missing:
        names = ", ".join(f"{m['label']} '{m['column']}'" for m in missing)
        error = f"input: missing column(s): {names}; the input has {sorted(frame.columns)}"
        return Verdict("input", results, InputContractError(error))
    types = {field.name: field.dataType for field in frame.schema.fields}
    for meta in failed:
        column = meta["column"]
        error = (
            f"input: {meta['label']} '{column}' has type {types[column].simpleString()}; "
            f"{meta['advice']}"
        )
        return Verdict("input", results, InputContractError(error))
    return Verdict("input", results)


def _figures_frame(figures: Mapping[str, int | float]) -> pd.DataFrame:
    """The figures as a one-row pandas frame (what the figures suites validate)."""
    return pd.DataFrame([dict(figures)])


def judge_input(figures: Mapping[str, int], config: JobConfig) -> Verdict:
    """Judge the input figures with the GX row suite; log the counts for the operator.

    The verdict's error says which ``fail`` rule found rows (on which column), or that no
    usable row is left while empty_input is ``fail``.
    """
    from great_expectations.expectations.core.expect_column_max_to_be_between import (
        ExpectColumnMaxToBeBetween,
    )

    rules = input_rules(config)
    empty_rule = config.contracts.empty_input
    expectations: list[Any] = [
        ExpectColumnMaxToBeBetween(
            column=ROWS, min_value=0, meta={"rule": "rows_read", "action": "report"}
        ),
        ExpectColumnMaxToBeBetween(
            column=ROWS_KEPT,
            min_value=1 if empty_rule == "fail" else 0,
            meta={"rule": "empty_input", "action": empty_rule},
        ),
    ]
    for rule in rules:
        meta = {
            "rule": rule.rule,
            "column": rule.column,
            "field": rule.field,
            "action": rule.action,
        }
        expectations.append(
            ExpectColumnMaxToBeBetween(
                column=rule.figure,
                min_value=0,
                max_value=0 if rule.action == "fail" else None,
                meta=meta,
            )
        )
    result = _validate(_figures_frame(figures), expectations, "input_rows")
    results = {"input_rows": result}
    # Figures computed without noise go to the operator report only (docs/privacy.md §9).
    log.info("input contract: the figures are in the operator report (owner-only)")
    failed = _failed(result)
    breaking = [m for m in failed if m.get("rule") in _RULE_TEXT]
    if breaking:
        parts = []
        for meta in breaking:
            rule = next(r for r in rules if (r.rule, r.column) == (meta["rule"], meta["column"]))
            parts.append(
                f"rows with {_RULE_TEXT[rule.rule]} in column '{rule.column}' ({rule.field}); "
                f"contracts.{rule.rule} is 'fail' (counts in the operator report)"
            )
        return Verdict("input", results, InputContractError("input: " + "; ".join(parts)))
    if any(m.get("rule") == "empty_input" for m in failed):
        where = config.input.path if config.input.path is not None else config.input.table
        error = (
            f"input: no usable row in {where}; contracts.empty_input is 'fail' "
            "(counts in the operator report)"
        )
        return Verdict("input", results, InputContractError(error))
    return Verdict("input", results)


def input_summary(figures: Mapping[str, int], config: JobConfig) -> dict[str, Any]:
    """The operator summary of the input contract: counts per rule (operator-only)."""
    return {
        "rows_read": figures.get(ROWS),
        "rows_usable": figures.get(ROWS_KEPT),
        "empty_input": config.contracts.empty_input,
        "rules": [
            {
                "rule": rule.rule,
                "column": rule.column,
                "field": rule.field,
                "action": rule.action,
                "rows": figures.get(rule.figure),
            }
            for rule in input_rules(config)
        ],
    }


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


def _count_where(condition: str) -> str:
    """SQL: the number of rows where ``condition`` is true (null counts as false)."""
    return f"count(CASE WHEN {condition} THEN 1 END)"


@dataclass(frozen=True)
class _OutputCheck:
    figure: str
    column: str
    what: str


def _output_checks(plan: ReleasePlan) -> list[_OutputCheck]:
    """Every value check of the released table, in release column order."""
    checks = [
        _OutputCheck(f"null_key.{k}", k, "null partition key")
        for k in plan.config.partition_columns
    ]
    for output in plan.outputs:
        name = output.name
        for column in (name, f"{name}_std", f"{name}_ci_low", f"{name}_ci_high"):
            checks.append(
                _OutputCheck(f"non_finite.{column}", column, "null, NaN or infinite value")
            )
        checks.append(
            _OutputCheck(f"outside_interval.{name}", name, "value outside [ci_low, ci_high]")
        )
        checks.append(_OutputCheck(f"negative_std.{name}", f"{name}_std", "negative std"))
        if output.metric == "sum" and output.encoding is not None:
            grid = output.encoding.grid.step
            checks.append(_OutputCheck(f"off_grid.{name}", name, f"value off the grid {grid:g}"))
        if output.metric in COUNT_METRICS and plan.config.post_processing.clamp_negative_counts:
            checks.append(_OutputCheck(f"negative_count.{name}", name, "negative count"))
        if output.encoding is not None and output.metric in ("mean", "variance"):
            lower, upper = _released_bounds(plan, output.name)
            checks.append(
                _OutputCheck(
                    f"outside_bounds.{name}", name, f"value outside [{lower:g}, {upper:g}]"
                )
            )
    return checks


def _released_bounds(plan: ReleasePlan, name: str) -> tuple[float, float]:
    """Where a released mean or variance must lie: its value bounds, or [0, half-width²]."""
    output = next(o for o in plan.outputs if o.name == name)
    assert output.encoding is not None
    lower, upper = output.encoding.lower, output.encoding.upper
    if output.metric == "variance":
        return 0.0, ((upper - lower) / 2) ** 2
    return lower, upper


def _value_figures(table: DataFrame, plan: ReleasePlan) -> dict[str, str]:
    """One counting aggregate (Spark SQL) per output check, for one pass over the release.

    SQL text rather than Column objects: one gateway call per figure, not dozens.
    """
    types = {f.name: f.dataType for f in table.schema.fields}
    keys = [quoted(k) for k in plan.config.partition_columns]
    figures = {
        ROWS: "count(1)",
        # Rows beyond the first of each distinct key (null keys compare equal here).
        "duplicate_keys": f"count(1) - count(DISTINCT struct({', '.join(keys)}))",
    }
    for key, identifier in zip(plan.config.partition_columns, keys, strict=True):
        figures[f"null_key.{key}"] = _count_where(f"{identifier} IS NULL")
    for output in plan.outputs:
        name = output.name
        value, std = quoted(name), quoted(f"{name}_std")
        low, high = quoted(f"{name}_ci_low"), quoted(f"{name}_ci_high")
        for column in (name, f"{name}_std", f"{name}_ci_low", f"{name}_ci_high"):
            figures[f"non_finite.{column}"] = _count_where(
                _non_finite(quoted(column), types[column])
            )
        numbers = " AND ".join(_is_number(c) for c in (value, low, high))
        inside = f"{numbers} AND {low} <= {value} AND {value} <= {high}"
        figures[f"outside_interval.{name}"] = _count_where(f"NOT coalesce({inside}, false)")
        figures[f"negative_std.{name}"] = _count_where(f"{_is_number(std)} AND {std} < 0")
        if output.metric == "sum" and output.encoding is not None:
            units = f"(CAST({value} AS DOUBLE) / {_double(output.encoding.grid.step)})"
            off_grid = f"{_is_number(units)} AND {units} != bround({units}, 0)"
            figures[f"off_grid.{name}"] = _count_where(off_grid)
        if output.metric in COUNT_METRICS and plan.config.post_processing.clamp_negative_counts:
            figures[f"negative_count.{name}"] = _count_where(f"({value} < 0 OR {low} < 0)")
        if output.encoding is not None and output.metric in ("mean", "variance"):
            lower, upper = _released_bounds(plan, name)
            outside = f"({value} < {_double(lower)} OR {value} > {_double(upper)})"
            figures[f"outside_bounds.{name}"] = _count_where(f"{_is_number(value)} AND {outside}")
    return figures


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
    from great_expectations.expectations.core.expect_column_values_to_be_in_set import (
        ExpectColumnValuesToBeInSet,
    )
    from great_expectations.expectations.core.expect_table_columns_to_match_ordered_list import (
        ExpectTableColumnsToMatchOrderedList,
    )

    files = sorted(data.glob("*.parquet"))
    # One row per staged file: the Arrow type of each of its columns.
    types = [{f.name: str(f.type) for f in pq.read_schema(file)} for file in files]
    schema_expectations: list[Any] = [
        ExpectTableColumnsToMatchOrderedList(column_list=expected.names, meta={"check": "columns"}),
        *[
            ExpectColumnValuesToBeInSet(
                column=f.name, value_set=[str(f.type)], meta={"check": "type", "column": f.name}
            )
            for f in expected
        ],
    ]
    facts = pd.DataFrame(types, columns=list(dict.fromkeys(n for row in types for n in row)))
    schema_result = _validate(facts, schema_expectations, "output_schema")
    results: dict[str, dict[str, Any]] = {"output_schema": schema_result}
    if not files or _failed(schema_result):
        actual = [f"{n} {t}" for n, t in types[0].items()] if types else "no data file"
        wanted = [f"{f.name} {f.type}" for f in expected]
        error = f"output: the staged release has {actual}; the release schema is {wanted}"
        return Verdict("output", results, OutputContractError(error))
    checks = _output_checks(plan)
    # One row per released row, read back from the staged files.
    table = spark.read.parquet(*[str(file) for file in files])
    sql = _value_figures(table, plan)
    # One row in all: every check's count, computed by Spark in one job.
    counted = table.agg(*[F.expr(text).alias(name) for name, text in sql.items()]).first()
    assert counted is not None
    figures = {name: int(counted[name] or 0) for name in sql}
    expectations: list[Any] = [
        ExpectColumnMaxToBeBetween(column=ROWS, min_value=0, meta={"what": "rows"}),
        ExpectColumnMaxToBeBetween(
            column="duplicate_keys",
            max_value=0,
            meta={"column": ", ".join(plan.config.partition_columns), "what": "duplicate key"},
        ),
        *[
            ExpectColumnMaxToBeBetween(
                column=check.figure, max_value=0, meta={"column": check.column, "what": check.what}
            )
            for check in checks
        ],
    ]
    values_result = _validate(_figures_frame(figures), expectations, "output_values")
    results["output_values"] = values_result
    failed = _failed(values_result)
    if failed:
        parts = [f"{m['what']} in column '{m['column']}'" for m in failed]
        error = "output: the release breaks its contract: " + "; ".join(parts)
        return Verdict("output", results, OutputContractError(error))
    log.info("output contract: %d released row(s) pass every check", figures[ROWS])
    return Verdict("output", results)


class OperatorReport:
    """The run's operator-only record: GX validation results and a summary with counts.

    Every file is rewritten as soon as it changes, so a failed run leaves its evidence.
    """

    def __init__(self, directory: Path, run_id: str, config: JobConfig) -> None:
        self.directory = directory
        self.input: dict[str, dict[str, Any]] = {}
        self.summary: dict[str, Any] = {
            "run_id": run_id,
            "release": config.release.name,
            "data_period": config.release.data_period,
            "status": "running",
            "note": "operator-only: counts without noise; never publish this directory",
        }

    def record(self, verdict: Verdict) -> None:
        """Save a contract step's GX results, then raise its error if it failed."""
        if verdict.contract == "input":
            self.input |= verdict.results
            self._write(INPUT_REPORT, self.input)
        else:
            self._write(OUTPUT_REPORT, verdict.results)
            self.summary["output_contract"] = "failed" if verdict.error else "passed"
        if verdict.error is not None:
            raise verdict.error

    def finish(self, status: str, version: str | None = None) -> None:
        """Write the summary with the run's final status (and the published version)."""
        self.summary["status"] = status
        if version is not None:
            self.summary["version"] = version
        self._write(SUMMARY, self.summary)

    def _write(self, name: str, content: Mapping[str, Any]) -> None:
        try:
            write_operator_file(self.directory, name, content)
        except OSError as error:
            log.warning("cannot write operator file %s (%s)", name, error.strerror or error)
