"""Released keys and errors: the previous defaults against today's, in one run
(``make bench``; alone: ``python -m benchmarks.selection``).

The benchmark's job (epsilon 1, delta 1e-6, L0 3, Linf 2; count, privacy_id_count, sum and
mean of ``value`` on [0, 100]; private selection) runs with the previous defaults
(truncated geometric at selection's share with its own noisy count, equal weights) and with
today's (``auto``: here Gaussian thresholding of the released privacy_id_count, one share for
both; the default weights), and today's with ``budget.share_parts`` (the sum derived from
the mean's parts), in turn, ``BENCH_REPEATS`` times each on the same table. Reported: the
mean number of released keys and its ratio, and the RMSE of count, sum and mean against the
truth of the clamped values, over the keys all runs of a round released.
"""

from __future__ import annotations

import math
import shutil
import statistics
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from benchmarks.pipeline import BenchOptions, bench_config, bench_session, say
from benchmarks.report import append_report, markdown_table
from benchmarks.synthetic import LOWER, UPPER, SyntheticTable, synthetic_table
from pipelines.config import JobConfig, config_from_mapping
from pipelines.job import run_release

METRICS = ("count", "sum_value", "mean_value")


def _previous(config: JobConfig) -> JobConfig:
    """The previous defaults: truncated geometric selection, equal weights, own sum noise."""
    raw = config.model_dump(mode="json", by_alias=True)
    raw["partition_selection"] = {"mechanism": "truncated_geometric"}
    names = ["selection", *(m.output_name for m in config.metrics)]
    raw["budget"] |= {"weights": {n: 1 / len(names) for n in names}, "share_parts": False}
    return config_from_mapping(raw, "benchmark selection config")


def _today(config: JobConfig, shared: bool = False) -> JobConfig:
    """Today's defaults (auto selection, default weights), with or without shared parts."""
    raw = config.model_dump(mode="json", by_alias=True)
    raw["partition_selection"] = {"mechanism": "auto"}
    raw["budget"] |= {"weights": None, "share_parts": shared}
    return config_from_mapping(raw, "benchmark selection config")


def _truth(spark: SparkSession, table: SyntheticTable) -> dict[int, dict[str, float]]:
    """count, sum and mean per key of the values clamped to the bounds (no noise)."""
    clamped = F.least(F.greatest(F.col("value"), F.lit(LOWER)), F.lit(UPPER))
    rows = (
        spark.read.parquet(str(table.path))
        .groupBy("key")
        .agg(
            F.count(F.lit(1)).cast("double").alias("count"),
            F.sum(clamped).alias("sum_value"),
            F.avg(clamped).alias("mean_value"),
        )
        .collect()
    )
    return {int(r["key"]): {m: float(r[m]) for m in METRICS} for r in rows}


def _released(spark: SparkSession, config: JobConfig, root: Path) -> dict[int, dict[str, Any]]:
    shutil.rmtree(root, ignore_errors=True)
    result = run_release(spark, config)
    table = pq.read_table(Path(result.path) / "data").to_pylist()
    shutil.rmtree(root, ignore_errors=True)
    return {int(r["key"]): r for r in table}


RUNS = ("previous", "today", "shared")


def _squared_errors(
    released: dict[str, dict[int, dict[str, Any]]], truth: dict[int, dict[str, float]]
) -> dict[str, dict[str, list[float]]]:
    """Squared errors per run and metric over the keys every run of the round released."""
    both = sorted(set.intersection(*(set(r) for r in released.values())))
    return {
        run: {m: [(rows[k][m] - truth[k][m]) ** 2 for k in both] for m in METRICS}
        for run, rows in released.items()
    }


def measure(spark: SparkSession, rows: int, repeats: int, scratch: Path) -> list[object]:
    """One row of the report for one table size."""
    table = synthetic_table(spark, rows, scratch / "data")
    root = scratch / "selection-out"
    base = bench_config(table, root)
    configs = {"previous": _previous(base), "today": _today(base), "shared": _today(base, True)}
    truth = _truth(spark, table)
    keys: dict[str, list[int]] = {run: [] for run in RUNS}
    errors: dict[str, dict[str, list[float]]] = {run: {m: [] for m in METRICS} for run in RUNS}
    for _ in range(repeats):
        released = {run: _released(spark, configs[run], root) for run in RUNS}
        for run in RUNS:
            keys[run].append(len(released[run]))
        for run, by_metric in _squared_errors(released, truth).items():
            for m in METRICS:
                errors[run][m] += by_metric[m]
    mean_old, mean_new = statistics.mean(keys["previous"]), statistics.mean(keys["today"])

    def rmse(which: str, metric: str) -> str:
        values = errors[which][metric]
        return f"{math.sqrt(statistics.mean(values)):.4g}" if values else "-"

    return [
        f"{rows:,}",
        f"{mean_old:.0f}",
        f"{mean_new:.0f}",
        f"{mean_new / mean_old:.2f}",
        *[" / ".join(rmse(run, m) for run in RUNS) for m in METRICS],
    ]


def run(sizes: tuple[int, ...], repeats: int, scratch: Path) -> str:
    """The section of the report: one row per size."""
    spark = bench_session()
    try:
        rows = [measure(spark, n, repeats, scratch) for n in sizes]
    finally:
        spark.stop()
    header = [
        "rows",
        "keys, previous defaults",
        "keys, today",
        "ratio",
        *[f"RMSE {m} (previous / today / shared parts)" for m in METRICS],
    ]
    return (
        "### Released keys and errors: previous default selection against today's\n\n"
        f"Mean of {repeats} rounds of each, in turn; RMSE against the clamped truth over "
        "the keys every run of a round released; 'shared parts' is today's defaults with "
        "budget.share_parts: true.\n\n" + markdown_table(header, rows) + "\n"
    )


def main() -> None:
    """Run this section alone and append it to the log."""
    options = BenchOptions.from_environment()
    say("released keys: previous default selection against today's")
    text = run(options.rows, options.repeats, options.work_dir)
    path = append_report(text, options.log)
    print(text)
    say(f"appended to {path}")


if __name__ == "__main__":
    main()
