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

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.bounding import PARTITION_HASH, UNIT, encoded_columns

# The overflow proof is pure Python, so build_plan runs it (`plan` refuses what `run`
# would); both names are re-exported here for existing imports.
from pipelines.plan import ROWS, UNITS, Encoding, ReleasePlan
from pipelines.plan import ArithmeticBoundError as ArithmeticBoundError
from pipelines.plan import check_exact_arithmetic as check_exact_arithmetic
from pipelines.source import column

EXACT = T.DecimalType(38, 0)
_LONG_LIMIT = 2**63 - 1


def _term_bounds(name: str, encoding: Encoding, metric: str) -> dict[str, int]:
    """Bound on |per-row term| of each summed column of one metric (from the bounds only)."""
    if metric == "sum":
        return {f"sum__{name}": encoding.max_abs_units}
    bounds = {f"nsum__{name}": encoding.width}
    if metric == "variance":
        bounds[f"nsq__{name}"] = encoding.width**2
    return bounds


def per_unit_sum_type(plan: ReleasePlan, term_bound: int) -> T.DataType:
    """long when Linf rows of |term| <= ``term_bound`` provably fit a long, else decimal(38,0).

    Invariant: a per-(unit, partition) sum of this type cannot overflow for any input.
    """
    linf = plan.bounds.max_rows_per_unit_per_partition
    return T.LongType() if linf * term_bound <= _LONG_LIMIT else EXACT


def _sums_for(plan: ReleasePlan, name: str, encoding: Encoding, metric: str) -> dict[str, Column]:
    """Per-row integer terms of one metric, keyed by the aggregated column they sum into.

    Each term is a long or a decimal(38,0), as ``per_unit_sum_type`` allows for its bound.
    """
    bounds = _term_bounds(name, encoding, metric)
    exact = {column: per_unit_sum_type(plan, bound) == EXACT for column, bound in bounds.items()}
    raw = F.col(encoded_columns(plan)[name])  # a long, |units| <= 2**40 (dp_ops.grid)
    if metric == "sum":
        column = f"sum__{name}"
        return {column: raw.cast(EXACT) if exact[column] else raw}
    # |2 * units| and |lo + hi| are at most 2**41, so the centred value is a safe long.
    centred = raw * F.lit(2) - F.lit(encoding.lo_units + encoding.hi_units)
    column = f"nsum__{name}"
    terms = {column: centred.cast(EXACT) if exact[column] else centred}
    if metric == "variance":
        column = f"nsq__{name}"
        if exact[column]:
            wide = centred.cast(EXACT)
            terms[column] = (wide * wide).cast(EXACT)
        else:
            terms[column] = centred * centred
    return terms


def row_terms(plan: ReleasePlan) -> dict[str, Column]:
    """Every summed column of the aggregated table and its per-row integer term."""
    terms: dict[str, Column] = {}
    for output in plan.outputs:
        if output.encoding is not None:
            terms.update(_sums_for(plan, output.name, output.encoding, output.metric))
    return terms


def aggregate_partitions(bounded: DataFrame, plan: ReleasePlan) -> DataFrame:
    """One row per partition: units (distinct units), rows, and exact integer sums.

    Expects the output of ``bound_contributions`` (hash-partitioned by unit), so the
    per-(unit, partition) step needs no shuffle and the per-partition step needs one.
    Per-(unit, partition) sums are longs where provably safe; per-partition sums are
    always decimal(38,0).
    """
    keys = [column(name) for name in plan.config.partition_columns]
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
    keys = plan.config.partition_columns
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
