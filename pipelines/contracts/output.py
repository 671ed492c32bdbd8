"""The output contract, run on the staged Parquet files before the manifest is written.

Checks: the release schema, unique keys, finite values, ``ci_low <= value <= ci_high``,
non-negative stds, what each metric kind promises (``MetricKind``: values on the grid,
non-negative counts when clamped, values inside their released range; quantiles inside
[lower, upper] and non-decreasing in rank), the consistent-row inequalities
(``pipelines.consistency``: privacy_id_count <= count, sums inside [count·lower,
count·upper] on the grid-rounded bounds), and each reliability flag against its rule
(``pipelines.derivation.unreliable``). A failure blocks publishing. The checks count on
the staged (released) table with pyarrow on the driver; only the counts go to the
operator report, and GX judges them (docs/privacy.md §9).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.consistency import RowRules, SumBound, row_rules
from pipelines.contracts.report import ROWS, Verdict, failed_metas, figures_frame, validate
from pipelines.derivation import RELIABILITY_RULE, unreliable
from pipelines.errors import OutputContractError
from pipelines.plan import OutputMetric, ReleasePlan
from pipelines.released import FLAG, released_name, released_names

log = logging.getLogger("dprelease")


Mask = npt.NDArray[np.bool_]


def _values(table: pa.Table, name: str) -> npt.NDArray[np.float64]:
    """A released column as float64, nulls as NaN (so every comparison with them fails)."""
    return np.asarray(
        pc.fill_null(table.column(name).cast(pa.float64(), safe=False), float("nan")).to_numpy(),
        dtype=np.float64,
    )


@dataclass(frozen=True)
class _OutputCheck:
    """One value check: its figure's name, the column it is about, and its failing rows."""

    figure: str
    column: str
    what: str
    failing: Callable[[pa.Table], Mask]  # true on the rows that break the check

    def count(self, table: pa.Table) -> int:
        """The number of released rows that break the check."""
        return int(np.count_nonzero(self.failing(table)))


def _null(name: str) -> Callable[[pa.Table], Mask]:
    return lambda t: np.asarray(t.column(name).is_null().to_numpy(zero_copy_only=False))


def _non_finite(name: str) -> Callable[[pa.Table], Mask]:
    return lambda t: ~np.isfinite(_values(t, name))


def _outside_interval(value: str, low: str, high: str) -> Callable[[pa.Table], Mask]:
    def failing(t: pa.Table) -> Mask:
        v, lo, hi = _values(t, value), _values(t, low), _values(t, high)
        with np.errstate(invalid="ignore"):
            return ~((lo <= v) & (v <= hi))

    return failing


def _below(name: str, floor: float, *others: str) -> Callable[[pa.Table], Mask]:
    """True where ``name`` (or any of ``others``) is a number below ``floor``."""

    def failing(t: pa.Table) -> Mask:
        with np.errstate(invalid="ignore"):
            below = [_values(t, c) < floor for c in (name, *others)]
        return np.asarray(np.logical_or.reduce(below), dtype=bool)

    return failing


def _off_grid(name: str, grid: float) -> Callable[[pa.Table], Mask]:
    def failing(t: pa.Table) -> Mask:
        units = _values(t, name) / grid
        with np.errstate(invalid="ignore"):
            off = np.isfinite(units) & (units != np.round(units))
        return np.asarray(off, dtype=bool)

    return failing


def _outside(name: str, lower: float, upper: float) -> Callable[[pa.Table], Mask]:
    def failing(t: pa.Table) -> Mask:
        v = _values(t, name)
        with np.errstate(invalid="ignore"):
            return (v < lower) | (v > upper)

    return failing


def _above(name: str, ceiling: str) -> Callable[[pa.Table], Mask]:
    """True where ``name`` is above the column ``ceiling`` (a unit count above the rows)."""

    def failing(t: pa.Table) -> Mask:
        with np.errstate(invalid="ignore"):
            return np.asarray(_values(t, name) > _values(t, ceiling), dtype=bool)

    return failing


