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

UNIT = "__unit"
PARTITION_RANK = "__partition_rank"
PARTITION_HASH = "__partition_hash"
ROW_RANK = "__row_rank"
ROW_HASH = "__row_hash"
FIRST_ROW = "__first_row"


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


def invalid_row_condition(plan: ReleasePlan) -> Column:
    """True for rows the invalid-values policy covers: null unit or key, null/NaN/Inf value."""
    config = plan.config
    condition = F.col(config.privacy_unit.column).isNull()
    for name in config.partition_columns:
        condition = condition | F.col(name).isNull()
    for column in config.measured_columns:
        value = F.col(column).cast(T.DoubleType())
        condition = (
            condition
            | value.isNull()
            | F.isnan(value)
            | (value == F.lit(float("inf")))
            | (value == F.lit(float("-inf")))
        )
    return condition


def encode_value(column: str, encoding: Encoding) -> Column:
    """Clamp to [lower, upper], then round half-to-even to whole grid units (long)."""
    value = F.col(column).cast(T.DoubleType())
    clamped = F.least(F.greatest(value, F.lit(encoding.lower)), F.lit(encoding.upper))
    return F.bround(clamped / F.lit(encoding.grid.step), 0).cast(T.LongType())


def select_encoded(rows: DataFrame, plan: ReleasePlan) -> DataFrame:
    """Keep only what the release needs: unit, partition keys, one encoded column per metric.

    Expects rows with no invalid values (see ``invalid_row_condition``).
    """
    config = plan.config
    columns = encoded_columns(plan)
    # One row per input row: unit, keys, one integer-encoded value per distinct encoding.
    return rows.select(
        F.col(config.privacy_unit.column).alias(UNIT),
        *[F.col(name) for name in config.partition_columns],
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

    One shuffle (by unit), one sort and one window operator serve both samples. Rows are
    sorted by (unit, partition hash, key, row hash, row content); the window is the unit,
    ordered by (partition hash, key), which that sort satisfies, so Spark adds no sort.
    In it, ``dense_rank`` is the partition's rank in the unit (L0), ``rank`` the position
    of the partition's first row, and ``row_number`` the row's position; ties on (partition
    hash, key) are exactly the partition's rows and arrive in (row hash, row content)
    order, so ``row_number - rank`` is the row's rank in its partition (Linf). The test
    suite checks this against two explicitly ordered windows as the oracle.

    The rows come out hash-partitioned by unit and sorted by (unit, partition hash, key),
    and keep the ``PARTITION_HASH`` column so that ``aggregate_partitions`` can sum each
    (unit, partition) without another shuffle.
    """
    key_names = plan.config.partition_columns
    keys = [F.col(name) for name in key_names]
    value_names = list(dict.fromkeys(encoded_columns(plan).values()))
    values = [F.col(name) for name in value_names]
    salted = F.lit(salt.value)
    l0 = plan.bounds.max_partitions_per_unit
    linf = plan.bounds.max_rows_per_unit_per_partition

    # One row per input row, hash-partitioned by unit (the one shuffle of bounding), tagged
    # with its partition's hash and its row hash (computed after the shuffle: fewer bytes
    # moved), and sorted within the unit in sampling order.
    by_unit_rows = (
        encoded.repartition(UNIT)
        .withColumn(PARTITION_HASH, F.xxhash64(salted, F.lit("partition"), F.col(UNIT), *keys))
        .withColumn(ROW_HASH, F.xxhash64(salted, F.lit("row"), F.col(UNIT), *keys, *values))
        .sortWithinPartitions(UNIT, PARTITION_HASH, *key_names, ROW_HASH, *value_names)
    )
    by_unit = Window.partitionBy(UNIT).orderBy(PARTITION_HASH, *key_names)
    # The same rows with their partition's rank in the unit and their rank in the partition.
    ranked = (
        by_unit_rows.withColumn(PARTITION_RANK, F.dense_rank().over(by_unit))
        .withColumn(FIRST_ROW, F.rank().over(by_unit))
        .withColumn(ROW_RANK, F.row_number().over(by_unit))
    )
    # Only the first Linf rows of each of the unit's first L0 partitions.
    return ranked.filter(
        (F.col(PARTITION_RANK) <= l0) & (F.col(ROW_RANK) - F.col(FIRST_ROW) < linf)
    ).drop(PARTITION_RANK, FIRST_ROW, ROW_RANK, ROW_HASH)
