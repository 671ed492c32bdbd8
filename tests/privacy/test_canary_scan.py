"""Metadata leak: a canary key (held by one unit) and a canary value never escape.

The canary key is held by exactly one unit, so DP selection releases it with probability
delta_p (1e-6 here); the canary value is one row's raw value in a released partition,
where only noisy sums and means of it are published. Neither may appear in: the
``dprelease`` log records, anything printed on stdout/stderr, error messages, the
manifest, README and release card, any file or directory name under the output root
(releases, operator area, ledger), any file's bytes, Parquet footers (key-value metadata, schema)
or Parquet column statistics (row-group min/max), unless DP selection released the key.
test_bad_input.py already checks that failing runs never echo unit ids or keys; this
adds successful runs, the canary value, the ledger, footers and statistics, and (full
tier) the Spark JVM's own stderr through a CLI subprocess.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from pyspark.sql import SparkSession

from jobs.cli import main
from pipelines.config import config_from_mapping
from pipelines.errors import ExitCode, InputContractError
from pipelines.job import run_release
from tests.privacy.neighbours import EVENTS
from tests.support import audit_config, write_rows

REPO = Path(__file__).resolve().parents[2]
CANARY_KEY = "key-QVXCANARYKEY7731"
CANARY_VALUE = 4.242424242424242
VALUE_FORMS = (repr(CANARY_VALUE), f"{CANARY_VALUE:.6g}", f"{CANARY_VALUE:.10g}", "4.2424")
VALUE_BYTES = (struct.pack("<d", CANARY_VALUE), struct.pack(">d", CANARY_VALUE))


@pytest.fixture
def dprelease_log() -> Iterator[list[str]]:
    """Every record of the `dprelease` logger, at every level, with tracebacks."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("dprelease")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def canary_rows(extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """40 units in key A (released), the canary value in one of them, the canary key alone."""
    rows = [{"user": f"u{i}", "key": "A", "value": 3.0} for i in range(40)]
    rows.append({"user": "u0", "key": "A", "value": CANARY_VALUE})
    rows.append({"user": "lonely", "key": CANARY_KEY, "value": 1.0})
    return rows + (extra or [])


def canary_config(directory: Path, rows: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    data = write_rows(directory / "input" / "rows.parquet", rows, EVENTS)
    return audit_config(
        directory / "out",
        data,
        budget={"epsilon": 2.0, "delta": 4e-6},  # delta_p = 1e-6 for the canary key
        **overrides,
    )


def leaks_in_text(text: str, key_released: bool = False) -> list[str]:
    found = [form for form in VALUE_FORMS if form in text]
    if not key_released and "QVXCANARYKEY" in text:
        found.append("canary key")
    return found


def scan_tree(root: Path, key_released: bool) -> list[str]:
    """Canary findings in names, bytes and Parquet metadata of every file under root."""
    findings: list[str] = []
    for path in sorted(root.rglob("*")):
        where = str(path.relative_to(root))
        released_data = key_released and "/data/" in f"/{where}" and "_operator" not in where
        findings += [f"{where}: name has {f}" for f in leaks_in_text(path.name)]
        if not path.is_file():
            continue
        content = path.read_bytes()
        findings += [f"{where}: bytes of the canary value" for b in VALUE_BYTES if b in content]
        text = content.decode("utf-8", errors="replace")
        findings += [f"{where}: {f}" for f in leaks_in_text(text, released_data)]
        if path.suffix == ".parquet":
            findings += [f"{where}: {f}" for f in parquet_findings(path, released_data)]
    return findings


def parquet_findings(path: Path, key_released: bool) -> list[str]:
    """Canary in the footer's key-value metadata, schema, or any row-group statistics."""
    metadata = pq.read_metadata(path)
    texts = [str(metadata.schema)]
    for key, value in (metadata.metadata or {}).items():
        texts.append(key.decode("utf-8", "replace") + value.decode("utf-8", "replace"))
    findings = [f"footer: {f}" for t in texts for f in leaks_in_text(t, key_released)]
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            stats = column.statistics
            if stats is None or not stats.has_min_max:
                continue
            for bound in (stats.min, stats.max):
                if bound == CANARY_VALUE or leaks_in_text(str(bound), key_released):
                    findings.append(f"statistics of {column.path_in_schema}: {bound!r}")
    return findings


