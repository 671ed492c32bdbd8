"""The benchmark log: the machine a run used, and its results as Markdown for BENCHMARKS.md.

BENCHMARKS.md is append-only: every ``make bench`` adds one dated section and never
rewrites earlier ones, so the file is the performance history of the project.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS_FILE = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
_HEADER = (
    "# Benchmarks\n\n"
    "Append-only log of `make bench` runs (newest last). Each run records the machine, the\n"
    "versions and the settings it used; `benchmarks/pipeline.py` documents what is measured.\n"
)


@dataclass(frozen=True)
class Machine:
    """Where and with what a benchmark ran."""

    date: str
    cores: int
    memory_gib: float
    cpu: str
    os: str
    python: str
    spark: str
    java: str
    commit: str
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    settings: dict[str, str] = field(default_factory=dict)


def _meminfo_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str:
    """Short HEAD commit, with '+dirty' when the tree has uncommitted changes (read-only)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def describe_machine(spark_version: str, java_version: str, settings: dict[str, str]) -> Machine:
    """The machine, versions and settings of this run (load average taken now)."""
    return Machine(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cores=os.cpu_count() or 0,
        memory_gib=_meminfo_gib(),
        cpu=_cpu_model(),
        os=platform.platform(),
        python=platform.python_version(),
        spark=spark_version,
        java=java_version,
        commit=_commit(),
        load_before=os.getloadavg(),
        settings=settings,
    )


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    return float(statistics.median(values))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _load_note(machine: Machine) -> str:
    """Whether other work shared the machine during the run, judged from the load average."""
    busiest = max(*machine.load_before, *machine.load_after)
    if busiest > machine.cores:
        return (
            f"LOADED: other processes shared the {machine.cores} cores during this run, "
            "so wall times are inflated and noisy; task CPU times are steadier"
        )
    return "other work on the machine makes timings noisy"


def machine_section(machine: Machine) -> str:
    """The run's heading and its machine description."""
    load = ", ".join(f"{x:.2f}" for x in machine.load_before)
    load_after = ", ".join(f"{x:.2f}" for x in machine.load_after)
    settings = ", ".join(f"`{k}={v}`" for k, v in sorted(machine.settings.items()))
    return (
        f"## Run of {machine.date}\n\n"
        f"- machine: {machine.cores} cores ({machine.cpu}), {machine.memory_gib:.1f} GiB memory, "
        f"{machine.os}\n"
        f"- versions: Python {machine.python}, Spark {machine.spark}, Java {machine.java}; "
        f"commit {machine.commit}\n"
        f"- load average (1, 5, 15 min) before: {load}; after: {load_after} "
        f"({_load_note(machine)})\n"
        f"- Spark settings: {settings}\n"
    )


def sampler_section(rows: Sequence[dict[str, object]]) -> str:
    """Sampler throughput rows (from ``benchmarks.samplers.sampler_rows``) as a table."""
    if not rows:
        return "### Sampler throughput\n\nNot measured in this run.\n"
    header: list[str] = []
    for row in rows:
        header += [name for name in row if name not in header]

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return "" if value is None else str(value)

    body = [[cell(row.get(name)) for name in header] for row in rows]
    return "### Sampler throughput (samples/s, vs OpenDP)\n\n" + markdown_table(header, body) + "\n"


def append_report(text: str, path: Path = BENCHMARKS_FILE) -> Path:
    """Append one run's section to the log (creating it with its header if absent)."""
    if not path.exists():
        path.write_text(_HEADER, encoding="utf-8")
    with path.open("a", encoding="utf-8") as log:
        log.write("\n" + text.rstrip() + "\n")
    return path
