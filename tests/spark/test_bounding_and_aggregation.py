"""Contribution bounding invariants and exact, partitioning-independent aggregation."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pytest
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pipelines.aggregation import aggregate_partitions
from pipelines.bounding import (
    PARTITION_HASH,
    UNIT,
    BoundingSalt,
    bound_contributions,
    encoded_column,
    encoded_columns,
    select_encoded,
)
from pipelines.job import clean_rows
from pipelines.plan import ReleasePlan, build_plan
from tests.spark.conftest import job_config, write_rows

SCHEMA = pa.schema([("user", pa.string()), ("key", pa.string()), ("value", pa.float64())])


@pytest.fixture(scope="module")
def heavy_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 rows: heavy units across many keys, awkward floats, duplicates."""
    rng = random.Random(7)
    rows = []
    for unit in range(60):
        keys = rng.sample(range(40), k=1 + unit % 12)
        for _ in range(10 + 3 * (unit % 7)):
            rows.append(
                {
                    "user": f"user{unit}",
                    "key": f"k{rng.choice(keys)}",
                    "value": rng.choice([0.1, 0.2, 0.3, 1e-9, 7.77, 9.99, 123.0, -4.0]),
                }
            )
    rng.shuffle(rows)
    return write_rows(tmp_path_factory.mktemp("heavy") / "rows.parquet", rows[:3000], SCHEMA)


def test_each_unit_touches_at_most_l0_partitions_and_linf_rows(
    spark: SparkSession, tmp_path: Path, heavy_rows: Path
) -> None:
    plan = build_plan(job_config(tmp_path, heavy_rows))
    frame = clean_rows(spark.read.parquet(str(heavy_rows)), plan)
    bounded = bound_contributions(select_encoded(frame, plan), plan, BoundingSalt.fresh())
    per_unit = bounded.groupBy(UNIT).agg(F.count_distinct("key").alias("keys")).collect()
    assert max(r["keys"] for r in per_unit) <= 3
    # Units with at least 3 keys keep exactly 3 (the sample never drops below L0).
    assert sum(r["keys"] == 3 for r in per_unit) >= 40
    per_cell = bounded.groupBy(UNIT, "key").count().collect()
    assert max(r["count"] for r in per_cell) <= 2
    low, high = plan.encodings["sum_value"].lo_units, plan.encodings["sum_value"].hi_units
    extremes = bounded.agg(
        F.min(encoded_column("sum_value")), F.max(encoded_column("sum_value"))
    ).first()
    assert extremes is not None and low <= extremes[0] and extremes[1] <= high


def _sorted_aggregates(frame: DataFrame) -> list[tuple[object, ...]]:
    return sorted(tuple(row) for row in frame.collect())


def test_aggregates_are_bit_identical_under_repartitioning_and_shuffles(
    spark: SparkSession, tmp_path: Path, heavy_rows: Path
) -> None:
    plan = build_plan(job_config(tmp_path, heavy_rows))
    salt = BoundingSalt.fresh()
    source = clean_rows(spark.read.parquet(str(heavy_rows)), plan)

    def aggregates(frame: DataFrame) -> list[tuple[object, ...]]:
        return _sorted_aggregates(
            aggregate_partitions(bound_contributions(select_encoded(frame, plan), plan, salt), plan)
        )

    reference = aggregates(source.repartition(1))
    for partitions in (2, 7, 64):
        assert aggregates(source.repartition(partitions)) == reference
    assert aggregates(source.orderBy(F.rand(seed=11)).repartition(5)) == reference
    assert aggregates(source.orderBy(F.desc("value")).coalesce(3)) == reference

    # The same sums computed exactly with Fractions from the bounded rows.
    bounded = bound_contributions(select_encoded(source, plan), plan, salt).collect()
    encoding = plan.encodings["sum_value"]
    exact: dict[str, Fraction] = {}
    for row in bounded:
        exact[row["key"]] = exact.get(row["key"], Fraction(0)) + Fraction(
            row[encoded_column("sum_value")]
        ) * Fraction(encoding.grid.step)
    by_key = {row[0]: row for row in reference}
    columns = aggregate_partitions(
        bound_contributions(select_encoded(source, plan), plan, salt), plan
    ).columns
    sum_index = columns.index("sum__sum_value")
    for key, total in exact.items():
        assert Fraction(int(by_key[key][sum_index])) * Fraction(encoding.grid.step) == total


def test_the_sample_depends_only_on_the_units_own_rows(
    spark: SparkSession, tmp_path: Path, heavy_rows: Path
) -> None:
    plan = build_plan(job_config(tmp_path, heavy_rows))
    salt = BoundingSalt.fresh()
    frame = clean_rows(spark.read.parquet(str(heavy_rows)), plan)
    everyone = bound_contributions(select_encoded(frame, plan), plan, salt)
    without_others = bound_contributions(
        select_encoded(frame.filter(F.col("user") == "user5"), plan), plan, salt
    )
    kept_alone = _sorted_aggregates(without_others)
    kept_with_others = _sorted_aggregates(everyone.filter(F.col(UNIT) == "user5"))
    assert kept_alone == kept_with_others


