"""A NoiseSource that records every draw it makes, one file per Spark task attempt.

Executors are separate Python processes, so the draws go to files (JSON lines) in a
directory given at construction. The noise itself is the production noise (exact samplers
over the OS CSPRNG). Optionally the first attempt of every task fails after drawing, to
exercise Spark's task retry. Pickled by value into the UDF (see conftest).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dp_ops.noise import DiscreteLaplace, NoiseDistribution
from dp_ops.samplers import sample_bernoulli

INJECTED = "injected failure on the first task attempt"


def _task() -> dict[str, int]:
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return {"stage": -1, "partition": -1, "attempt": -1, "task": -1}
    return {
        "stage": context.stageId(),
        "partition": context.partitionId(),
        "attempt": context.attemptNumber(),
        "task": context.taskAttemptId(),
    }


def describe(distribution: NoiseDistribution) -> str:
    if isinstance(distribution, DiscreteLaplace):
        return f"laplace:{distribution.scale}"
    return f"gaussian:{distribution.sigma_squared}"


class RecordingNoise:
    """Production noise, with every draw appended to ``<directory>/task-<id>.jsonl``."""

    def __init__(self, directory: str, fail_first_attempt: bool = False) -> None:
        self.directory = directory
        self.fail_first_attempt = fail_first_attempt

    def _record(self, kind: str, values: list[Any]) -> dict[str, int]:
        task = _task()
        name = f"task-{task['task']}-pid{os.getpid()}.jsonl"
        line = json.dumps(task | {"kind": kind, "values": values})
        with (Path(self.directory) / name).open("a", encoding="utf-8") as out:
            out.write(line + "\n")
        return task

    def _maybe_fail(self, task: dict[str, int]) -> None:
        if self.fail_first_attempt and task["attempt"] == 0:
            raise RuntimeError(INJECTED)

    def integer_noise(self, distribution: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
        values = distribution.sample(size)
        task = self._record(describe(distribution), [int(v) for v in values])
        self._maybe_fail(task)
        return values

    def keep(self, probabilities: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        values = sample_bernoulli(probabilities)
        task = self._record("keep", [bool(v) for v in values])
        self._maybe_fail(task)
        return values


def read_records(directory: Path) -> list[dict[str, Any]]:
    """Every recorded draw call, from every task attempt's file."""
    records: list[dict[str, Any]] = []
    for path in sorted(directory.glob("task-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            records.append(json.loads(line))
    return records
