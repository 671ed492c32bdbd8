"""Run one release in its own Spark session whose tasks are retried (master local[2,3]).

    python -m tests.privacy.retry_job WORKDIR

Reads WORKDIR/config.json, runs the real ``run_release`` with a ``RecordingNoise`` that
records every draw per task attempt under WORKDIR/draws and fails the first attempt of
every task that draws noise, then writes WORKDIR/result.json. Launched by
test_recomputed_noise.py in a subprocess: local Spark retries a failed task only with a
``local[N,F]`` master, and the test process already has its one fixed session.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pyspark import cloudpickle

import tests.privacy.recording
from jobs.session import create_session, local_settings
from pipelines.config import config_from_mapping
from pipelines.job import run_release
from tests.privacy.recording import RecordingNoise

SETTINGS = {
    "spark.master": "local[2,3]",  # 2 threads, a task may fail up to 3 times
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.sql.adaptive.coalescePartitions.enabled": "false",
}


def main(workdir: Path) -> None:
    cloudpickle.register_pickle_by_value(tests.privacy.recording)  # type: ignore[no-untyped-call]
    config = config_from_mapping(json.loads((workdir / "config.json").read_text()))
    draws = workdir / "draws"
    draws.mkdir(exist_ok=True)
    session = create_session("dprelease-retry-test", local_settings() | SETTINGS)
    try:
        source = RecordingNoise(str(draws), fail_first_attempt=True)
        result = run_release(session, config, source=source)
    finally:
        session.stop()
    (workdir / "result.json").write_text(json.dumps({"path": result.path}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