def test_physical_plan_shuffles_twice(
    spark: SparkSession, tmp_path: Path, heavy_rows: Path
) -> None:
    """Bounding and the per-(unit, partition) step share one shuffle by unit; one more by key."""
    plan = build_plan(job_config(tmp_path, heavy_rows))
    frame = clean_rows(spark.read.parquet(str(heavy_rows)), plan)
    aggregated = aggregate_partitions(
        bound_contributions(select_encoded(frame, plan), plan, BoundingSalt.fresh()), plan
    )
    physical = aggregated._jdf.queryExecution().executedPlan().toString()
    exchanges = [line for line in physical.splitlines() if "Exchange hashpartitioning" in line]
    assert len(exchanges) == 2, physical
    # One sort, in sampling order (the row hash after the keys), and one window operator.
    sorts = [line for line in physical.splitlines() if "Sort [" in line]
    assert len(sorts) == 1 and "__row_hash" in sorts[0], physical
    assert sum(" Window [" in line for line in physical.splitlines()) == 1, physical
    assert f"hashpartitioning({UNIT}" in exchanges[-1] or f"hashpartitioning({UNIT}" in exchanges[0]


def _two_window_oracle(encoded: DataFrame, plan: ReleasePlan, salt: BoundingSalt) -> DataFrame:
    """The sample by its definition: rank rows in their partition, then partitions in the unit.

    Two explicitly ordered windows and no reliance on the order of ties: slower than
    ``bound_contributions`` (two window operators) but obviously right.
    """
    keys = plan.config.partition_columns
    values = sorted(set(encoded_columns(plan).values()))
    salted = F.lit(salt.value)
    tagged = encoded.withColumn(
        PARTITION_HASH, F.xxhash64(salted, F.lit("partition"), F.col(UNIT), *map(F.col, keys))
    )
    row_hash = F.xxhash64(salted, F.lit("row"), F.col(UNIT), *map(F.col, keys), *map(F.col, values))
    in_partition = Window.partitionBy(UNIT, *keys).orderBy(row_hash, *values)
    in_unit = Window.partitionBy(UNIT).orderBy(PARTITION_HASH, *keys)
    linf = plan.bounds.max_rows_per_unit_per_partition
    l0 = plan.bounds.max_partitions_per_unit
    within_linf = tagged.withColumn("r", F.row_number().over(in_partition)).filter(
        F.col("r") <= linf
    )
    return (
        within_linf.withColumn("p", F.dense_rank().over(in_unit))
        .filter(F.col("p") <= l0)
        .drop("r", "p")
    )


def test_one_window_sample_equals_the_two_window_oracle(
    spark: SparkSession, tmp_path: Path, heavy_rows: Path
) -> None:
    """The rank arithmetic of the single window keeps exactly the rows the definition keeps."""
    for l0, linf in ((3, 2), (1, 1), (5, 4), (40, 1)):
        config = job_config(
            tmp_path,
            heavy_rows,
            contribution_bounds={
                "max_partitions_per_unit": l0,
                "max_rows_per_unit_per_partition": linf,
            },
        )
        plan = build_plan(config)
        salt = BoundingSalt.fresh()
        encoded = select_encoded(clean_rows(spark.read.parquet(str(heavy_rows)), plan), plan)
        for partitions in (1, 7):
            kept = _sorted_aggregates(
                bound_contributions(encoded.repartition(partitions), plan, salt)
            )
            oracle = _sorted_aggregates(_two_window_oracle(encoded, plan, salt))
            assert kept == oracle, (l0, linf, partitions)
            assert len(kept) < encoded.count()


def test_equal_encodings_share_one_column_and_different_ones_do_not(
    spark: SparkSession, tmp_path: Path, heavy_rows: Path
) -> None:
    plan = build_plan(job_config(tmp_path, heavy_rows))
    same = plan.encodings["sum_value"] == plan.encodings["mean_value"]
    columns = select_encoded(spark.read.parquet(str(heavy_rows)), plan).columns
    encoded = [c for c in columns if c.startswith("__units__")]
    assert len(encoded) == (1 if same else 2)
    assert encoded_columns(plan)["sum_value"] == encoded_column("sum_value")

    metrics = [
        {"metric": "sum", "column": "value", "lower": 0.0, "upper": 10.0},
        {"metric": "mean", "column": "value", "lower": -5.0, "upper": 5.0},
    ]
    apart = build_plan(job_config(tmp_path, heavy_rows, metrics=metrics))
    assert encoded_columns(apart) == {
        "sum_value": encoded_column("sum_value"),
        "mean_value": encoded_column("mean_value"),
    }
    columns = select_encoded(spark.read.parquet(str(heavy_rows)), apart).columns
    assert [c for c in columns if c.startswith("__units__")] == list(
        encoded_columns(apart).values()
    )
