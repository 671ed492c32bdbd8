"""Input and output contracts (Great Expectations) in every release: results, cost, blocking."""

from __future__ import annotations

import json
import logging
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pyspark import cloudpickle
from pyspark.sql import SparkSession
from pyspark.sql import types as T
from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition

import pipelines.job
from dp_ops.noise import NoiseDistribution
from jobs.cli import main
from pipelines.contracts import (
    INPUT_REPORT,
    OPERATOR,
    OUTPUT_REPORT,
    SUMMARY,
    check_output_contract,
)
from pipelines.errors import ExitCode, InputContractError, OutputContractError
from pipelines.job import run_release
from pipelines.noising import release_schema
from pipelines.plan import build_plan
from pipelines.release import published_versions, read_manifest
from pipelines.verification import verify_release
from tests.doubles import ZeroNoise
from tests.support import job_config, released_row, staged_rows, write_rows

# Executors unpickle this module's doubles and data source by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # type: ignore[no-untyped-call]

RULES = {
    "null_privacy_unit": "drop_row",
    "null_partition_key": "drop_row",
    "non_finite_value": "drop_row",
    "empty_input": "publish",
}


@pytest.fixture
def operator_log() -> Iterator[list[str]]:
    """Messages of the `dprelease` logger (it need not propagate to the root logger)."""
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("dprelease")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def operator_run(release: Path) -> Path:
    """The single run directory under the release's operator area."""
    runs = sorted((release / OPERATOR).iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def assert_gx_result(result: dict[str, Any], success: bool) -> None:
    """A serialized GX validation result with the given outcome."""
    assert result["success"] is success
    assert result["meta"]["great_expectations_version"]
    assert result["statistics"]["evaluated_expectations"] == len(result["results"]) > 0


@pytest.mark.parametrize("selection", ["truncated_geometric", "public"])
def test_both_contracts_run_in_every_release_and_counts_stay_operator_only(
    spark: SparkSession,
    tmp_path: Path,
    events_path: Path,
    selection: str,
    operator_log: list[str],
) -> None:
    keys = tmp_path / "keys.csv"
    keys.write_text("key\nA\nB\nC\n")
    overrides: dict[str, Any] = {}
    if selection == "public":
        overrides["partition_selection"] = {
            "mechanism": "public",
            "public_keys": {"path": str(keys)},
        }
    result = run_release(spark, job_config(tmp_path, events_path, **overrides))
    release = Path(result.path).parent
    run = operator_run(release)
    assert sorted(p.name for p in run.iterdir()) == [INPUT_REPORT, OUTPUT_REPORT, SUMMARY]
    inputs, outputs = read_json(run / INPUT_REPORT), read_json(run / OUTPUT_REPORT)
    assert set(inputs) == {"input_schema", "input_rows"}
    assert set(outputs) == {"output_schema", "output_values"}
    for validation in (*inputs.values(), *outputs.values()):
        assert_gx_result(validation, success=True)
    summary = read_json(run / SUMMARY)
    assert summary["status"] == "published"
    assert summary["version"] == "v0001"
    assert summary["output_contract"] == "passed"
    # events_path: 10 rows; one null unit, one null key, one NaN value are dropped.
    assert summary["input"]["rows_read"] == 10
    assert summary["input"]["rows_usable"] == 7
    dropped = {(r["rule"], r["column"]): r["rows"] for r in summary["input"]["rules"]}
    assert dropped == {
        ("null_privacy_unit", "user"): 1,
        ("null_partition_key", "key"): 1,
        ("non_finite_value", "value"): 1,
    }
    # The figures are operator-only: the log (stderr) points to the report, no count.
    assert "input contract: the figures are in the operator report (owner-only)" in operator_log
    assert not any(word in line for line in operator_log for word in ("dropped", "usable", "read,"))
    # Operator-only: owner-only permissions, nothing in the version, nothing in the manifest.
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert stat.S_IMODE((run / SUMMARY).stat().st_mode) == 0o600
    version = Path(result.path)
    assert sorted(p.name for p in version.iterdir()) == [
        "README.md",
        "SHA256SUMS",
        "card.html",
        "data",
        "manifest.json",
    ]
    manifest = read_manifest(version)
    assert manifest["contribution_bounds"]["invalid_values"] == RULES
    text = json.dumps(manifest)
    assert "rows_usable" not in text
    assert "rows_read" not in text
    assert "dropped" not in text
    assert not list((release / "_staging").iterdir())
    assert verify_release(version) == []


class NoNoiseAllowed(ZeroNoise):
    """Fails the run if any noise or keep decision is drawn."""

    def integer_noise(self, distribution: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
        raise RuntimeError("noise was drawn")

    def keep(self, probabilities: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        raise RuntimeError("noise was drawn")


def test_a_fail_rule_stops_the_run_before_any_noise_is_drawn(
    spark: SparkSession, tmp_path: Path, events_path: Path
) -> None:
    config = job_config(tmp_path, events_path, contracts={"non_finite_value": "fail"})
    with pytest.raises(
        InputContractError, match=r"rows with a null, NaN or infinite value in column 'value'"
    ):
        run_release(spark, config, source=NoNoiseAllowed())
    release = tmp_path / "releases" / "events"
    assert published_versions(release) == []
    assert not list((release / "_staging").iterdir())
    run = operator_run(release)
    assert not (run / OUTPUT_REPORT).exists()
    rows = read_json(run / INPUT_REPORT)["input_rows"]
    assert_gx_result(rows, success=False)
    failed = [r["expectation_config"]["meta"] for r in rows["results"] if not r["success"]]
    assert failed == [
        {
            "rule": "non_finite_value",
            "column": "value",
            "field": "metrics[2].column, metrics[3].column",
            "action": "fail",
        }
    ]
    assert read_json(run / SUMMARY)["status"] == "input_contract_failed"


def test_null_keys_are_counted_before_the_public_keys_filter(
    spark: SparkSession, tmp_path: Path, events_path: Path
) -> None:
    keys = tmp_path / "keys.csv"
    keys.write_text("key\nA\nB\n")
    config = job_config(
        tmp_path,
        events_path,
        partition_selection={"mechanism": "public", "public_keys": {"path": str(keys)}},
        contracts={"null_partition_key": "fail"},
    )
    with pytest.raises(
        InputContractError, match=r"partition key in column 'key' \(partition_columns\[0\]\)"
    ):
        run_release(spark, config, source=NoNoiseAllowed())


def test_empty_input_publish_makes_a_release_without_rows(
    spark: SparkSession, tmp_path: Path
) -> None:
    schema = pa.schema([("user", pa.string()), ("key", pa.string()), ("value", pa.float64())])
    rows = [{"user": None, "key": "A", "value": 1.0}]
    path = write_rows(tmp_path / "input" / "nulls.parquet", rows, schema)
    config = job_config(tmp_path, path, contracts={"empty_input": "publish"})
    result = run_release(spark, config)
    assert result.status == "published"
    assert result.row_count == 0
    assert verify_release(Path(result.path)) == []
    summary = read_json(operator_run(Path(result.path).parent) / SUMMARY)
    assert summary["input"]["rows_usable"] == 0


class CountingSource(DataSource):
    """Events from a Parquet file; every read of a partition is logged to a counter file."""

    @classmethod
    def name(cls) -> str:
        return "counting_events"

    def schema(self) -> str:
        return "user string, key string, value double"

    def reader(self, schema: T.StructType) -> DataSourceReader:
        return CountingReader(dict(self.options))


class CountingReader(DataSourceReader):
    def __init__(self, options: dict[str, str]) -> None:
        self.options = options

    def read(self, partition: InputPartition) -> Iterator[tuple[Any, ...]]:
        with open(self.options["counter"], "a", encoding="utf-8") as counter:
            counter.write("read\n")
        for row in pq.read_table(self.options["path"]).to_pylist():
            yield (row["user"], row["key"], row["value"])


def test_the_input_contract_adds_no_pass_over_the_input(
    spark: SparkSession, tmp_path: Path, events_path: Path
) -> None:
    """The input is read exactly once per release: contract figures ride on the release's pass."""
    spark.dataSource.register(CountingSource)
    counter = tmp_path / "reads.txt"
    config = job_config(
        tmp_path,
        events_path,
        input={
            "path": str(events_path),
            "format": "counting_events",
            "options": {"counter": str(counter)},
        },
    )
    result = run_release(spark, config, source=ZeroNoise())
    assert result.status == "published"
    assert counter.read_text().splitlines() == ["read"]
    summary = read_json(operator_run(Path(result.path).parent) / SUMMARY)
    assert summary["input"]["rows_read"] == 10


class WrappingNoise(ZeroNoise):
    """Noise so large that int64 arithmetic wraps: intervals come out inverted (a bug to catch)."""

    def integer_noise(self, distribution: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
        return np.full(size, np.iinfo(np.int64).max, dtype=np.int64)


def test_a_failing_output_contract_blocks_publishing_with_exit_7(
    spark: SparkSession,
    tmp_path: Path,
    events_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = job_config(tmp_path, events_path)
    first = Path(run_release(spark, config).path)
    before = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    capsys.readouterr()
    monkeypatch.setattr(pipelines.job, "SecureNoise", WrappingNoise)
    assert main(["run", str(path), "--supersede"], spark=spark) == ExitCode.OUTPUT_CONTRACT_FAILED
    out, err = capsys.readouterr()
    assert out == ""
    assert "output: the release breaks its contract" in err and "charge stays" in err
    assert "value outside [ci_low, ci_high] in column 'count'" in err
    release = first.parent
    assert [v.name for v in published_versions(release)] == ["v0001"]
    assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == before
    assert not list((release / "_staging").iterdir())
    failed_run = next(
        run
        for run in (release / OPERATOR).iterdir()
        if read_json(run / SUMMARY)["status"] != "published"
    )
    assert read_json(failed_run / SUMMARY)["status"] == "output_contract_failed"
    assert_gx_result(read_json(failed_run / OUTPUT_REPORT)["output_values"], success=False)


def test_the_output_contract_names_every_broken_rule(spark: SparkSession, tmp_path: Path) -> None:
    plan = build_plan(job_config(tmp_path, tmp_path / "unused.parquet"))
    grid = plan.encodings["sum_value"].grid.step
    fields = list(release_schema(plan, T.StructType([T.StructField("key", T.StringType())])))
    schema = pa.schema(fields)

    def row(key: str, **changes: Any) -> dict[str, Any]:
        return released_row(grid, key, **changes)

    keys = T.StructType([T.StructField("key", T.StringType())])
    expected = release_schema(plan, keys)
    good = staged_rows(tmp_path / "good", [row("A"), row("B")], schema)
    assert check_output_contract(plan, expected, good).error is None

    bad_rows = [
        row("A", count=9),  # above its ci_high
        row("A"),  # duplicate key
        row("B", sum_value=4.5 * grid, sum_value_ci_high=5 * grid),  # off the grid
        row("C", mean_value=float("nan")),
        row("D", mean_value=11.0, mean_value_ci_high=11.0),  # outside [lower, upper]
        row("E", privacy_id_count=-1, privacy_id_count_ci_low=-1),  # negative count
    ]
    verdict = check_output_contract(plan, expected, staged_rows(tmp_path / "bad", bad_rows, schema))
    assert isinstance(verdict.error, OutputContractError)
    message = str(verdict.error)
    for part in (
        "value outside [ci_low, ci_high] in column 'count'",
        "duplicate key in column 'key'",
        "off the grid",
        "null, NaN or infinite value in column 'mean_value'",
        "value outside [0, 10] in column 'mean_value'",
        "negative count in column 'privacy_id_count'",
    ):
        assert part in message
    assert verdict.results["output_values"]["success"] is False

    missing = schema.remove(schema.get_field_index("mean_value_std"))
    rows = [{k: v for k, v in row("A").items() if k != "mean_value_std"}]
    verdict = check_output_contract(plan, expected, staged_rows(tmp_path / "schema", rows, missing))
    assert isinstance(verdict.error, OutputContractError)
    assert "release schema" in str(verdict.error)
    assert verdict.results["output_schema"]["success"] is False


@pytest.mark.parametrize(("keys_text", "matched"), [("key\nA\nB\nZ\n", 2), ("key\na\nb\n", 0)])
def test_the_operator_report_says_how_many_public_keys_matched(
    spark: SparkSession,
    tmp_path: Path,
    events_path: Path,
    keys_text: str,
    matched: int,
    operator_log: list[str],
) -> None:
    """Keys that differ from the data by case match nothing: the release is pure noise.
    The report (operator-only) flags it; the log line is the same either way."""
    keys = tmp_path / "keys.csv"
    keys.write_text(keys_text)
    public = {"mechanism": "public", "public_keys": {"path": str(keys)}}
    config = job_config(tmp_path, events_path, partition_selection=public)
    run_release(spark, config)
    summary = read_json(operator_run(tmp_path / "releases" / "events") / SUMMARY)
    listed = keys_text.count("\n") - 1
    assert summary["public_keys"] == {
        "listed": listed,
        "matched": matched,
        "none_matched": matched == 0,
    }
    assert "public keys: how many matched the data is in the operator report" in operator_log
