"""What is published besides the noisy values: row order, files, types, rounding, signals.

Each test runs the real job on neighbouring datasets D and D' (they differ by one privacy
unit) with a noise double that makes the released *table* equal, and asserts that the
published bytes are equal too: the layout may depend only on the released table
(docs/privacy.md §9).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from jobs.cli import main
from pipelines.config import ConfigError, config_from_mapping, release_from_mapping
from pipelines.errors import ExitCode
from pipelines.job import run_release
from pipelines.plan import build_plan
from tests.doubles import CertainKeysOnly, ZeroNoise
from tests.support import audit_config

EVENTS = pa.schema([("user", pa.string()), ("key", pa.string()), ("value", pa.float64())])


def _base_rows(keys: int = 12, units: int = 40) -> list[dict[str, Any]]:
    """``keys`` keys of ``units`` units each: every key is kept with probability 1."""
    return [
        {"user": f"u{k}-{u}", "key": f"k{k:02d}", "value": float(u % 10)}
        for k in range(keys)
        for u in range(units)
    ]


def _write(path: Path, rows: list[dict[str, Any]], files: int = 1) -> Path:
    path.mkdir(parents=True)
    table = pa.Table.from_pylist(rows, schema=EVENTS)
    step = -(-table.num_rows // files)
    for index in range(files):
        pq.write_table(table.slice(index * step, step), path / f"part-{index}.parquet")
    return path


def _published_files(version: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((version / "data").iterdir())}


def _run(spark: SparkSession, root: Path, rows: list[dict[str, Any]], **overrides: Any) -> Path:
    files = overrides.pop("files", 1)
    source = overrides.pop("source", CertainKeysOnly())
    data = _write(root / "input", rows, files)
    config = config_from_mapping(audit_config(root / "releases", data, **overrides))
    result = run_release(spark, config, source=source)
    return Path(result.path)


def test_row_order_and_files_depend_only_on_the_released_table(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Adding one unit with one row in a fresh key (kept with probability < 1, so not
    released by the double) leaves every published byte as it was, and so does the
    input's file layout."""
    rows = _base_rows()
    extra = [{"user": "newcomer", "key": "a-new-key", "value": 3.0}]
    d = _run(spark, tmp_path / "d", rows + extra, files=7)
    d_prime = _run(spark, tmp_path / "d_prime", rows, files=1)
    assert _published_files(d) == _published_files(d_prime)
    table = pq.read_table(d / "data")
    keys = table.column("key").to_pylist()
    assert keys == sorted(keys) and len(keys) == 12
    assert [p.name for p in (d / "data").iterdir()] == ["part-00000-of-00001.parquet"]


def test_public_keys_layout_ignores_a_heavy_non_public_unit(
    spark: SparkSession, tmp_path: Path
) -> None:
    """A unit with many rows under a non-public key (dropped before bounding) must not
    change the join strategy's footprint on the published files."""
    rows = _base_rows(keys=6, units=5)
    heavy = [{"user": "heavy", "key": "not-public", "value": 1.0}] * 200_000
    keys_file = tmp_path / "keys.csv"
    keys_file.write_text("key\n" + "".join(f"k{k:02d}\n" for k in range(6)) + "k99\n")
    public = {"mechanism": "public", "public_keys": {"path": str(keys_file)}}
    budget = {"epsilon": 4.0, "delta": 0.0}
    d = _run(
        spark,
        tmp_path / "d",
        rows + heavy,
        partition_selection=public,
        budget=budget,
        source=ZeroNoise(),
        files=8,
    )
    d_prime = _run(
        spark,
        tmp_path / "d_prime",
        rows,
        partition_selection=public,
        budget=budget,
        source=ZeroNoise(),
    )
    assert _published_files(d) == _published_files(d_prime)
    assert pq.read_table(d / "data").column("key").to_pylist() == [
        *(f"k{k:02d}" for k in range(6)),
        "k99",
    ]


def _json_rows(path: Path, lines: list[str]) -> Path:
    path.mkdir(parents=True)
    (path / "part-0.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_key_types_come_from_the_config_not_from_private_rows(
    spark: SparkSession, tmp_path: Path
) -> None:
    """JSON input with integer keys; D adds one unit whose key is a string. The release
    schema is the declared one in both runs, and the bad key is an invalid row."""
    base = [
        json.dumps({"user": f"u{k}-{u}", "key": k, "value": 1.0})
        for k in range(5)
        for u in range(40)
    ]
    odd = json.dumps({"user": "odd", "key": "not-a-number", "value": 1.0})
    schemas = []
    for name, lines in (("d", [*base, odd]), ("d_prime", base)):
        data = _json_rows(tmp_path / name / "input", lines)
        raw = audit_config(
            tmp_path / name / "releases",
            data,
            input={"path": str(data), "format": "json", "schema": {"key": "long"}},
        )
        result = run_release(spark, config_from_mapping(raw), source=CertainKeysOnly())
        table = pq.read_table(Path(result.path) / "data")
        schemas.append(table.schema)
        assert table.schema.field("key").type == pa.int64()
        assert table.column("key").to_pylist() == [0, 1, 2, 3, 4]
    assert schemas[0] == schemas[1]


