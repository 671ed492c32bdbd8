"""Operator progress: one log line per step of a run, and a bar for the data pass.

Invariant: progress output names steps and elapsed wall time only, and the bar shows a
percentage of Spark tasks, drawn only when stderr is a terminal (never in the task logs
orchestrators keep); neither carries a count, value or key from the data. Elapsed times
are no more than the log's own time stamps already show (timing is out of scope for
batch releases, docs/privacy.md §11).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["STEPS", "Progress"]

STEPS = ("plan", "charge", "read and bound", "noise", "write", "contracts", "publish")
_BAR_WIDTH = 30
_POLL_SECONDS = 0.5


class Progress:
    """Numbered step lines with the time elapsed since the run started."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._start = time.monotonic()

    def step(self, name: str, detail: str = "") -> None:
        """Log ``[k/7] name`` with the elapsed time (``name`` is one of ``STEPS``)."""
        index = STEPS.index(name) + 1
        elapsed = time.monotonic() - self._start
        suffix = f": {detail}" if detail else ""
        self._log.info("[%d/%d] %s%s (%.1f s)", index, len(STEPS), name, suffix, elapsed)

    @contextmanager
    def data_pass(self, spark: SparkSession) -> Iterator[None]:
        """Draw a bar of the active Spark stages' task completion while the body runs
        (only on a terminal; Spark's status tracker, no count shown)."""
        if not sys.stderr.isatty():
            yield
            return
        done = threading.Event()
        thread = threading.Thread(target=_draw, args=(spark, done), daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=2)
            sys.stderr.write("\r" + " " * (_BAR_WIDTH + 24) + "\r")
            sys.stderr.flush()


def _fraction(spark: SparkSession) -> float | None:
    """Completed over total tasks of the active stages, None when none is active."""
    tracker = spark.sparkContext.statusTracker()
    total = completed = 0
    for stage_id in tracker.getActiveStageIds():
        info = tracker.getStageInfo(stage_id)
        if info is not None:
            total += info.numTasks
            completed += info.numCompletedTasks
    return completed / total if total else None


def _draw(spark: SparkSession, done: threading.Event) -> None:
    while not done.wait(_POLL_SECONDS):
        try:
            fraction = _fraction(spark)
        except Exception:  # the session is stopping: stop drawing
            return
        if fraction is None:
            continue
        filled = round(fraction * _BAR_WIDTH)
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        sys.stderr.write(f"\r  data pass [{bar}] {fraction:4.0%}")
        sys.stderr.flush()
