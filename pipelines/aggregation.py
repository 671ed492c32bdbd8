"""Exact integer aggregation per partition, on Spark: the sum of the kept cells.

Invariant: every aggregate is an exact integer (long or decimal(38,0)) whose value does
not depend on how Spark partitions or orders the rows. Each kept (unit, partition) cell
adds its bounded contribution (``pipelines.bounding``): a long of at most Linf times the
part's per-row bound; the per-partition sums over any number of cells are decimal(38,0),
which ``check_exact_arithmetic`` proves cannot overflow for any input (docs/privacy.md §3).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.cell_rules import EXACT, contributions
from pipelines.plan import ROWS, UNITS, ReleasePlan
from pipelines.source import column


def summed_columns(plan: ReleasePlan) -> list[str]:
    """The aggregated table's summed columns besides UNITS: ROWS and each part's sums."""
    return list(contributions(plan))


def partition_aggregates(plan: ReleasePlan) -> list[Column]:
    """The per-partition aggregates of kept cells: units (one cell each), rows, exact sums."""
    sums = [name for name in summed_columns(plan) if name != ROWS]
    return [
        F.count(F.lit(1)).alias(UNITS),
        F.sum(ROWS).alias(ROWS),
        *[F.sum(F.col(name).cast(EXACT)).cast(EXACT).alias(name) for name in sums],
    ]


def aggregate_partitions(cells: DataFrame, plan: ReleasePlan) -> DataFrame:
    """One row per partition: units (kept cells), rows and exact integer sums.

    Expects the output of ``bound_contributions`` (one row per kept cell); one shuffle,
    with map-side partial sums.
    """
    keys = [column(name) for name in plan.columns.partition_columns]
    # One row per partition: distinct units (one cell each), rows, sums (exact integers).
    return cells.groupBy(*keys).agg(*partition_aggregates(plan))


def add_public_partitions(
    aggregated: DataFrame, public_keys: DataFrame, plan: ReleasePlan
) -> DataFrame:
    """One row per public key: the key's aggregates, or zeros where the data has none.

    Expects ``aggregated`` built from rows already restricted to the public keys.
    """
    keys = list(plan.columns.partition_columns)
    zero_filled = {UNITS: 0} | {name: 0 for name in summed_columns(plan)}
    # One row per public key (left join keeps keys absent from the data).
    joined = public_keys.join(aggregated, on=keys, how="left")
    return joined.select(
        *[column(name) for name in keys],
        *[
            F.coalesce(F.col(name), F.lit(value).cast(joined.schema[name].dataType)).alias(name)
            for name, value in zero_filled.items()
        ],
    )
