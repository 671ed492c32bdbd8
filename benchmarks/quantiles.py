"""Quantiles on the benchmark job: their cost and their accuracy (``make bench``, also alone:
``python -m benchmarks.quantiles``).

Cost: the benchmark's job (count, privacy_id_count, sum, mean by ``key``; L0 = 3, Linf = 2,
private selection, epsilon 1) against the same job with one more metric, quantiles of
``value`` at ranks 0.5, 0.9 and 0.99, in one Spark session after one untimed warm-up run,
alternating which goes first. The goal is a ratio of at most 1.30.

Accuracy (from the last run with quantiles): for every released key, the rank error of
the released median against all of the key's rows, |F_n(p50) − 0.5| with F_n the share of
the key's clamped values at or below the released value, and whether the noise-only
interval holds the exact median of those values. Reported by partition size, since the
error shrinks as a partition holds more units. The exact medians come from Spark's exact
``percentile``; the interval describes noise only, not the bounding's Linf sample.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from benchmarks.pipeline import BenchOptions, bench_config, bench_session, say
from benchmarks.report import append_report, markdown_table
from benchmarks.synthetic import LOWER, UPPER, SyntheticTable, synthetic_table
from pipelines.config import JobConfig
from pipelines.job import run_release

RANKS = (0.5, 0.9, 0.99)
GOAL = 1.30
NAME = "value_q"
QUANTILES = {
    "metric": "quantiles",
    "column": "value",
    "lower": LOWER,
    "upper": UPPER,
    "ranks": list(RANKS),
    "name": NAME,
}
# Partition size buckets (rows of the key in the input) for the accuracy table.
BUCKETS = ((1, 100), (100, 1_000), (1_000, 10_000), (10_000, 10**12))


def _timed(spark: SparkSession, config: JobConfig, root: Path) -> tuple[float, Path]:
    """Wall seconds of one real release under a fresh root, and the published version."""
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    result = run_release(spark, config)
    return time.perf_counter() - start, Path(result.path)


def exact_medians(spark: SparkSession, table: SyntheticTable) -> DataFrame:
    """One row per key of the input: its row count and the exact median of clamped values."""
    rows = spark.read.parquet(str(table.path))
    clamped = F.least(F.greatest(F.col("value"), F.lit(LOWER)), F.lit(UPPER))
    # One row per key: n and the exact median (Spark's exact percentile, not the sketch).
    return rows.groupBy("key").agg(
        F.count(F.lit(1)).alias("n"), F.percentile(clamped, 0.5).alias("median")
    )


def accuracy_rows(spark: SparkSession, table: SyntheticTable, version: Path) -> list[Any]:
    """Per released key: n, the released median's rank error, and interval coverage."""
    released = spark.read.parquet(str(version / "data")).select(
        "key",
        F.col(f"{NAME}_p50").alias("p50"),
        F.col(f"{NAME}_p50_ci_low").alias("low"),
        F.col(f"{NAME}_p50_ci_high").alias("high"),
    )
    rows = spark.read.parquet(str(table.path))
    clamped = F.least(F.greatest(F.col("value"), F.lit(LOWER)), F.lit(UPPER))
    # One row per released key: the share of its rows at or below the released median.
    below = (
        rows.join(released.select("key", "p50"), on="key")
        .groupBy("key")
        .agg(F.avg((clamped <= F.col("p50")).cast("double")).alias("cdf"))
    )
    # One row per released key: n, rank error, and whether the interval holds the median.
    joined = released.join(exact_medians(spark, table), on="key").join(below, on="key")
    return joined.select(
        "n",
        F.abs(F.col("cdf") - F.lit(0.5)).alias("rank_error"),
        ((F.col("low") <= F.col("median")) & (F.col("median") <= F.col("high"))).alias("covered"),
    ).collect()


def accuracy_table(rows: list[Any]) -> str:
    """Median rank error and coverage per partition-size bucket."""
    lines = []
    for low, high in BUCKETS:
        inside = [r for r in rows if low <= r["n"] < high]
        if not inside:
            continue
        errors = [float(r["rank_error"]) for r in inside]
        covered = sum(bool(r["covered"]) for r in inside) / len(inside)
        label = f"{low:,}+" if high >= 10**12 else f"{low:,}-{high - 1:,}"
        lines.append(
            [label, f"{len(inside):,}", f"{statistics.median(errors):.3f}", f"{covered:.2f}"]
        )
    return markdown_table(
        ["rows per key", "released keys", "median rank error of p50", "interval coverage"], lines
    )


def run(rows: int, repeats: int, scratch: Path, spark: SparkSession | None = None) -> str:
    """The section of the report: both jobs' median seconds, their ratio, the accuracy."""
    own = spark is None
    session = spark or bench_session()
    try:
        table = synthetic_table(session, rows, scratch / "data")
        root = scratch / "quantiles-out"
        plain = bench_config(table, root)
        trees = bench_config(table, root, [QUANTILES])
        _timed(session, trees, root)  # warm-up, not counted
        times: dict[bool, list[float]] = {False: [], True: []}
        for repeat in range(repeats):
            # Alternate which goes first, so neither always meets a colder cache.
            for quantiles in (False, True)[:: 1 if repeat % 2 == 0 else -1]:
                seconds, published = _timed(session, trees if quantiles else plain, root)
                times[quantiles].append(seconds)
                if quantiles:
                    accuracy = accuracy_rows(session, table, published)
        shutil.rmtree(root, ignore_errors=True)
    finally:
        if own:
            session.stop()
    return _section(rows, repeats, times, accuracy)


def _section(rows: int, repeats: int, times: dict[bool, list[float]], accuracy: list[Any]) -> str:
    without, with_q = statistics.median(times[False]), statistics.median(times[True])
    ratio = with_q / without
    verdict = "meets" if ratio <= GOAL else "misses"
    body = markdown_table(
        ["rows", "job (s)", "job + quantiles at 0.5/0.9/0.99 (s)", "ratio", f"goal <= {GOAL}"],
        [[f"{rows:,}", f"{without:.1f}", f"{with_q:.1f}", f"{ratio:.2f}", verdict]],
    )
    return (
        "### Quantiles: cost and accuracy\n\n"
        f"Median of {repeats} alternating repeats of the benchmark job with and without one "
        "quantiles metric (3 ranks) of `value`, epsilon 1 in both (the quantiles take a "
        "share of it).\n\n" + body + "\n\n"
        "Accuracy of the released median (the last run with quantiles), against all of a "
        "key's clamped rows; coverage of the noise-only 95% interval of the exact median "
        "(it does not cover the Linf sample's bias):\n\n" + accuracy_table(accuracy) + "\n"
    )


def main() -> None:
    """Run this section alone and append it to the log."""
    options = BenchOptions.from_environment()
    say(f"quantiles: cost and accuracy, {options.rows[-1]:,} rows")
    text = run(options.rows[-1], options.repeats, options.work_dir)
    path = append_report(text, options.log)
    print(text)
    say(f"appended to {path}")


if __name__ == "__main__":
    main()