def _outside_count_bounds(bound: SumBound, count: str | None) -> Callable[[pa.Table], Mask]:
    """True where a sum (grid units) leaves [max(C, 0)·lo_u, max(C, 0)·hi_u] (or its sign)."""

    def failing(t: pa.Table) -> Mask:
        units = _values(t, bound.metric.output) / bound.grid
        inf = np.full(len(units), np.inf)
        low, high = -inf, inf
        if count is not None:
            rows = np.maximum(_values(t, count), 0.0)
            low, high = rows * bound.lo_units, rows * bound.hi_units
        else:
            low = np.zeros(len(units)) if bound.lo_units >= 0 else low
            high = np.zeros(len(units)) if bound.hi_units <= 0 else high
        with np.errstate(invalid="ignore"):
            below, above = units < low, units > high
        return np.asarray(below | above, dtype=bool)

    return failing


def _row_checks(rules: RowRules) -> list[_OutputCheck]:
    """The consistency inequalities of every row (docs/privacy.md §7, "Consistent rows")."""
    count = None if rules.count is None else rules.count.output
    checks = [
        _OutputCheck(
            f"above_count.{units.output}",
            units.output,
            f"value above '{count}'",
            _above(units.output, str(count)),
        )
        for units in rules.units
    ]
    for bound in rules.sums:
        name = bound.metric.output
        what = f"[{count}*lower, {count}*upper]" if count is not None else "the bounds' sign"
        checks.append(
            _OutputCheck(
                f"outside_count_bounds.{name}",
                name,
                f"value outside {what}",
                _outside_count_bounds(bound, count),
            )
        )
    return checks