def test_metadata_leak_canary_scan_of_a_successful_run(
    spark: SparkSession,
    tmp_path: Path,
    dprelease_log: list[str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    raw = canary_config(tmp_path, canary_rows())
    capfd.readouterr()
    result = run_release(spark, config_from_mapping(raw))
    out, err = capfd.readouterr()
    version = Path(result.path)
    released = set(pq.read_table(version / "data").column("key").to_pylist())
    assert "A" in released
    key_released = CANARY_KEY in released  # probability delta_p = 1e-6
    assert leaks_in_text("\n".join(dprelease_log)) == []
    assert leaks_in_text(out + err) == []
    assert leaks_in_text((version / "manifest.json").read_text(), key_released) == []
    assert leaks_in_text((version / "README.md").read_text(), key_released) == []
    assert leaks_in_text((version / "card.html").read_text(), key_released) == []
    assert scan_tree(tmp_path / "out", key_released) == []


def test_metadata_leak_canary_scan_of_failing_runs(
    spark: SparkSession,
    tmp_path: Path,
    dprelease_log: list[str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A fail rule tripped by the canary unit's own row: the error names columns only."""
    bad = [{"user": "lonely", "key": CANARY_KEY, "value": float("nan")}]
    raw = canary_config(tmp_path, canary_rows(bad), contracts={"non_finite_value": "fail"})
    capfd.readouterr()
    with pytest.raises(InputContractError) as error:
        run_release(spark, config_from_mapping(raw))
    out, err = capfd.readouterr()
    assert leaks_in_text(str(error.value)) == []
    assert leaks_in_text("\n".join(dprelease_log) + out + err) == []
    assert scan_tree(tmp_path / "out", key_released=False) == []
    # The same through the CLI (exit 4, one operator log line).
    config = tmp_path / "job.yaml"
    raw["release"]["data_period"] = "P2"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main(["run", str(config)], spark=spark) == ExitCode.INPUT_CONTRACT_FAILED
    out, err = capfd.readouterr()
    assert leaks_in_text(out + err) == []


@pytest.mark.privacy_full
def test_metadata_leak_canary_scan_of_spark_stderr(tmp_path: Path) -> None:
    """`dprelease run` in its own process: its whole stderr (Python and the JVM) is scanned."""
    raw = canary_config(tmp_path, canary_rows())
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    run = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == ExitCode.OK, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    version = Path(summary["path"])
    released = set(pq.read_table(version / "data").column("key").to_pylist())
    key_released = CANARY_KEY in released
    assert leaks_in_text(run.stderr) == []
    assert leaks_in_text(run.stdout, key_released) == []
    assert scan_tree(tmp_path / "out", key_released) == []


def test_metadata_leak_scanner_finds_planted_canaries(tmp_path: Path) -> None:
    """Power: the scan flags the canaries in a file name, footer, statistics and bytes."""
    rows = [{"user": "x", "key": CANARY_KEY, "value": CANARY_VALUE}]
    write_rows(tmp_path / "data" / "part-0.parquet", rows, EVENTS)
    (tmp_path / f"log-{CANARY_KEY}.txt").write_text("nothing")
    findings = scan_tree(tmp_path, key_released=False)
    assert any("statistics of key" in f for f in findings), findings
    assert any("statistics of value" in f for f in findings), findings
    assert any("name has canary key" in f for f in findings), findings
    assert any("bytes of the canary value" in f for f in findings), findings
    assert leaks_in_text(f"value {CANARY_VALUE}") and leaks_in_text(f"key {CANARY_KEY}")
