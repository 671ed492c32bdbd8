"""Recomputed noise: each (partition, metric) is drawn once, even when a task is retried.

A subprocess (``tests/privacy/retry_job.py``, its own Spark session with master
``local[2,3]``) runs the real job with a recording NoiseSource that fails the FIRST attempt
of every noise task after drawing. The published release must then hold exactly the draws
of the successful attempts, one per (partition, metric); the failed attempts' draws must
be gone; ``dprelease verify`` passes; the ledger holds one published charge for the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from jobs.cli import main
from pipelines.config import config_from_mapping
from pipelines.errors import ExitCode
from pipelines.ledger import SqliteLedger
from pipelines.release import read_manifest
from tests.privacy.neighbours import EVENTS
from tests.privacy.recording import read_records
from tests.support import audit_config, public_selection, write_rows

REPO = Path(__file__).resolve().parents[2]
KEYS = 120
VALUE = 2.5


def units_of(i: int) -> int:
    return i % 5 + 1


def write_job(workdir: Path) -> dict[str, Any]:
    """Input (key k<i> has units_of(i) units, one row of VALUE each) and its config."""
    rows = [
        {"user": f"u{i}-{j}", "key": f"k{i}", "value": VALUE}
        for i in range(KEYS)
        for j in range(units_of(i))
    ]
    data = write_rows(workdir / "rows.parquet", rows, EVENTS)
    raw = audit_config(
        workdir / "releases",
        data,
        metrics=[
            {"metric": "count"},
            {"metric": "sum", "column": "value", "lower": 0.0, "upper": 10.0},
        ],
        budget={"epsilon": 0.01, "delta": 0.0},
        partition_selection=public_selection(workdir, [f"k{i}" for i in range(KEYS)]),
        post_processing={"clamp_negative_counts": False, "consistent_rows": False},
    )
    (workdir / "config.json").write_text(json.dumps(raw))
    return raw


def test_recomputed_noise_is_drawn_once_per_partition_and_metric_despite_a_task_retry(
    tmp_path: Path,
) -> None:
    raw = write_job(tmp_path)
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    run = subprocess.run(
        [sys.executable, "-m", "tests.privacy.retry_job", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    version = Path(json.loads((tmp_path / "result.json").read_text())["path"])
    assert main(["verify", str(version)]) == ExitCode.OK
    manifest = read_manifest(version)
    mechanisms = {m["name"]: m for m in manifest["mechanisms"]}
    kind = {name: f"laplace:{m['noise']['scale_exact']}" for name, m in mechanisms.items()}
    assert len(set(kind.values())) == len(kind)  # each metric's draws are identifiable

    records = read_records(tmp_path / "draws")
    failed = [r for r in records if r["attempt"] == 0]
    succeeded = [r for r in records if r["attempt"] > 0]
    # The failure was injected, and every noise task then succeeded on a retry.
    assert failed and succeeded
    assert {(r["stage"], r["partition"]) for r in failed} == {
        (r["stage"], r["partition"]) for r in succeeded
    }
    drawn: dict[str, list[int]] = {name: [] for name in kind}
    for record in succeeded:
        name = next(n for n, k in kind.items() if k == record["kind"])
        drawn[name].extend(record["values"])

    table = pq.read_table(version / "data").to_pylist()
    assert sorted(r["key"] for r in table) == sorted(f"k{i}" for i in range(KEYS))
    exact_units = {f"k{i}": units_of(i) for i in range(KEYS)}
    grid = Fraction(mechanisms["sum_value"]["grid"])
    value_units = int(Fraction(VALUE) / grid)
    released_noise = {
        "count": [r["count"] - exact_units[r["key"]] for r in table],
        "sum_value": [
            int(Fraction(r["sum_value"]) / grid) - exact_units[r["key"]] * value_units
            for r in table
        ],
    }
    for name in kind:
        # One successful draw per (partition, metric), and it is the one published.
        assert len(drawn[name]) == KEYS, name
        assert Counter(drawn[name]) == Counter(released_noise[name]), name
        # The failed attempts' draws are not what was published.
        lost = [v for r in failed if r["kind"] == kind[name] for v in r["values"]]
        assert not lost or Counter(lost) != Counter(released_noise[name])
    assert np.std(released_noise["count"]) > 10  # real noise, not a zero double

    ledger = SqliteLedger(config_from_mapping(raw).ledger_path)
    entries = list(ledger.entries())
    assert [(e.status, e.version) for e in entries] == [("published", version.name)]
