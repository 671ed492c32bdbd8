"""Exact integer aggregation per partition, on Spark.

Invariant: every aggregate is an exact integer (long or decimal(38,0)) whose value does
not depend on how Spark partitions or orders the rows. No sum can overflow:
``check_exact_arithmetic`` proves, from the bounds alone, that the largest per-row term
times the most rows Spark can hold (2**63) fits decimal(38,0).

Two levels, two types. A (unit, partition) holds at most Linf rows after bounding, so its
sum is at most Linf times the largest per-row term: when that bound fits a long (decided
from the bounds alone, see ``per_unit_sum_type``; e.g. any Linf <= 2**22 for sums and
means, whose rows are at most 2**41 grid units), the per-row terms and the per-(unit,
partition) sums are longs, which Spark adds far faster than decimals. The per-partition
sums, over any number of units, are always decimal(38,0), so the overflow proof above is
unchanged and the aggregated table has the same types and values either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.bounding import PARTITION_HASH, UNIT, encoded_columns
from pipelines.plan import ROWS, UNITS, Encoding, ReleasePlan
from pipelines.source import column

EXACT = T.DecimalType(38, 0)
_LONG_LIMIT = 2**63 - 1


def per_unit_sum_type(plan: ReleasePlan, term_bound: int) -> T.DataType:
    """long when Linf rows of |term| <= ``term_bound`` provably fit a long, else decimal(38,0).

    Invariant: a per-(unit, partition) sum of this type cannot overflow for any input.
    """
    linf = plan.bounds.max_rows_per_unit_per_partition
    return T.LongType() if linf * term_bound <= _LONG_LIMIT else EXACT


def _units(raw: Column, encoding: Encoding) -> Column:
    return raw


def _centred(raw: Column, encoding: Encoding) -> Column:
    # |2 * units| and |lo + hi| are at most 2**41, so the centred value is a safe long.
    return raw * F.lit(2) - F.lit(encoding.lo_units + encoding.hi_units)


@dataclass(frozen=True)
class RowTerm:
    """A per-row integer term of an encoded value (``Part.term`` names one)."""

    base: Callable[[Column, Encoding], Column]
    squared: bool = False

    def column(self, raw: Column, encoding: Encoding, exact: bool) -> Column:
        """The term as a long, or as decimal(38,0) when ``exact``."""
        value = self.base(raw, encoding)
        if exact:
            value = value.cast(EXACT)
        if self.squared:
            value = value * value
            if exact:
                value = value.cast(EXACT)
        return value


#: Every per-row term a metric kind's part may sum, by ``Part.term``.
ROW_TERMS: dict[str, RowTerm] = {
    "units": RowTerm(_units),
    "centred": RowTerm(_centred),
    "centred_squared": RowTerm(_centred, squared=True),
}


def row_terms(plan: ReleasePlan) -> dict[str, Column]:
    """Every summed column of the aggregated table and its per-row integer term.

    Each term is a long or a decimal(38,0), as ``per_unit_sum_type`` allows for its bound.
    """
    columns = encoded_columns(plan)
    terms: dict[str, Column] = {}
    for output in plan.outputs:
        encoding = output.encoding
        if encoding is None:
            continue
        raw = F.col(columns[output.name])  # a long, |units| <= 2**40 (dp_ops.grid)
        for part in output.kind.parts:
            if part.term is None:
                continue
            exact = per_unit_sum_type(plan, part.row_bound(encoding)) == EXACT
            terms[part.source(output.name)] = ROW_TERMS[part.term].column(raw, encoding, exact)
    return terms


def aggregate_partitions(bounded: DataFrame, plan: ReleasePlan) -> DataFrame:
    """One row per partition: units (distinct units), rows, and exact integer sums.

    Expects the output of ``bound_contributions`` (hash-partitioned by unit), so the
    per-(unit, partition) step needs no shuffle and the per-partition step needs one.
    Per-(unit, partition) sums are longs where provably safe; per-partition sums are
    always decimal(38,0).
    """
    keys = [column(name) for name in plan.columns.partition_columns]
    terms = row_terms(plan)
    # The partition hash is a function of (unit, key): grouping by it as well changes no
    # group, and matches the sort order bounding leaves (Spark then aggregates streaming).
    internal = [UNIT, PARTITION_HASH] if PARTITION_HASH in bounded.columns else [UNIT]
    cell = [F.col(name) for name in internal] + keys
    # One row per (unit, partition): its row count and its integer sums.
    per_unit = bounded.groupBy(*cell).agg(
        F.count(F.lit(1)).alias(ROWS),
        *[F.sum(term).alias(name) for name, term in terms.items()],
    )
    # One row per partition: distinct units, rows, sums (all exact integers).
    return per_unit.groupBy(*keys).agg(
        F.count(F.lit(1)).alias(UNITS),
        F.sum(ROWS).alias(ROWS),
        *[F.sum(F.col(name).cast(EXACT)).cast(EXACT).alias(name) for name in terms],
    )


def add_public_partitions(
    aggregated: DataFrame, public_keys: DataFrame, plan: ReleasePlan
) -> DataFrame:
    """One row per public key: the key's aggregates, or zeros where the data has none.

    Expects ``aggregated`` built from rows already restricted to the public keys.
    """
    keys = list(plan.columns.partition_columns)
    zero_filled = {UNITS: 0, ROWS: 0} | {name: 0 for name in row_terms(plan)}
    # One row per public key (left join keeps keys absent from the data).
    joined = public_keys.join(aggregated, on=keys, how="left")
    return joined.select(
        *[column(name) for name in keys],
        *[
            F.coalesce(F.col(name), F.lit(value).cast(joined.schema[name].dataType)).alias(name)
            for name, value in zero_filled.items()
        ],
    )
