"""SIGINT and SIGTERM during a run: one line, the ledger entry failed, staging removed.

The job runs as a real `dprelease run` process (its own Spark driver); the signal comes
once the run is charged, while Spark works on the private rows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.errors import ExitCode
from tests.support import raw_job_config

REPO = Path(__file__).resolve().parents[2]


def _big_input(path: Path) -> Path:
    """Enough rows that the aggregation is still running a few seconds after the charge."""
    rows = 3_000_000
    table = pa.table(
        {
            "user": pa.array([f"u{i % 200_000}" for i in range(rows)]),
            "key": pa.array([f"k{i % 5000}" for i in range(rows)]),
            "value": pa.array([float(i % 10) for i in range(rows)]),
        }
    )
    path.mkdir(parents=True)
    pq.write_table(table, path / "part-0.parquet")
    return path


def _charged(ledger: Path) -> list[str]:
    if not ledger.is_file():
        return []
    try:
        with contextlib.closing(sqlite3.connect(ledger)) as connection:
            return [row[0] for row in connection.execute("SELECT status FROM ledger_entries")]
    except sqlite3.OperationalError:  # the ledger is being created
        return []


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, ExitCode.INTERRUPTED), (signal.SIGTERM, ExitCode.TERMINATED)],
)
def test_a_signal_after_the_charge_ends_cleanly(
    tmp_path: Path, signum: signal.Signals, code: ExitCode
) -> None:
    raw = raw_job_config(tmp_path / "releases", _big_input(tmp_path / "input"))
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(raw))
    ledger = tmp_path / "releases" / "_ledger" / "ledger.sqlite"
    env = os.environ | {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "run", str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while _charged(ledger) != ["reserved"] and process.poll() is None:
            assert time.monotonic() < deadline, "the run was never charged"
            time.sleep(0.05)
        time.sleep(1.0)  # into the pass over private rows
        process.send_signal(signum)
        out, err = process.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # an orphaned Spark JVM, if any
    text = err.decode(errors="replace")
    assert process.returncode == code, text[-3000:]
    assert out == b""
    ours = [line for line in text.splitlines() if " dprelease: " in line and "ERROR" in line]
    assert len(ours) == 1 and "charge stays" in ours[0], text[-3000:]
    assert "Traceback" not in text, text
    assert _charged(ledger) == ["failed"]
    assert not list((tmp_path / "releases" / "events" / "_staging").iterdir())
    assert not [p for p in (tmp_path / "releases" / "events").iterdir() if p.name.startswith("v")]
