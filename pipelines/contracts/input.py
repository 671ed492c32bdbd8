"""The input contract: required columns with usable types, and the row rules.

Each row rule drops the offending rows or fails the run (``contracts`` in the config); an
input with no usable row fails unless ``contracts.empty_input`` is ``publish``. No extra
pass over the input: the schema suite runs on a zero-row view (Spark metadata only), and
every row figure is counted by ``DataFrame.observe`` on the release's own pass. Only an
input whose scan reports no metrics (an empty table) is counted by one explicit
aggregation, which then reads nothing. Error messages name rules, fields and columns,
never a value or a key from the data (docs/privacy.md §9).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, Observation
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.contract_rules import ContractRules, InputRule
from pipelines.contracts.report import (
    ROWS,
    ROWS_KEPT,
    Verdict,
    failed_metas,
    figures_frame,
    validate,
)
from pipelines.errors import InputContractError
from pipelines.plan import ReleaseColumns
from pipelines.source import KEY_TYPES, NUMERIC
from pipelines.source import column as named_column

log = logging.getLogger("dprelease")

_RULE_TEXT = {
    "null_privacy_unit": "a null privacy unit",
    "null_partition_key": "a null partition key",
    "non_finite_value": "a null, NaN or infinite value",
}


def offending(rule: InputRule) -> Column:
    """True for the rows that break ``rule``."""
    if rule.rule != "non_finite_value":
        return named_column(rule.column).isNull()
    value = named_column(rule.column).cast(T.DoubleType())
    return value.isNull() | F.isnan(value) | (F.abs(value) == F.lit(float("inf")))


def _any(conditions: list[Column]) -> Column:
    combined = F.lit(False)
    for condition in conditions:
        combined = combined | condition
    return combined


def rows_meeting_contract(frame: DataFrame, contract: ContractRules) -> DataFrame:
    """Rows that break no row rule: the only rows the release may use.

    Rows under a ``fail`` rule are removed too (the run fails on their count before any
    noise is drawn); clamping a NaN, or grouping by a null unit, never happens.
    """
    breaking = _any([offending(rule) for rule in contract.rules])
    # One row per input row that breaks no rule.
    return frame.filter(~breaking)


def _figure_columns(contract: ContractRules) -> list[Column]:
    rules = contract.rules
    return [
        F.count(F.lit(1)).alias(ROWS),
        F.count_if(~_any([offending(r) for r in rules])).alias(ROWS_KEPT),
        *[F.count_if(offending(rule)).alias(rule.figure) for rule in rules],
    ]


@dataclass(frozen=True)
class ObservedInput:
    """The input with the contract figures attached; they are read after its first action."""

    frame: DataFrame
    source: DataFrame
    observation: Observation
    contract: ContractRules

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
            counted = self.source.agg(*_figure_columns(self.contract)).first()
            assert counted is not None
            row = counted.asDict()
        return {name: int(value or 0) for name, value in row.items()}


def observe_input(frame: DataFrame, contract: ContractRules) -> ObservedInput:
    """Attach the input contract's figures to ``frame``: counted on the release's own pass."""
    observation = Observation()
    # One row per input row (pass-through); the figures are counted on the way.
    observed = frame.observe(observation, *_figure_columns(contract))
    return ObservedInput(observed, frame, observation, contract)


def _gx_spark_column(name: str) -> str:
    """How GX's Spark column metadata names a top-level column (it backticks dotted names)."""
    if "." not in name or (name.startswith("`") and name.endswith("`")):
        return name
    return f"`{name}`"


def _schema_expectations(columns: ReleaseColumns) -> list[Any]:
    from great_expectations.expectations.core.expect_column_to_exist import ExpectColumnToExist
    from great_expectations.expectations.core.expect_column_values_to_be_in_type_list import (
        ExpectColumnValuesToBeInTypeList,
    )

    key_types = [t.__name__ for t in KEY_TYPES]
    wanted = [
        (
            "privacy_unit.column",
            columns.privacy_unit,
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
            for name in columns.partition_columns
        ],
        *[
            ("metric column", name, [t.__name__ for t in NUMERIC], "it must be numeric")
            for name in columns.measured_columns
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


def check_input_schema(frame: DataFrame, columns: ReleaseColumns) -> Verdict:
    """Run the input schema suite on a zero-row view of ``frame`` (no pass over the input).

    The verdict's error names every missing column, or the first column with an unusable type.
    """
    # Zero rows, the input's schema: Spark answers from metadata.
    result = validate(frame.limit(0), _schema_expectations(columns), "input_schema")
    results = {"input_schema": result}
    failed = failed_metas(result)
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


def judge_input(figures: Mapping[str, int], contract: ContractRules) -> Verdict:
    """Judge the input figures with the GX row suite; log the counts for the operator.

    The verdict's error says which ``fail`` rule found rows (on which column), or that no
    usable row is left while empty_input is ``fail``.
    """
    from great_expectations.expectations.core.expect_column_max_to_be_between import (
        ExpectColumnMaxToBeBetween,
    )

    rules = contract.rules
    empty_rule = contract.empty_input
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
    result = validate(figures_frame(figures), expectations, "input_rows")
    results = {"input_rows": result}
    # Figures computed without noise go to the operator report only (docs/privacy.md §9).
    log.info("input contract: the figures are in the operator report (owner-only)")
    failed = failed_metas(result)
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
        error = (
            f"input: no usable row in {contract.source}; contracts.empty_input is 'fail' "
            "(counts in the operator report)"
        )
        return Verdict("input", results, InputContractError(error))
    return Verdict("input", results)


def input_summary(figures: Mapping[str, int], contract: ContractRules) -> dict[str, Any]:
    """The operator summary of the input contract: counts per rule (operator-only)."""
    return {
        "rows_read": figures.get(ROWS),
        "rows_usable": figures.get(ROWS_KEPT),
        "empty_input": contract.empty_input,
        "rules": [
            {
                "rule": rule.rule,
                "column": rule.column,
                "field": rule.field,
                "action": rule.action,
                "rows": figures.get(rule.figure),
            }
            for rule in contract.rules
        ],
    }
