"""Pipeline benchmark: the DP release job against the speed of light (a plain groupBy).

Run with ``python -m benchmarks`` (``make bench``: samplers, then this), or alone with
``python -m benchmarks.pipeline``. Knobs, from the environment:

- ``BENCH_ROWS``: comma-separated table sizes (default ``1000000,10000000``);
- ``BENCH_REPEATS``: timed (a, b) pairs per size (default 3);
- ``BENCH_DIR``: scratch directory for tables and outputs (default ``build/bench``);
- ``BENCH_SAMPLERS``: ``0`` skips the sampler throughput section;
- ``BENCH_LOG``: the log to append to (default ``BENCHMARKS.md`` at the repository root).

What is measured, per size N, in one Spark session (local[2], the shipped local settings
with an 8g driver), after one untimed warm-up pair on a small table:

(a) the full DP release, ``pipelines.job.run_release`` on the synthetic table (count,
    privacy_id_count, sum, mean; truncated-geometric private selection; L0 = 3,
    Linf = 2; exact CSPRNG noise), timed from the call to its return: read, bound,
    aggregate, select and noise, write to staging, check, checksum, manifest, publish;
(b) the non-private baseline: the same metrics with one plain
    ``groupBy(key).agg(count, count_distinct(unit), sum, avg)`` written to Parquet.

Runs alternate a, b, a, b, ... so both see the same machine state; the report gives the
median wall time of each, the ratio a/b of every pair, and the peak driver memory
sampled every 100 ms during the runs. A separate, untimed-for-the-headline diagnostic
run gives the stage breakdown of (a) by running successive prefixes of the DP graph
with the ``noop`` sink and differencing their wall times.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from py4j.protocol import Py4JJavaError  # type: ignore[import-untyped]
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from benchmarks.report import (
    BENCHMARKS_FILE,
    Machine,
    append_report,
    describe_machine,
    machine_section,
    markdown_table,
    median,
    sampler_section,
)
from benchmarks.synthetic import LOWER, UPPER, SyntheticTable, synthetic_table
from jobs.session import create_session, local_settings
from pipelines.aggregation import aggregate_partitions
from pipelines.bounding import BoundingSalt, bound_contributions, select_encoded
from pipelines.config import JobConfig, config_from_mapping
from pipelines.job import clean_rows, run_release
from pipelines.noising import SecureNoise, apply_noise
from pipelines.plan import build_plan
from pipelines.source import read_input

DEFAULT_ROWS = (1_000_000, 10_000_000)
DEFAULT_REPEATS = 3
WARMUP_ROWS = 200_000
L0, LINF = 3, 2
BENCH_SETTINGS = {
    "spark.master": "local[2]",
    "spark.driver.memory": "8g",
    "spark.ui.showConsoleProgress": "false",
}
STAGES = ("bounding", "aggregation", "selection+noise", "write")


@dataclass(frozen=True)
class BenchOptions:
    """The benchmark's knobs, read from the environment."""

    rows: tuple[int, ...]
    repeats: int
    work_dir: Path
    samplers: bool
    log: Path

    @staticmethod
    def from_environment() -> BenchOptions:
        """Parse BENCH_ROWS, BENCH_REPEATS, BENCH_DIR and BENCH_SAMPLERS (empty = default)."""
        raw_rows = os.environ.get("BENCH_ROWS", "").strip()
        rows = (
            tuple(int(part.replace("_", "")) for part in raw_rows.split(",") if part.strip())
            if raw_rows
            else DEFAULT_ROWS
        )
        raw_repeats = os.environ.get("BENCH_REPEATS", "").strip()
        repeats = int(raw_repeats) if raw_repeats else DEFAULT_REPEATS
        if not rows or min(rows) < 1 or repeats < 1:
            raise ValueError("BENCH_ROWS must list positive sizes and BENCH_REPEATS be >= 1")
        work_dir = Path(os.environ.get("BENCH_DIR", "").strip() or "build/bench").resolve()
        samplers = os.environ.get("BENCH_SAMPLERS", "1").strip() != "0"
        log = Path(os.environ.get("BENCH_LOG", "").strip() or BENCHMARKS_FILE)
        return BenchOptions(rows, repeats, work_dir, samplers, log)


