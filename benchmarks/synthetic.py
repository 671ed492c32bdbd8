"""Deterministic synthetic private tables for the pipeline benchmark.

Rows are (``user_id``, ``key``, ``value``), generated on Spark from ``spark.range(N)`` and
column expressions only: every pseudo-random choice is an ``xxhash64`` of the row id (or
of the unit and a slot), so the same N gives the same table on any machine, any Spark
partitioning and any number of cores. No Python code runs per row.

Shape of the data:

- about 10 rows per unit: ``user_id`` is a hash of the row id modulo N / 10 (Poisson(10));
- each unit has up to ``KEY_SLOTS`` favourite keys and each row picks one, so a unit
  touches about 5 keys with about 2 rows in each: both L0 = 3 and Linf = 2 bind;
- keys are Zipf(s = 1) over ``KEYS`` keys, drawn by the inverse CDF of the continuous
  Zipf law on a hash-derived uniform: ``key = floor((KEYS + 1) ** u)``. The head keys
  hold a large share of the rows and most keys have a handful of units;
- values are uniform on [0, 100) (the benchmark's bounds), except ``OUTLIER_PERCENT`` of
  the rows: half far above the upper bound, half below the lower bound.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

KEYS = 100_000
ROWS_PER_UNIT = 10
KEY_SLOTS = 5
LOWER, UPPER = 0.0, 100.0
OUTLIER_PERCENT = 4
ROWS_PER_FILE = 1_000_000
# Bump when the generator changes, so cached tables are rebuilt.
GENERATOR_VERSION = 2
# Spark's own commit marker: a table folder holds nothing the release job would refuse.
_COMPLETE = "_SUCCESS"


@dataclass(frozen=True)
class SyntheticTable:
    """A generated table on disk and the parameters it was generated with."""

    path: Path
    rows: int
    units: int
    keys: int


def _uniform(*parts: Column) -> Column:
    """A uniform double in (0, 1) from a 53-bit slice of xxhash64 of ``parts``."""
    bits = F.shiftrightunsigned(F.xxhash64(*parts), 11)
    return (bits.cast("double") + F.lit(0.5)) / F.lit(float(2**53))


def _bucket(modulus: int, *parts: Column) -> Column:
    """An integer in [0, modulus) from xxhash64 of ``parts``."""
    return F.pmod(F.xxhash64(*parts), F.lit(modulus))


def synthetic_rows(spark: SparkSession, rows: int) -> DataFrame:
    """The lazy synthetic table of ``rows`` rows (deterministic for a given ``rows``)."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    units = max(1, rows // ROWS_PER_UNIT)
    files = max(1, math.ceil(rows / ROWS_PER_FILE))
    row_id = F.col("id")
    unit = _bucket(units, F.lit("unit"), row_id)
    slot = _bucket(KEY_SLOTS, F.lit("slot"), row_id)
    # Zipf(1) inverse CDF on a uniform keyed by (unit, slot): the unit's favourite keys.
    zipf = F.floor(F.exp(_uniform(F.lit("key"), unit, slot) * F.lit(math.log(KEYS + 1))))
    key = F.least(zipf.cast("long"), F.lit(KEYS))
    base = _uniform(F.lit("value"), row_id) * F.lit(UPPER - LOWER) + F.lit(LOWER)
    outlier = _bucket(100, F.lit("outlier"), row_id)
    magnitude = _uniform(F.lit("magnitude"), row_id)
    value = (
        F.when(outlier < OUTLIER_PERCENT // 2, F.lit(UPPER) + magnitude * F.lit(1e6))
        .when(outlier < OUTLIER_PERCENT, F.lit(LOWER) - magnitude * F.lit(1e4))
        .otherwise(base)
    )
    # One row per generated event: (unit, key, value).
    return spark.range(0, rows, numPartitions=files).select(
        unit.alias("user_id"), key.alias("key"), value.alias("value")
    )


def synthetic_table(spark: SparkSession, rows: int, root: Path) -> SyntheticTable:
    """The Parquet table of ``rows`` rows under ``root``, generated once and then reused."""
    path = root / f"rows-{rows}-v{GENERATOR_VERSION}"
    table = SyntheticTable(path, rows, max(1, rows // ROWS_PER_UNIT), KEYS)
    if (path / _COMPLETE).is_file():
        return table
    if path.exists():
        shutil.rmtree(path)
    synthetic_rows(spark, rows).write.parquet(str(path))
    return table