def _wrong_flag(name: str, share: float) -> Callable[[pa.Table], Mask]:
    """True where the reliability flag is null or disagrees with the rule on the row."""

    def failing(t: pa.Table) -> Mask:
        flag = t.column(released_name(name, FLAG))
        stated = np.asarray(pc.fill_null(flag, False).to_numpy(zero_copy_only=False), dtype=bool)
        value, low, high = (
            _values(t, released_name(name, s)) for s in ("value", "ci_low", "ci_high")
        )
        nulls = np.asarray(flag.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        return np.asarray(nulls | (stated != unreliable(value, low, high, share)), dtype=bool)

    return failing


def _kind_checks(output: OutputMetric, plan: ReleasePlan) -> list[_OutputCheck]:
    """What the metric's kind promises about its released values."""
    name, kind, encoding = output.name, output.kind, output.encoding
    low = released_name(name, "ci_low")
    checks = []
    if kind.on_grid and encoding is not None:
        grid = encoding.grid.step
        checks.append(
            _OutputCheck(
                f"off_grid.{name}", name, f"value off the grid {grid:g}", _off_grid(name, grid)
            )
        )
    if kind.clamps_negative and plan.post.clamp_negative_counts:
        checks.append(
            _OutputCheck(f"negative_count.{name}", name, "negative count", _below(name, 0, low))
        )
    if kind.released_range is not None and encoding is not None:
        lower, upper = kind.released_range(encoding.lower, encoding.upper)
        checks.append(
            _OutputCheck(
                f"outside_bounds.{name}",
                name,
                f"value outside [{lower:g}, {upper:g}]",
                _outside(name, lower, upper),
            )
        )
    return checks


def _decreasing(values: list[str]) -> Callable[[pa.Table], Mask]:
    """True where a rank's value is below the one of a smaller rank (``values`` by rank)."""

    def failing(t: pa.Table) -> Mask:
        table = np.stack([_values(t, v) for v in values])
        with np.errstate(invalid="ignore"):
            return np.asarray(np.any(np.diff(table, axis=0) < 0, axis=0), dtype=bool)

    return failing


def _tree_checks(output: OutputMetric, plan: ReleasePlan) -> list[_OutputCheck]:
    """A quantile tree's promises (docs/privacy.md §4b): every column finite and inside
    [lower, upper], each rank's value inside [ci_low, ci_high], values non-decreasing in
    rank."""
    assert output.tree is not None
    shape = output.tree.shape
    mine = [c for c in plan.released if c.output == output.name]
    ranked = sorted((c for c in mine if c.statistic == "value"), key=lambda c: c.rank or 0.0)
    where = f"value outside [{shape.lower:g}, {shape.upper:g}]"
    checks = [
        check
        for c in mine
        for check in (
            _OutputCheck(
                f"non_finite.{c.name}", c.name, "null, NaN or infinite value", _non_finite(c.name)
            ),
            _OutputCheck(
                f"outside_bounds.{c.name}",
                c.name,
                where,
                _outside(c.name, shape.lower, shape.upper),
            ),
        )
    ]
    for value in (c.name for c in ranked):
        low, high = released_name(value, "ci_low"), released_name(value, "ci_high")
        checks.append(
            _OutputCheck(
                f"outside_interval.{value}",
                value,
                "value outside [ci_low, ci_high]",
                _outside_interval(value, low, high),
            )
        )
    values = [c.name for c in ranked]
    checks.append(
        _OutputCheck(
            f"not_monotone.{output.name}",
            values[0],
            "quantiles decrease as the rank grows",
            _decreasing(values),
        )
    )
    return checks


def _output_checks(plan: ReleasePlan) -> list[_OutputCheck]:
    """Every value check of the released table, in release column order."""
    checks = [
        _OutputCheck(f"null_key.{k}", k, "null partition key", _null(k))
        for k in plan.columns.partition_columns
    ]
    for output in plan.outputs:
        name = output.name
        if output.tree is not None:
            checks.extend(_tree_checks(output, plan))
            continue
        columns = released_names(name)
        for column in columns:
            checks.append(
                _OutputCheck(
                    f"non_finite.{column}",
                    column,
                    "null, NaN or infinite value",
                    _non_finite(column),
                )
            )
        value, std, low, high = columns
        checks.append(
            _OutputCheck(
                f"outside_interval.{name}",
                name,
                "value outside [ci_low, ci_high]",
                _outside_interval(value, low, high),
            )
        )
        checks.append(_OutputCheck(f"negative_std.{name}", std, "negative std", _below(std, 0)))
        checks.extend(_kind_checks(output, plan))
        share = plan.post.reliability_share
        if share is not None:
            checks.append(
                _OutputCheck(
                    f"reliability_flag.{name}",
                    released_name(name, FLAG),
                    f"flag not {RELIABILITY_RULE} (share {share:g})",
                    _wrong_flag(name, share),
                )
            )
    return checks + _row_checks(row_rules(plan.outputs, plan.post))


def _duplicate_keys(table: pa.Table, keys: list[str]) -> int:
    """Rows beyond the first of each distinct key (null keys compare equal here)."""
    distinct = table.group_by(keys).aggregate([]).num_rows if table.num_rows else 0
    return int(table.num_rows) - int(distinct)


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


def check_output_contract(plan: ReleasePlan, expected: pa.Schema, data: Path) -> Verdict:
    """Validate the staged release files against ``expected``; the error names the columns.

    Reads the written files (never the lazy noisy frame, which must not be recomputed),
    on the driver with pyarrow: the staged table is the release itself, which the
    canonical layout has just written from the driver, so no Spark job is needed. GX
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
    table = pa.concat_tables([pq.read_table(file) for file in files])
    keys = list(plan.columns.partition_columns)
    checks = _output_checks(plan)
    figures = {ROWS: table.num_rows, "duplicate_keys": _duplicate_keys(table, keys)}
    figures |= {check.figure: check.count(table) for check in checks}
    expectations: list[Any] = [
        ExpectColumnMaxToBeBetween(column=ROWS, min_value=0, meta={"what": "rows"}),
        ExpectColumnMaxToBeBetween(
            column="duplicate_keys",
            max_value=0,
            meta={"column": ", ".join(keys), "what": "duplicate key"},
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