def test_rounded_means_stay_inside_their_bounds(spark: SparkSession, tmp_path: Path) -> None:
    """Bounds [0.3, 0.7]: decimals 0 leaves no released value inside, so the plan refuses
    it; decimals 1 releases means inside [0.3, 0.7] (no slack in the output contract)."""
    metrics = [
        {"metric": "count"},
        {"metric": "mean", "column": "value", "lower": 0.3, "upper": 0.7},
    ]
    raw = audit_config(tmp_path / "r", tmp_path / "x", metrics=metrics)
    with pytest.raises(ConfigError, match=r"post_processing\.decimals"):
        build_plan(config_from_mapping(raw | {"post_processing": {"decimals": 0}}))
    rows = [r | {"value": 0.0 if i % 2 else 1.0} for i, r in enumerate(_base_rows(keys=4))]
    version = _run(
        spark,
        tmp_path / "one",
        rows,
        metrics=metrics,
        post_processing={"decimals": 1},
        source=None,
    )
    table = pq.read_table(version / "data")
    for column in ("mean_value", "mean_value_ci_low", "mean_value_ci_high"):
        assert all(0.3 <= v <= 0.7 for v in table.column(column).to_pylist())


def _cli_run(spark: SparkSession, root: Path, rows: list[dict[str, Any]], **overrides: Any) -> int:
    data = _write(root / "input", rows)
    raw = audit_config(root / "releases", data, **overrides)
    config = root / "job.yaml"
    config.write_text(json.dumps(raw), encoding="utf-8")
    return main(["run", str(config)], spark=spark)


def test_stdout_and_stderr_carry_no_raw_count(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """4913 rows read, 4912 usable, 1 dropped: none of these exact figures may reach the
    operator's terminal or the orchestrator's task log; they stay in ``_operator/``."""
    rows = [{"user": f"u{i % 300}", "key": f"k{i % 7}", "value": 1.0} for i in range(4912)]
    rows.append({"user": None, "key": "k0", "value": 1.0})
    assert _cli_run(spark, tmp_path, rows) == ExitCode.OK
    captured = capsys.readouterr()
    for text in (captured.out, captured.err):
        assert not re.search(r"(?<![\d.])(4913|4912)(?![\d.])", text), text
    summary = next(tmp_path.glob("releases/audit/_operator/*/summary.json"))
    assert json.loads(summary.read_text())["input"]["rows_usable"] == 4912


def test_empty_input_exits_as_a_non_empty_one_by_default(
    spark: SparkSession, tmp_path: Path
) -> None:
    """D has one valid unit, D' has none (its only row has a null value): by default both
    runs publish and exit 0, so the exit code carries no bit about the data."""
    valid = [{"user": "only", "key": "k0", "value": 1.0}]
    invalid = [{"user": "only", "key": "k0", "value": None}]
    assert _cli_run(spark, tmp_path / "d", valid) == ExitCode.OK
    assert _cli_run(spark, tmp_path / "d_prime", invalid) == ExitCode.OK


def test_the_manifest_carries_no_run_duration(spark: SparkSession, tmp_path: Path) -> None:
    """The run id is random: with a start time in it, the manifest's created_at would give
    the run's duration, which grows with the private input."""
    version = _run(spark, tmp_path / "one", _base_rows(keys=2))
    release = json.loads((version / "manifest.json").read_text())["release"]
    assert re.fullmatch(r"[0-9a-f]{32}", release["run_id"])


def _tables_release(
    spark: SparkSession, root: Path, rows: list[dict[str, Any]], files: int
) -> Path:
    """A release of two tables over ``rows`` (both by key, other metrics and bounds)."""
    data = _write(root / "input", rows, files)
    single = audit_config(root / "releases", data)
    shared = {k: single[k] for k in ("release", "input", "privacy_unit", "budget", "ledger")}
    tables = [
        {
            "name": name,
            "partition_columns": ["key"],
            "metrics": metrics,
            "contribution_bounds": {
                "max_partitions_per_unit": l0,
                "max_rows_per_unit_per_partition": 2,
            },
        }
        for name, metrics, l0 in (
            ("counts", [{"metric": "count"}], 1),
            ("sums", [{"metric": "sum", "column": "value", "lower": 0.0, "upper": 10.0}], 2),
        )
    ]
    spec = release_from_mapping(shared | {"tables": tables})
    return Path(run_release(spark, spec, source=CertainKeysOnly()).path)


def test_every_table_of_a_release_has_a_layout_of_its_released_rows_only(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Neighbours one unit apart (a fresh key, kept with probability < 1) and inputs in 7
    files against 1 publish the same bytes in every table of a release of several."""
    rows = _base_rows()
    extra = [{"user": "newcomer", "key": "a-new-key", "value": 3.0}]
    d = _tables_release(spark, tmp_path / "d", rows + extra, files=7)
    d_prime = _tables_release(spark, tmp_path / "d_prime", rows, files=1)

    def files(version: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(version)): p.read_bytes()
            for p in sorted((version / "tables").rglob("*"))
            if p.is_file()
        }

    assert files(d) == files(d_prime) and len(files(d)) == 2