@dataclass(frozen=True)
class Memory:
    """Peaks sampled during one run (bytes)."""

    jvm_heap: int = 0
    jvm_old_gen: int = 0
    jvm_rss: int = 0
    python_rss: int = 0

    def merge(self, other: Memory) -> Memory:
        """Field-wise maximum."""
        return Memory(
            max(self.jvm_heap, other.jvm_heap),
            max(self.jvm_old_gen, other.jvm_old_gen),
            max(self.jvm_rss, other.jvm_rss),
            max(self.python_rss, other.python_rss),
        )


@dataclass(frozen=True)
class TaskTime:
    """Task time summed over every completed stage of the measured Spark jobs (seconds).

    ``run`` is the tasks' wall time (executorRunTime), ``cpu`` their JVM CPU time
    (executorCpuTime; Python workers, e.g. the noise UDF, are not included). Both count
    work, not waiting for a core, so they are steadier than wall time on a shared machine.
    """

    run: float = 0.0
    cpu: float = 0.0
    stages: int = 0

    def minus(self, other: TaskTime) -> TaskTime:
        """Field-wise difference (for differencing graph prefixes)."""
        return TaskTime(self.run - other.run, self.cpu - other.cpu, self.stages - other.stages)


class TaskClock:
    """Sums the task time of the Spark jobs a block runs, from Spark's own status store.

    Each measured block runs under its own job group; afterwards the listener bus is
    drained and the group's stages are read once each (a stage reused by a later job
    counts once). Only stage-level totals reach the driver, never per-row data.
    """

    def __init__(self, spark: SparkSession) -> None:
        self._context = spark.sparkContext
        self._blocks = 0

    def _collect(self, group: str) -> TaskTime:
        jsc: Any = self._context._jsc
        jsc.sc().listenerBus().waitUntilEmpty()
        store = jsc.sc().statusStore()
        tracker = self._context.statusTracker()
        seen: set[int] = set()
        run_ms, cpu_ns = 0, 0
        for job_id in tracker.getJobIdsForGroup(group):
            info = tracker.getJobInfo(job_id)
            for stage_id in list(info.stageIds) if info is not None else []:
                if stage_id in seen:
                    continue
                seen.add(stage_id)
                try:
                    data = store.lastStageAttempt(int(stage_id))
                except Py4JJavaError:  # a stage the store no longer holds
                    continue
                if str(data.status()) == "COMPLETE":
                    run_ms += int(data.executorRunTime())
                    cpu_ns += int(data.executorCpuTime())
        return TaskTime(run_ms / 1e3, cpu_ns / 1e9, len(seen))

    @contextmanager
    def measuring(self) -> Iterator[Callable[[], TaskTime]]:
        """Run the block under a fresh job group; the yielded callable gives its task time.

        Call the callable after the block has ended.
        """
        self._blocks += 1
        group = f"dprelease-bench-{self._blocks}"
        measured: list[TaskTime] = [TaskTime()]
        self._context.setJobGroup(group, group)
        try:
            yield lambda: measured[0]
        finally:
            jsc: Any = self._context._jsc
            jsc.clearJobGroup()
            measured[0] = self._collect(group)


@dataclass
class SizeResult:
    """Everything measured for one table size."""

    rows: int
    generate_seconds: float
    dp_seconds: list[float] = field(default_factory=list)
    baseline_seconds: list[float] = field(default_factory=list)
    dp_tasks: list[TaskTime] = field(default_factory=list)
    baseline_tasks: list[TaskTime] = field(default_factory=list)
    dp_memory: Memory = field(default_factory=Memory)
    baseline_memory: Memory = field(default_factory=Memory)
    stages: dict[str, float] = field(default_factory=dict)
    stage_tasks: dict[str, TaskTime] = field(default_factory=dict)
    released_rows: int = 0
    plan_shape: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ratios(self) -> list[float]:
        """a/b wall time for each alternating pair."""
        return [a / b for a, b in zip(self.dp_seconds, self.baseline_seconds, strict=True)]

    @property
    def cpu_ratios(self) -> list[float]:
        """a/b task CPU time for each alternating pair."""
        return [
            a.cpu / b.cpu if b.cpu > 0 else float("nan")
            for a, b in zip(self.dp_tasks, self.baseline_tasks, strict=True)
        ]


