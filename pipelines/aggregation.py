"""Exact integer aggregation per partition, on Spark.

Invariant: every aggregate is an exact integer (long or decimal(38,0)) whose value does
not depend on how Spark partitions or orders the rows. No sum can overflow:
``check_exact_arithmetic`` proves, from the bounds alone, that the largest per-row term
times the most rows Spark can hold (2**63) fits decimal(38,0).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.bounding import UNIT, encoded_column
from pipelines.plan import ROWS, UNITS, Encoding, ReleasePlan

EXACT = T.DecimalType(38, 0)
# Largest |per-partition sum| decimal(38,0) holds, and the most rows Spark can count.
_DECIMAL_LIMIT = 10**38 - 1
_MAX_ROWS = 2**63 - 1


class ArithmeticBoundError(ValueError):
    """The configured bounds would allow an integer aggregate to overflow."""


def check_exact_arithmetic(plan: ReleasePlan) -> None:
    """Refuse plans whose integer sums could overflow decimal(38,0) for ANY input.

    Invariant: after this check, no aggregate of any dataset Spark can hold overflows.
    """
    for name, encoding in plan.encodings.items():
        largest_row = max(encoding.max_abs_units, encoding.width**2)
        if largest_row * _MAX_ROWS > _DECIMAL_LIMIT:
            raise ArithmeticBoundError(
                f"metrics: '{name}' bounds [{encoding.lower}, {encoding.upper}] on grid "
                f"{encoding.grid.step} give integers too large for exact sums; "
                "narrow the bounds or lower the epsilon share"
            )


def _sums_for(name: str, encoding: Encoding, metric: str) -> dict[str, Column]:
    """Per-row integer terms of one metric, keyed by the aggregated column they sum into."""
    units = F.col(encoded_column(name)).cast(EXACT)
    if metric == "sum":
        return {f"sum__{name}": units}
    centred = units * F.lit(2) - F.lit(encoding.lo_units + encoding.hi_units)
    terms = {f"nsum__{name}": centred.cast(EXACT)}
    if metric == "variance":
        terms[f"nsq__{name}"] = (centred * centred).cast(EXACT)
    return terms


def row_terms(plan: ReleasePlan) -> dict[str, Column]:
    """Every summed column of the aggregated table and its per-row integer term."""
    terms: dict[str, Column] = {}
    for output in plan.outputs:
        if output.encoding is not None:
            terms.update(_sums_for(output.name, output.encoding, output.metric))
    return terms


def aggregate_partitions(bounded: DataFrame, plan: ReleasePlan) -> DataFrame:
    """One row per partition: units (distinct units), rows, and exact integer sums.

    Expects the output of ``bound_contributions`` (hash-partitioned by unit), so the
    per-(unit, partition) step needs no shuffle and the per-partition step needs one.
    """
    keys = plan.config.partition_columns
    terms = row_terms(plan)
    # One row per (unit, partition): its row count and its integer sums.
    per_unit = bounded.groupBy(UNIT, *keys).agg(
        F.count(F.lit(1)).alias(ROWS),
        *[F.sum(term).alias(name) for name, term in terms.items()],
    )
    # One row per partition: distinct units, rows, sums (all exact integers).
    return per_unit.groupBy(*keys).agg(
        F.count(F.lit(1)).alias(UNITS),
        F.sum(ROWS).alias(ROWS),
        *[F.sum(name).cast(EXACT).alias(name) for name in terms],
    )


def add_public_partitions(aggregated: DataFrame, public_keys: DataFrame, plan: ReleasePlan) -> DataFrame:
    """One row per public key: the key's aggregates, or zeros where the data has none.

    Expects ``aggregated`` built from rows already restricted to the public keys.
    """
    keys = plan.config.partition_columns
    zero_filled = {UNITS: 0, ROWS: 0} | {name: 0 for name in row_terms(plan)}
    # One row per public key (left join keeps keys absent from the data).
    joined = public_keys.join(aggregated, on=keys, how="left")
    return joined.select(
        *keys,
        *[
            F.coalesce(F.col(name), F.lit(value).cast(joined.schema[name].dataType)).alias(name)
            for name, value in zero_filled.items()
        ],
    )
