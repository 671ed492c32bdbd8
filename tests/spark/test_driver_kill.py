"""SIGKILL the driver at each stage of a release: nothing partial is ever visible.

After each kill: every visible version verifies and none lacks its manifest; earlier
versions are intact; the killed run is charged in the ledger (it reserved before reading);
and a rerun succeeds, after which the ledger records every visible version as published.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pyspark.sql import SparkSession

from jobs.cli import main
from pipelines.errors import ExitCode
from pipelines.ledger import SqliteLedger
from pipelines.release import VERSION_PATTERN, published_versions, read_manifest
from pipelines.verification import verify_release
from tests.support import raw_job_config

REPO = Path(__file__).resolve().parents[2]
STAGES = ("before_aggregation", "after_noise", "during_publish", "after_publish")


def release_snapshot(release: Path, version: str) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in (release / version).rglob("*") if p.is_file()}


def kill_driver_at(stage: str, config: Path) -> None:
    """Run the job in its own process group, killed at ``stage``; reap its JVM too."""
    env = os.environ | {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.spark.crash_driver", stage, str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=900)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the orphaned Spark JVM, if any
    assert process.returncode == -signal.SIGKILL, err.decode(errors="replace")[-3000:]
    assert out == b""  # killed before any summary line


@pytest.mark.parametrize("stage", STAGES)
def test_driver_killed_at_a_stage_leaves_a_consistent_state(
    stage: str,
    spark: SparkSession,
    tmp_path: Path,
    events_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "releases"
    raw = raw_job_config(root, events_path)
    earlier = tmp_path / "earlier.yaml"
    earlier.write_text(yaml.safe_dump(raw | {"release": raw["release"] | {"data_period": "W47"}}))
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(raw | {"release": raw["release"] | {"data_period": "W48"}}))
    assert main(["run", str(earlier)], spark=spark) == ExitCode.OK
    release = root / "events"
    before = release_snapshot(release, "v0001")

    kill_driver_at(stage, job)

    # Only complete versions exist, and each verifies; v0001 is untouched.
    published = published_versions(release)
    expected = ["v0001", "v0002"] if stage == "after_publish" else ["v0001"]
    assert [v.name for v in published] == expected
    assert [p.name for p in release.iterdir() if VERSION_PATTERN.match(p.name)] == expected
    assert all(verify_release(v.path) == [] for v in published)
    assert release_snapshot(release, "v0001") == before
    # The killed run reserved before it read anything: it is charged, as 'reserved'.
    ledger = SqliteLedger(root / "_ledger" / "ledger.sqlite")
    first, killed = ledger.entries()
    assert (first.status, killed.status) == ("published", "reserved")
    assert ledger.state("events", "user", 1000.0, 1e-3).spent_epsilon == 2.0

    rerun = main(["run", str(job)], spark=spark)
    capsys.readouterr()

    published = published_versions(release)
    assert [v.name for v in published] == ["v0001", "v0002"]
    assert all(verify_release(v.path) == [] for v in published)
    entries = ledger.entries()
    if stage == "after_publish":
        # A no-op that reports the version the killed run published, and relabels its entry.
        assert rerun == ExitCode.ALREADY_PUBLISHED
        assert [(e.status, e.version) for e in entries] == [
            ("published", "v0001"),
            ("published", "v0002"),
        ]
        assert read_manifest(published[1].path)["release"]["run_id"] == killed.run_id
    else:
        assert rerun == ExitCode.OK
        # The killed attempt stays charged next to the rerun that published.
        assert [(e.status, e.version) for e in entries] == [
            ("published", "v0001"),
            ("reserved", None),
            ("published", "v0002"),
        ]
    charged = len(entries)
    assert ledger.state("events", "user", 1000.0, 1e-3).spent_epsilon == float(charged)
