"""One release of N tables against N single-table runs (``make bench``, also alone:
``python -m benchmarks.tables``).

On the benchmark's synthetic table and bounds (L0 = 3, Linf = 2, private selection), three
tables by ``key`` with different metrics (count and privacy_id_count; sum; mean) are
published once as a release of three tables (one read of the input, one charge) and once as
three separate single-table releases, after one untimed warm-up run, alternating which
goes first, in one Spark session. The report gives
the median wall time of each and their ratio (the release of N tables over the N runs).
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from benchmarks.pipeline import L0, LINF, BenchOptions, bench_session, say
from benchmarks.report import append_report, markdown_table
from benchmarks.synthetic import LOWER, UPPER, SyntheticTable, synthetic_table
from pipelines.config import ReleaseSpec, config_from_mapping, release_from_mapping, single_table
from pipelines.job import run_release

_METRICS: tuple[tuple[str, list[dict[str, Any]]], ...] = (
    ("counts", [{"metric": "count"}, {"metric": "privacy_id_count"}]),
    ("sums", [{"metric": "sum", "column": "value", "lower": LOWER, "upper": UPPER}]),
    ("means", [{"metric": "mean", "column": "value", "lower": LOWER, "upper": UPPER}]),
)


def _shared(table: SyntheticTable, root: Path, name: str) -> dict[str, Any]:
    return {
        "release": {"name": name, "output_root": str(root), "data_period": "bench"},
        "input": {"path": str(table.path)},
        "privacy_unit": {"column": "user_id"},
        "ledger": {"dataset": name, "lifetime_budget": {"epsilon": 1e9, "delta": 0.5}},
    }


def _table(name: str, metrics: list[dict[str, Any]]) -> dict[str, Any]:
    bounds = {"max_partitions_per_unit": L0, "max_rows_per_unit_per_partition": LINF}
    return {
        "name": name,
        "partition_columns": ["key"],
        "contribution_bounds": bounds,
        "metrics": metrics,
    }


def release_of_tables(table: SyntheticTable, root: Path) -> ReleaseSpec:
    """The three tables as one release at epsilon 3 (1 per table)."""
    raw = _shared(table, root, "tables") | {
        "budget": {"epsilon": 3.0, "delta": 3e-6},
        "tables": [_table(name, metrics) for name, metrics in _METRICS],
    }
    return release_from_mapping(raw, "benchmark release of tables")


def separate_releases(table: SyntheticTable, root: Path) -> list[ReleaseSpec]:
    """The same three tables as three single-table releases at epsilon 1 each."""
    out = []
    for name, metrics in _METRICS:
        section = _table(name, metrics)
        raw = _shared(table, root, name) | {k: v for k, v in section.items() if k != "name"}
        raw["budget"] = {"epsilon": 1.0, "delta": 1e-6}
        out.append(single_table(config_from_mapping(raw, "benchmark single table")))
    return out


def _timed(spark: SparkSession, specs: list[ReleaseSpec], root: Path) -> float:
    """Wall seconds to publish every spec (fresh roots before and after)."""
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    for spec in specs:
        run_release(spark, spec)
    seconds = time.perf_counter() - start
    shutil.rmtree(root, ignore_errors=True)
    return seconds


def run(rows: int, repeats: int, scratch: Path, spark: SparkSession | None = None) -> str:
    """The section of the report: median seconds of both ways and their ratio."""
    own = spark is None
    session = spark or bench_session()
    try:
        table = synthetic_table(session, rows, scratch / "data")
        root = scratch / "tables-out"
        _timed(session, separate_releases(table, root)[:1], root)  # warm-up, not counted
        together: list[float] = []
        apart: list[float] = []
        for repeat in range(repeats):
            # Alternate which goes first, so neither always meets a colder cache.
            order = [(together, True), (apart, False)][:: 1 if repeat % 2 == 0 else -1]
            for times, as_one in order:
                specs = (
                    [release_of_tables(table, root)] if as_one else separate_releases(table, root)
                )
                times.append(_timed(session, specs, root))
    finally:
        if own:
            session.stop()
    one, three = statistics.median(together), statistics.median(apart)
    body = markdown_table(
        ["rows", "3 tables, one release (s)", "3 single-table runs (s)", "ratio"],
        [[f"{rows:,}", f"{one:.1f}", f"{three:.1f}", f"{one / three:.2f}"]],
    )
    return (
        "### A release of three tables against three runs\n\n"
        f"Median of {repeats} alternating repeats; one release reads and validates the input "
        "once and is charged once.\n\n" + body + "\n"
    )


def main() -> None:
    """Run this section alone and append it to the log."""
    options = BenchOptions.from_environment()
    say(f"three tables as one release against three runs, {options.rows[0]:,} rows")
    text = run(options.rows[0], options.repeats, options.work_dir)
    path = append_report(text, options.log)
    print(text)
    say(f"appended to {path}")


if __name__ == "__main__":
    main()
