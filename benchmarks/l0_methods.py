"""A/B of three ways to keep at most L0 cells per unit (``python -m benchmarks.l0_methods``).

All three take the cells of ``pipelines.bounding.bounded_cells`` (hash-partitioned by unit)
and keep, per unit, the L0 cells of smallest ``cell_hash``; they must give the same cells
(checked on every size before timing):

(a) ``window``: ``row_number`` over a window partitioned by unit (the production
    ``keep_l0_cells``): a sort of cells within each Spark partition;
(b) ``collect``: one ``collect_list`` of structs per unit (an object hash aggregate, no
    sort of the Spark partition), then ``array_sort`` and ``slice`` to L0, exploded;
(c) ``arrow``: a vectorised pass over each Spark partition (``mapInArrow``): the
    partition's cells are gathered in pyarrow, ranked by (unit, hash, key) with
    ``sort_indices`` and cut by run boundaries of the unit.

Each runs the graph up to the per-partition aggregate into Spark's ``noop`` sink, in
alternating rounds; the report gives the median wall time of each. ``BENCH_ROWS`` and
``BENCH_REPEATS`` as in ``make bench``; the section is appended to BENCHMARKS.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from benchmarks.pipeline import bench_config, bench_session
from benchmarks.report import BENCHMARKS_FILE, append_report, markdown_table, median
from benchmarks.synthetic import synthetic_table
from pipelines.aggregation import aggregate_partitions
from pipelines.bounding import (
    CELL_HASH,
    UNIT,
    BoundingSalt,
    bounded_cells,
    cell_hash,
    keep_l0_cells,
    select_encoded,
)
from pipelines.config import JobConfig
from pipelines.job import clean_rows
from pipelines.plan import ReleasePlan, build_plan
from pipelines.source import read_input

Method = Callable[[DataFrame, ReleasePlan, BoundingSalt], DataFrame]


def keep_by_collect(cells: DataFrame, plan: ReleasePlan, salt: BoundingSalt) -> DataFrame:
    """(b) One array of (hash, key, cell) structs per unit, sorted and sliced to L0."""
    keys = list(plan.columns.partition_columns)
    payload = [c for c in cells.columns if c != UNIT and c not in keys]
    hashed = cells.withColumn(CELL_HASH, cell_hash(plan, salt))
    entry = F.struct(F.col(CELL_HASH), *[F.col(k) for k in keys], *[F.col(c) for c in payload])
    l0 = plan.bounds.max_partitions_per_unit
    # One row per unit: its L0 cells of smallest hash, as an array.
    kept = hashed.groupBy(UNIT).agg(
        F.slice(F.array_sort(F.collect_list(entry)), 1, l0).alias("__kept")
    )
    # One row per kept cell.
    exploded = kept.select(UNIT, F.explode("__kept").alias("__cell"))
    return exploded.select(UNIT, *[F.col(f"__cell.{c}").alias(c) for c in [*keys, *payload]])


def _rank_in_arrow(table: pa.Table, keys: list[str], l0: int) -> pa.Table:
    """The rows of ``table`` (one Spark partition's cells) that rank <= L0 in their unit."""
    order = pc.sort_indices(
        table,
        sort_keys=[(UNIT, "ascending"), (CELL_HASH, "ascending")]
        + [(k, "ascending") for k in keys],
    )
    ordered = table.take(order)
    units = ordered.column(UNIT)
    size = ordered.num_rows
    if size == 0:
        return ordered.drop_columns([CELL_HASH])
    starts = np.ones(size, dtype=bool)
    if size > 1:
        same = pc.equal(units.slice(1), units.slice(0, size - 1)).to_numpy(zero_copy_only=False)
        starts[1:] = ~same
    run_start = np.maximum.accumulate(np.where(starts, np.arange(size), 0))
    rank = np.arange(size) - run_start + 1
    return ordered.filter(pa.array(rank <= l0)).drop_columns([CELL_HASH])


def keep_by_arrow(cells: DataFrame, plan: ReleasePlan, salt: BoundingSalt) -> DataFrame:
    """(c) A vectorised pass over each Spark partition, already clustered by unit."""
    keys = list(plan.columns.partition_columns)
    l0 = plan.bounds.max_partitions_per_unit
    hashed = cells.withColumn(CELL_HASH, cell_hash(plan, salt))
    schema = cells.schema

    def rank(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        collected = list(batches)
        if not collected:
            return
        gathered = pa.Table.from_batches(collected)
        if gathered.num_rows == 0:
            return
        kept = _rank_in_arrow(gathered, keys, l0)
        yield from kept.to_batches()

    # One row per kept cell (each Spark partition holds whole units).
    return hashed.mapInArrow(rank, schema)


METHODS: dict[str, Method] = {
    "window": keep_l0_cells,
    "collect": keep_by_collect,
    "arrow": keep_by_arrow,
}


def _graph(
    spark: SparkSession, config: JobConfig, plan: ReleasePlan, method: Method, salt: BoundingSalt
) -> DataFrame:
    cleaned = clean_rows(read_input(spark, config), plan)
    cells = bounded_cells(select_encoded(cleaned, plan), plan)
    return aggregate_partitions(method(cells, plan, salt), plan)


def _noop(frame: DataFrame) -> float:
    start = time.perf_counter()
    frame.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start


def _sorted(frame: DataFrame) -> list[tuple[object, ...]]:
    return sorted(tuple(r) for r in frame.collect())


def run(rows: Sequence[int], repeats: int, scratch: Path) -> str:
    """Time every method at every size; the markdown section."""
    spark = bench_session()
    lines = []
    for size in rows:
        table = synthetic_table(spark, size, scratch / "data")
        config = bench_config(table, scratch / "releases")
        plan = build_plan(config)
        salt = BoundingSalt.fresh()
        graphs = {name: _graph(spark, config, plan, m, salt) for name, m in METHODS.items()}
        reference = _sorted(graphs["window"])
        for name, graph in graphs.items():
            assert _sorted(graph) == reference, f"{name} keeps other cells than window"
        times: dict[str, list[float]] = {name: [] for name in METHODS}
        for _ in range(repeats):
            for name, graph in graphs.items():
                times[name].append(_noop(graph))
        best = min(times, key=lambda n: median(times[n]))
        for name in METHODS:
            ratio = median(times[name]) / median(times["window"])
            lines.append(
                [
                    f"{size:,}",
                    name,
                    f"{median(times[name]):.2f}",
                    f"{ratio:.2f}",
                    "yes" if name == best else "",
                ]
            )
    spark.stop()
    header = [
        "rows",
        "L0 method",
        "median wall s (to per-partition aggregate, noop)",
        "vs window",
        "fastest",
    ]
    return (
        "### L0 step: three ways, same cells kept\n\n"
        f"local[2], {repeats} alternating rounds per size; each method's output was checked "
        "equal to the window's before timing.\n\n" + markdown_table(header, lines) + "\n"
    )


def main() -> None:
    rows = [int(r) for r in os.environ.get("BENCH_ROWS", "1000000,10000000").split(",")]
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    scratch = Path(os.environ.get("BENCH_DIR", "build/bench"))
    section = run(rows, repeats, scratch)
    print(section)
    append_report(section, Path(os.environ.get("BENCH_LOG", str(BENCHMARKS_FILE))))


if __name__ == "__main__":
    main()
