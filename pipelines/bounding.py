"""Contribution bounding on Spark: clean, clamp and encode, then sample per unit.

Invariant after ``bound_contributions``: each privacy unit has rows in at most L0
partitions and at most Linf rows in each; every measured value is an integer number of
grid units inside its encoding's [lo_units, hi_units]. The rows a unit keeps depend only
on that unit's own rows and a per-run secret salt, never on other units' data.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.plan import Encoding, ReleasePlan
from pipelines.source import column

UNIT = "__unit"
PARTITION_RANK = "__partition_rank"
PARTITION_HASH = "__partition_hash"
ROW_RANK = "__row_rank"


def encoded_column(metric_name: str) -> str:
    """Name of a metric's integer-encoded value column (see ``encoded_columns``)."""
    return f"__units__{metric_name}"


def encoded_columns(plan: ReleasePlan) -> dict[str, str]:
    """Each measured metric's encoded column; metrics with equal encodings share one.

    Sum and mean of one column with the same bounds and grid are the same integers, so
    they are encoded, shuffled, hashed and sorted once, under the first metric's name.
    """
    first: dict[Encoding, str] = {}
    return {
        name: encoded_column(first.setdefault(encoding, name))
        for name, encoding in plan.encodings.items()
    }


@dataclass(frozen=True)
class BoundingSalt:
    """A per-run secret from the OS CSPRNG that keys the sampling hashes.

    Never logged, never written: it only makes the sample unpredictable and fixed for the run
    (so a Spark recompute picks the same rows).
    """

    value: str

    @staticmethod
    def fresh() -> BoundingSalt:
        """A new 128-bit salt from the OS CSPRNG."""
        return BoundingSalt(secrets.token_hex(16))

    def __repr__(self) -> str:
        return "BoundingSalt(<secret>)"


def encode_value(name: str, encoding: Encoding) -> Column:
    """Clamp to [lower, upper], then round half-to-even to whole grid units (long)."""
    value = column(name).cast(T.DoubleType())
    clamped = F.least(F.greatest(value, F.lit(encoding.lower)), F.lit(encoding.upper))
    return F.bround(clamped / F.lit(encoding.grid.step), 0).cast(T.LongType())


def select_encoded(rows: DataFrame, plan: ReleasePlan) -> DataFrame:
    """Keep only what the release needs: unit, partition keys, one encoded column per metric.

    Expects rows that meet the input contract (no null unit or key, finite values).
    """
    columns = encoded_columns(plan)
    # One row per input row: unit, keys, one integer-encoded value per distinct encoding.
    return rows.select(
        column(plan.columns.privacy_unit).alias(UNIT),
        *[column(name) for name in plan.columns.partition_columns],
        *[
            encode_value(encoding.column, encoding).alias(columns[name])
            for name, encoding in plan.encodings.items()
            if columns[name] == encoded_column(name)
        ],
    )


def bound_contributions(encoded: DataFrame, plan: ReleasePlan, salt: BoundingSalt) -> DataFrame:
    """Keep at most L0 partitions per unit and at most Linf rows per (unit, partition).

    Both samples are uniform: partitions are ranked by a keyed hash of (salt, unit, key),
    rows by a keyed hash of (salt, unit, key, row content), with the row content as the
    tie-breaker, so the sample is a pure function of the unit's rows and the salt.

    One shuffle (by unit) and one sort serve both windows: rows are sorted by (unit,
    partition hash, key, row hash, row content), which is the order the Linf window needs
    (partitioned by (unit, partition hash, key): the same groups as (unit, key), since the
    partition hash is a function of them) and a prefix of it is the order the L0 window
    needs. Taking the Linf rows first keeps every partition of the unit, so the L0 ranking
    and the kept rows are the same as ranking partitions first.

    The rows come out hash-partitioned by unit and sorted by (unit, partition hash, key),
    and keep the ``PARTITION_HASH`` column so that ``aggregate_partitions`` can sum each
    (unit, partition) in that order without another shuffle.
    """
    keys = [column(name) for name in plan.columns.partition_columns]
    values = [F.col(name) for name in dict.fromkeys(encoded_columns(plan).values())]
    salted = F.lit(salt.value)
    l0 = plan.bounds.max_partitions_per_unit
    linf = plan.bounds.max_rows_per_unit_per_partition

    # One row per input row, hash-partitioned by unit (the one shuffle of bounding), and
    # tagged with its partition's hash (computed after the shuffle: fewer bytes moved).
    by_unit_rows = encoded.repartition(UNIT).withColumn(
        PARTITION_HASH, F.xxhash64(salted, F.lit("partition"), F.col(UNIT), *keys)
    )
    row_hash = F.xxhash64(salted, F.lit("row"), F.col(UNIT), *keys, *values)
    by_unit_partition = Window.partitionBy(UNIT, PARTITION_HASH, *keys).orderBy(row_hash, *values)
    # At most Linf rows per (unit, partition).
    within_linf = (
        by_unit_rows.withColumn(ROW_RANK, F.row_number().over(by_unit_partition))
        .filter(F.col(ROW_RANK) <= linf)
        .drop(ROW_RANK)
    )
    by_unit = Window.partitionBy(UNIT).orderBy(PARTITION_HASH, *keys)
    # ... and only the rows of the unit's first L0 partitions.
    return (
        within_linf.withColumn(PARTITION_RANK, F.dense_rank().over(by_unit))
        .filter(F.col(PARTITION_RANK) <= l0)
        .drop(PARTITION_RANK)
    )