def _rss_bytes(pid: int | str) -> int:
    """Current resident set size of a process (Linux /proc), 0 where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class MemoryProbe:
    """Samples the driver's memory every ``interval`` seconds in a background thread.

    Driver JVM: heap used and old-generation used (MemoryMXBean / MemoryPoolMXBean) and
    the process RSS; Python driver: its RSS. In local mode the driver JVM also runs the
    executors, so its heap includes task memory (sort and shuffle buffers).
    """

    def __init__(self, spark: SparkSession, interval: float = 0.1) -> None:
        jvm: Any = spark.sparkContext._jvm
        management = jvm.java.lang.management.ManagementFactory
        self._heap = management.getMemoryMXBean()
        self._old = [p for p in management.getMemoryPoolMXBeans() if "Old Gen" in p.getName()]
        self._jvm_pid = int(jvm.java.lang.ProcessHandle.current().pid())
        self._system = jvm.java.lang.System
        self._interval = interval
        self._peak = Memory()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> Memory:
        old = sum(int(p.getUsage().getUsed()) for p in self._old)
        return Memory(
            jvm_heap=int(self._heap.getHeapMemoryUsage().getUsed()),
            jvm_old_gen=old,
            jvm_rss=_rss_bytes(self._jvm_pid),
            python_rss=_rss_bytes("self"),
        )

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._peak = self._peak.merge(self._sample())

    @contextmanager
    def measuring(self) -> Iterator[Callable[[], Memory]]:
        """Sample while the block runs; the yielded callable returns the peaks so far."""
        self._system.gc()  # start every run from a collected heap
        self._peak = self._sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="memory-probe", daemon=True)
        self._thread.start()
        try:
            yield lambda: self._peak
        finally:
            self._stop.set()
            self._thread.join()
            self._peak = self._peak.merge(self._sample())


def bench_session() -> SparkSession:
    """The benchmark's session: the shipped local settings, local[2], an 8g driver."""
    return create_session("dprelease-bench", local_settings() | BENCH_SETTINGS)


def bench_config(
    table: SyntheticTable, output_root: Path, extra_metrics: Sequence[dict[str, Any]] = ()
) -> JobConfig:
    """The DP job of the benchmark: four metrics (and ``extra_metrics``), private selection,
    L0 = 3, Linf = 2."""
    return config_from_mapping(
        {
            "release": {
                "name": "bench",
                "output_root": str(output_root),
                "data_period": f"synthetic-{table.rows}",
            },
            "input": {"path": str(table.path)},
            "privacy_unit": {"column": "user_id", "time_scope": "the synthetic table"},
            "partition_columns": ["key"],
            "contribution_bounds": {
                "max_partitions_per_unit": L0,
                "max_rows_per_unit_per_partition": LINF,
            },
            "metrics": [
                {"metric": "count"},
                {"metric": "privacy_id_count"},
                {"metric": "sum", "column": "value", "lower": LOWER, "upper": UPPER},
                {"metric": "mean", "column": "value", "lower": LOWER, "upper": UPPER},
                *extra_metrics,
            ],
            "budget": {"epsilon": 1.0, "delta": 1e-6},
            "ledger": {"dataset": "bench", "lifetime_budget": {"epsilon": 1e9, "delta": 0.5}},
            "partition_selection": {"mechanism": "truncated_geometric"},
        },
        "benchmark config",
    )


def baseline_frame(spark: SparkSession, table: SyntheticTable) -> DataFrame:
    """The non-private speed of light: the same metrics in one plain groupBy().agg()."""
    rows = spark.read.parquet(str(table.path))
    # One row per key, no bounding, no clamping, no noise, no selection.
    return rows.groupBy("key").agg(
        F.count(F.lit(1)).alias("count"),
        F.count_distinct("user_id").alias("privacy_id_count"),
        F.sum("value").alias("sum_value"),
        F.avg("value").alias("mean_value"),
    )


def time_dp_job(spark: SparkSession, table: SyntheticTable, scratch: Path) -> tuple[float, int]:
    """Wall seconds of one real ``run_release`` (a fresh release root), and its row count.

    The release root (versions, operator area, ledger) is removed before and after, so
    every run is a first release and the ledger never refuses it.
    """
    root = scratch / "releases"
    shutil.rmtree(root, ignore_errors=True)
    config = bench_config(table, root)
    start = time.perf_counter()
    result = run_release(spark, config)
    seconds = time.perf_counter() - start
    shutil.rmtree(root, ignore_errors=True)
    return seconds, result.row_count


