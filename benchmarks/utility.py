"""Utility of contribution bounding: aggregate first against row sampling (no noise).

``python -m benchmarks.utility`` (also run by ``make bench``). On the benchmark's synthetic
table and its job (L0 = 3, Linf = 2; count, sum and mean of ``value`` on [0, 100]), the
exact bounded aggregates of every partition, before noise, are compared with the exact
unbounded truth (a plain groupBy of the raw rows): root mean square error over all
partitions, for count, sum and mean. Both bounding methods have the same sensitivities,
so they get the same noise; the difference in utility is this bias.

Methods, with one salt:

- ``aggregate first`` (production, ``pipelines.bounding``): cells, contributions bounded
  per cell, at most L0 cells per unit;
- ``row sampling`` (the previous definition, kept here as the reference): at most L0
  partitions per unit by the same keyed hash, then at most Linf rows per (unit,
  partition), ranked by a keyed hash of the row.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from benchmarks.pipeline import bench_config, bench_session
from benchmarks.report import BENCHMARKS_FILE, append_report, markdown_table
from benchmarks.synthetic import LOWER, UPPER, synthetic_table
from pipelines.aggregation import aggregate_partitions
from pipelines.bounding import UNIT, BoundingSalt, bound_contributions, cell_hash, select_encoded
from pipelines.job import clean_rows
from pipelines.plan import ROWS, ReleasePlan, build_plan
from pipelines.source import read_input

KEY = "key"
METRICS = ("count", "sum", "mean")


def _released_scale(aggregated: DataFrame, plan: ReleasePlan) -> DataFrame:
    """count, sum and mean per partition in value units, from exact bounded aggregates."""
    sums, means = plan.encodings["sum_value"], plan.encodings["mean_value"]
    mid = (means.lo_units + means.hi_units) / 2
    count = F.col(ROWS).cast("double")
    denominator = 2 * F.greatest(count, F.lit(1.0))
    centred = F.col("nsum__mean_value").cast("double")
    return aggregated.select(
        KEY,
        count.alias("count"),
        (F.col("sum__sum_value").cast("double") * sums.grid.step).alias("sum"),
        (F.lit(means.grid.step) * (F.lit(mid) + centred / denominator)).alias("mean"),
    )


def row_sampling(encoded: DataFrame, plan: ReleasePlan, salt: BoundingSalt) -> DataFrame:
    """The previous bounding: sampled rows, summed per partition (count, sum, mean terms)."""
    column = "__units__sum_value"
    means = plan.encodings["mean_value"]
    by_unit = Window.partitionBy(UNIT).orderBy("__hash", KEY)
    by_cell = Window.partitionBy(UNIT, KEY).orderBy("__row_hash", column)
    rows = (
        encoded.withColumn("__hash", cell_hash(plan, salt))
        .withColumn("__rank", F.dense_rank().over(by_unit))
        .filter(F.col("__rank") <= plan.bounds.max_partitions_per_unit)
        .withColumn(
            "__row_hash", F.xxhash64(F.lit(salt.value), F.lit("row"), F.col(UNIT), KEY, column)
        )
        .withColumn("__row", F.row_number().over(by_cell))
        .filter(F.col("__row") <= plan.bounds.max_rows_per_unit_per_partition)
    )
    centred = F.col(column) * 2 - F.lit(means.lo_units + means.hi_units)
    # One row per partition.
    return rows.groupBy(KEY).agg(
        F.count(F.lit(1)).alias(ROWS),
        F.sum(column).alias("sum__sum_value"),
        F.sum(centred).alias("nsum__mean_value"),
    )


def _truth(raw: DataFrame, value: Column) -> DataFrame:
    """count, sum and mean per partition of the raw rows (no bounding)."""
    return raw.groupBy(KEY).agg(
        F.count(F.lit(1)).cast("double").alias("count"),
        F.sum(value).alias("sum"),
        F.avg(value).alias("mean"),
    )


def _rmse(estimate: DataFrame, truth: DataFrame) -> dict[str, float]:
    """RMSE over the truth's partitions (a partition the estimate lacks counts as 0)."""
    renamed = estimate.select(KEY, *[F.col(m).alias(f"e_{m}") for m in METRICS])
    joined = truth.join(renamed, on=KEY, how="left").fillna(0.0)
    errors = joined.agg(
        *[F.avg((F.col(f"e_{m}") - F.col(m)) ** 2).alias(m) for m in METRICS]
    ).first()
    assert errors is not None
    return {m: math.sqrt(float(errors[m])) for m in METRICS}


def run(rows: int, scratch: Path) -> str:
    """The utility section for one table size."""
    spark = bench_session()
    table = synthetic_table(spark, rows, scratch / "data")
    config = bench_config(table, scratch / "releases")
    plan = build_plan(config)
    salt = BoundingSalt.fresh()
    encoded = select_encoded(clean_rows(read_input(spark, config), plan), plan)
    raw = spark.read.parquet(str(table.path))
    clamped = F.least(F.greatest(F.col("value"), F.lit(LOWER)), F.lit(UPPER))
    truths = {
        "raw values": _truth(raw, F.col("value")),
        "values clamped to the bounds": _truth(raw, clamped),
    }
    first = _released_scale(
        aggregate_partitions(bound_contributions(encoded, plan, salt), plan), plan
    )
    sampled = _released_scale(row_sampling(encoded, plan, salt), plan)
    lines = []
    for label, truth in truths.items():
        for name, estimate in (("aggregate first", first), ("row sampling", sampled)):
            errors = _rmse(estimate, truth)
            lines.append([label, name, *[f"{errors[m]:.4g}" for m in METRICS]])
    spark.stop()
    header = ["truth", "bounding", "count RMSE", "sum RMSE", "mean RMSE"]
    return (
        f"### Utility of bounding, {rows:,} rows (no noise)\n\n"
        "RMSE over all partitions of the exact bounded aggregates against the unbounded "
        "truth (L0 = 3, Linf = 2, values on [0, 100]; the noise is the same for both), "
        "with the raw values (outliers included) and with values clamped to the bounds "
        "(the error of contribution bounding alone).\n\n" + markdown_table(header, lines) + "\n"
    )


def main() -> None:
    sizes = [int(r) for r in os.environ.get("BENCH_ROWS", "1000000").split(",")]
    scratch = Path(os.environ.get("BENCH_DIR", "build/bench"))
    section = "".join(run(size, scratch) for size in sizes[:1])
    print(section)
    append_report(section, Path(os.environ.get("BENCH_LOG", str(BENCHMARKS_FILE))))


if __name__ == "__main__":
    main()