def time_baseline(spark: SparkSession, table: SyntheticTable, scratch: Path) -> float:
    """Wall seconds of the plain groupBy written to Parquet (a fresh output directory)."""
    out = scratch / "baseline"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    baseline_frame(spark, table).write.parquet(str(out))
    seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def _noop(frame: DataFrame) -> float:
    """Wall seconds of computing ``frame`` in full into Spark's ``noop`` sink."""
    start = time.perf_counter()
    frame.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start


def dp_graph(spark: SparkSession, table: SyntheticTable, scratch: Path) -> dict[str, DataFrame]:
    """The DP job's lazy graph, cut after each stage: bounded, aggregated, released.

    Built from the same public functions, in the same order, as the release job
    (``pipelines.job``): read, clean, encode, bound, aggregate, select and noise.
    """
    config = bench_config(table, scratch / "releases")
    plan = build_plan(config)
    cleaned = clean_rows(read_input(spark, config), plan)
    # One row per kept input row, then one per partition, then one per released partition.
    bounded = bound_contributions(select_encoded(cleaned, plan), plan, BoundingSalt.fresh())
    aggregated = aggregate_partitions(bounded, plan)
    released = apply_noise(aggregated, plan, SecureNoise())
    return {"bounded": bounded, "aggregated": aggregated, "released": released}


def stage_breakdown(
    spark: SparkSession, clock: TaskClock, table: SyntheticTable, scratch: Path
) -> tuple[dict[str, float], dict[str, TaskTime]]:
    """Wall seconds and task time per stage of the DP graph, by differencing prefixes.

    Each prefix is a separate Spark job that re-reads the input: (1) read, clean and
    bound, to the noop sink; (2) ... and aggregate; (3) ... and select and noise; (4) the
    full graph written to Parquet. Diagnostic only: the headline time is the real
    ``run_release``.
    """
    graph = dp_graph(spark, table, scratch)
    out = scratch / "breakdown"
    shutil.rmtree(out, ignore_errors=True)

    def to_parquet(frame: DataFrame) -> float:
        start = time.perf_counter()
        frame.write.parquet(str(out))
        return time.perf_counter() - start

    steps: list[tuple[Callable[[DataFrame], float], DataFrame]] = [
        (_noop, graph["bounded"]),
        (_noop, graph["aggregated"]),
        (_noop, graph["released"]),
        (to_parquet, graph["released"]),
    ]
    walls: list[float] = []
    tasks: list[TaskTime] = []
    for action, frame in steps:
        with clock.measuring() as measured:
            walls.append(action(frame))
        tasks.append(measured())
    shutil.rmtree(out, ignore_errors=True)
    wall = {
        stage: total - before
        for stage, total, before in zip(STAGES, walls, [0.0, *walls[:-1]], strict=True)
    }
    task = {
        stage: total.minus(before)
        for stage, total, before in zip(STAGES, tasks, [TaskTime(), *tasks[:-1]], strict=True)
    }
    return wall, task


def sorts_of_row_grain_data(physical: str) -> list[str]:
    """Sort nodes of a physical plan string with no aggregate below them (they sort rows)."""
    lines = physical.splitlines()
    depth = [len(line) - len(line.lstrip(" :+-")) for line in lines]
    row_grain = []
    for index, line in enumerate(lines):
        if "Sort [" not in line:
            continue
        below = []
        for other in range(index + 1, len(lines)):
            if depth[other] <= depth[index]:
                break
            below.append(lines[other])
        if not any("HashAggregate" in b for b in below):
            row_grain.append(line)
    return row_grain


def plan_shape(frame: DataFrame) -> dict[str, int]:
    """Shuffles, sorts and window-group limits in a frame's physical plan (before AQE)."""
    physical = str(frame._jdf.queryExecution().executedPlan().toString())
    return {
        "shuffles": len(re.findall(r"Exchange hashpartitioning", physical)),
        "sorts": len(re.findall(r"\bSort \[", physical)),
        "sorts_of_rows": len(sorts_of_row_grain_data(physical)),
        "window_group_limits": len(re.findall(r"WindowGroupLimit", physical)),
        "decimal_sums": len(re.findall(r"sum\([^)]*decimal", physical, flags=re.IGNORECASE)),
    }


def run_size(
    spark: SparkSession,
    probe: MemoryProbe,
    clock: TaskClock,
    rows: int,
    repeats: int,
    work_dir: Path,
) -> SizeResult:
    """Generate (or reuse) the table of ``rows`` rows and measure it: pairs, then stages."""
    start = time.perf_counter()
    table = synthetic_table(spark, rows, work_dir / "data")
    result = SizeResult(rows=rows, generate_seconds=time.perf_counter() - start)
    scratch = work_dir / "out"
    for repeat in range(repeats):
        with probe.measuring() as peak, clock.measuring() as tasks:
            seconds, result.released_rows = time_dp_job(spark, table, scratch)
        result.dp_seconds.append(seconds)
        result.dp_tasks.append(tasks())
        result.dp_memory = result.dp_memory.merge(peak())
        with probe.measuring() as peak, clock.measuring() as tasks:
            result.baseline_seconds.append(time_baseline(spark, table, scratch))
        result.baseline_tasks.append(tasks())
        result.baseline_memory = result.baseline_memory.merge(peak())
        say(
            f"N={rows:,} pair {repeat + 1}/{repeats}: DP {seconds:.1f}s "
            f"(task CPU {result.dp_tasks[-1].cpu:.1f}s), baseline "
            f"{result.baseline_seconds[-1]:.1f}s (task CPU {result.baseline_tasks[-1].cpu:.1f}s), "
            f"ratio {result.ratios[-1]:.2f}"
        )
    result.stages, result.stage_tasks = stage_breakdown(spark, clock, table, scratch)
    say(f"N={rows:,} stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.stages.items()))
    result.plan_shape = {
        "DP job": plan_shape(dp_graph(spark, table, scratch)["released"]),
        "baseline": plan_shape(baseline_frame(spark, table)),
    }
    return result


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _mib(value: int) -> str:
    return f"{value / 2**20:,.0f}"


def _growth_table(results: list[SizeResult]) -> str:
    """Time per million rows and growth against the smallest size, for (a) and (b)."""
    first = results[0]
    rows = []
    for r in results:
        dp, base = median(r.dp_seconds), median(r.baseline_seconds)
        dp_cpu = median([t.cpu for t in r.dp_tasks])
        base_cpu = median([t.cpu for t in r.baseline_tasks])
        rows.append(
            [
                f"{r.rows:,}",
                f"{r.rows / first.rows:g}x",
                f"{dp / median(first.dp_seconds):.2f}x",
                f"{base / median(first.baseline_seconds):.2f}x",
                f"{dp / r.rows * 1e6:.2f}",
                f"{base / r.rows * 1e6:.2f}",
                f"{dp_cpu / r.rows * 1e6:.2f}",
                f"{base_cpu / r.rows * 1e6:.2f}",
            ]
        )
    header = [
        "rows N",
        "N growth",
        "(a) wall growth",
        "(b) wall growth",
        "(a) wall s per 1M rows",
        "(b) wall s per 1M rows",
        "(a) task CPU s per 1M rows",
        "(b) task CPU s per 1M rows",
    ]
    return markdown_table(header, rows)


def pipeline_section(results: list[SizeResult], repeats: int) -> str:
    """The pipeline results as Markdown: times and ratios, scaling, memory, stages, plans."""
    timing = []
    for r in results:
        dp_cpu = median([t.cpu for t in r.dp_tasks])
        base_cpu = median([t.cpu for t in r.baseline_tasks])
        timing.append(
            [
                f"{r.rows:,}",
                f"{median(r.dp_seconds):.1f}",
                f"{median(r.baseline_seconds):.1f}",
                f"{median(r.dp_seconds) / median(r.baseline_seconds):.2f}",
                ", ".join(f"{x:.2f}" for x in r.ratios),
                " / ".join(f"{x:.1f}" for x in r.dp_seconds),
                " / ".join(f"{x:.1f}" for x in r.baseline_seconds),
                f"{dp_cpu:.1f}",
                f"{base_cpu:.1f}",
                ", ".join(f"{x:.2f}" for x in r.cpu_ratios),
                f"{r.released_rows:,}",
            ]
        )
    text = (
        f"### DP release job (a) vs plain groupBy (b), median of {repeats} alternating pairs\n\n"
        "Wall time is the headline. Task CPU is the JVM CPU time of all Spark tasks of the "
        "run (Python workers excluded), which other load on the machine barely moves.\n\n"
        + markdown_table(
            [
                "rows N",
                "(a) DP job s",
                "(b) groupBy s",
                "median a / median b",
                "a/b per pair",
                "(a) runs s",
                "(b) runs s",
                "(a) task CPU s",
                "(b) task CPU s",
                "a/b task CPU per pair",
                "released keys",
            ],
            timing,
        )
        + "\n"
    )
    if len(results) > 1:
        text += "\n#### Scaling in N\n\n" + _growth_table(results) + "\n"
    memory = []
    for r in results:
        for label, m in (("(a) DP job", r.dp_memory), ("(b) groupBy", r.baseline_memory)):
            memory.append(
                [
                    f"{r.rows:,}",
                    label,
                    _mib(m.jvm_heap),
                    _mib(m.jvm_old_gen),
                    _mib(m.jvm_rss),
                    _mib(m.python_rss),
                ]
            )
    text += (
        "\n#### Peak driver memory (MiB, sampled every 100 ms; local mode: the driver JVM also "
        "runs the tasks)\n\n"
        + markdown_table(
            ["rows N", "job", "JVM heap used", "JVM old gen used", "JVM RSS", "Python driver RSS"],
            memory,
        )
        + "\n"
    )
    stages = []
    for r in results:
        total = sum(r.stages.values())
        total_cpu = sum(t.cpu for t in r.stage_tasks.values())
        stages.append(
            [f"{r.rows:,}"]
            + [
                f"{r.stages[s]:.1f} ({r.stages[s] / total:.0%}); CPU {r.stage_tasks[s].cpu:.1f}"
                for s in STAGES
            ]
            + [
                f"{total:.1f}; CPU {total_cpu:.1f}",
                f"{median(r.dp_seconds) - total:.1f}",
            ]
        )
    text += (
        "\n#### Stage breakdown of (a): wall s (share); task CPU s (one diagnostic run per N)\n\n"
        "Measured by running successive prefixes of the DP graph (read+clean+bound, "
        "+aggregate, +select and noise) into Spark's `noop` sink, then the full graph into "
        "Parquet, and differencing the wall and task CPU times. Each prefix re-reads the "
        "input, so reading counts in bounding; small differences are within run-to-run noise "
        "(they can come out negative). 'outside the graph' = median (a) minus the graph "
        "total: the input and output contracts (Great Expectations), the persisted aggregate "
        "and its count, checksums, manifest, ledger, rename, and run-to-run noise.\n\n"
        + markdown_table(["rows N", *STAGES, "graph total", "outside the graph"], stages)
        + "\n"
    )
    shapes = []
    for r in results[-1:]:
        for label, shape in r.plan_shape.items():
            shapes.append([label, *shape.values()])
    if shapes:
        header = ["physical plan", *next(iter(results[-1].plan_shape.values())).keys()]
        text += "\n#### Physical plans (before AQE)\n\n" + markdown_table(header, shapes) + "\n"
    return text


def run_pipeline(options: BenchOptions) -> tuple[Machine, list[SizeResult]]:
    """Measure every size in ``options.rows`` in one Spark session (stopped on return).

    Returns the machine description (load average taken before and after) and one
    result per size, in order.
    """
    options.work_dir.mkdir(parents=True, exist_ok=True)
    spark = bench_session()
    try:
        jvm: Any = spark.sparkContext._jvm
        settings = {
            key: spark.conf.get(key) or ""
            for key in (
                "spark.master",
                "spark.driver.memory",
                "spark.sql.shuffle.partitions",
                "spark.sql.adaptive.enabled",
                "spark.sql.ansi.enabled",
            )
        }
        machine = describe_machine(
            spark.version, str(jvm.java.lang.System.getProperty("java.version")), settings
        )
        probe = MemoryProbe(spark)
        clock = TaskClock(spark)
        say(f"warm-up on {WARMUP_ROWS:,} rows")
        warmup = synthetic_table(spark, WARMUP_ROWS, options.work_dir / "data")
        time_dp_job(spark, warmup, options.work_dir / "out")
        time_baseline(spark, warmup, options.work_dir / "out")
        results = [
            run_size(spark, probe, clock, rows, options.repeats, options.work_dir)
            for rows in options.rows
        ]
    finally:
        spark.stop()
    return replace(machine, load_after=os.getloadavg()), results


def main() -> None:
    """Run the pipeline benchmark alone (no sampler section) and append it to the log."""
    options = BenchOptions.from_environment()
    machine, results = run_pipeline(options)
    text = (
        machine_section(machine)
        + "\n"
        + pipeline_section(results, options.repeats)
        + "\n"
        + sampler_section([])
    )
    path = append_report(text, options.log)
    print(text)
    say(f"appended to {path}")


if __name__ == "__main__":
    main()
