"""Consistent rows and reliability flags in a real release; broken files are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from pipelines.config import config_from_mapping
from pipelines.contracts import check_output_contract
from pipelines.derivation import RELIABILITY_RULE, unreliable
from pipelines.errors import OutputContractError
from pipelines.job import run_release
from pipelines.noising import release_schema
from pipelines.plan import build_plan
from pipelines.release import read_manifest
from pipelines.verification import check_values, verify_release
from tests.support import job_config, raw_job_config, released_row, staged_rows

KEYS = [f"k{i}" for i in range(300)]


@pytest.mark.parametrize(("noise", "shared"), [("laplace", False), ("gaussian", True)])
def test_every_released_row_is_consistent(
    spark: SparkSession, tmp_path: Path, events_path: Path, noise: str, shared: bool
) -> None:
    """300 public keys, most without data: their values are noise, crossing half the time;
    with ``shared``, the sum is derived from the mean's parts (shared parts)."""
    raw = raw_job_config(
        tmp_path / "releases",
        events_path,
        noise=noise,
        partition_selection={"mechanism": "public", "public_keys": {"values": {"key": KEYS}}},
    )
    raw["budget"] = {**raw["budget"], "share_parts": shared}
    result = run_release(spark, config_from_mapping(raw))
    version = Path(result.path)
    table = pq.read_table(version / "data")
    assert table.num_rows == len(KEYS)
    column = {name: np.asarray(table.column(name).to_pylist()) for name in table.column_names}
    count, units = column["count"], column["privacy_id_count"]
    assert (count >= units).all() and (units >= 0).all()
    assert (count == units).sum() > len(KEYS) / 10  # the crossed pairs, merged
    plan = build_plan(config_from_mapping(raw))
    encoding = next(o.encoding for o in plan.outputs if o.name == "sum_value")
    assert encoding is not None
    sums = column["sum_value"] / encoding.grid.step
    assert (sums == np.round(sums)).all()  # on its grid (half the mean's when shared)
    assert (sums >= count * encoding.lo_units).all() and (sums <= count * encoding.hi_units).all()
    for output in plan.outputs:
        low, high = column[f"{output.name}_ci_low"], column[f"{output.name}_ci_high"]
        assert (low <= column[output.name]).all() and (column[output.name] <= high).all()
    steps = {c["name"]: c["post_processing"] for c in read_manifest(version)["columns"]}
    assert any("weighted least-squares projection" in s for s in steps["privacy_id_count"])
    assert any("clipped to ['count' * lower" in s for s in steps["sum_value"])
    columns = {c["name"]: c for c in read_manifest(version)["columns"]}
    if shared:
        derived = columns["sum_value"]["derived_from"]
        assert derived["output"] == "mean_value"
        assert derived["mechanisms"] == ["mean_value.normalized_sum", "count"]
        mechanisms = {m["name"] for m in read_manifest(version)["mechanisms"]}
        assert "sum_value" not in mechanisms
    else:
        assert "derived_from" not in columns["sum_value"]
    assert verify_release(version) == []


def test_the_output_contract_refuses_an_inconsistent_row(tmp_path: Path) -> None:
    plan = build_plan(job_config(tmp_path, tmp_path / "unused.parquet"))
    encoding = plan.encodings["sum_value"]
    grid = encoding.grid.step
    schema = release_schema(plan, T.StructType([T.StructField("key", T.StringType())]))
    assert (
        check_output_contract(
            plan,
            schema,
            staged_rows(
                tmp_path / "good", [released_row(grid, "A", intervals_follow=True)], schema
            ),
        ).error
        is None
    )
    bad = [
        released_row(grid, "A", intervals_follow=True, privacy_id_count=8),  # more units than rows
        released_row(
            grid, "B", intervals_follow=True, sum_value=-grid
        ),  # negative, below count * lower = 0
        released_row(
            grid, "C", intervals_follow=True, sum_value=(7 * encoding.hi_units + 1) * grid
        ),  # above count * upper
    ]
    verdict = check_output_contract(plan, schema, staged_rows(tmp_path / "bad", bad, schema))
    assert isinstance(verdict.error, OutputContractError)
    message = str(verdict.error)
    assert "value above 'count' in column 'privacy_id_count'" in message
    assert "value outside [count*lower, count*upper] in column 'sum_value'" in message
    figures = verdict.results["output_values"]
    assert figures["success"] is False
    off = job_config(
        tmp_path, tmp_path / "unused.parquet", post_processing={"consistent_rows": False}
    )
    lenient = build_plan(off)
    assert (
        check_output_contract(lenient, schema, staged_rows(tmp_path / "off", bad, schema)).error
        is None
    )


def test_reliability_flags_are_released_stated_and_verified(
    spark: SparkSession, tmp_path: Path, events_path: Path
) -> None:
    raw = raw_job_config(
        tmp_path / "releases",
        events_path,
        partition_selection={"mechanism": "public", "public_keys": {"values": {"key": KEYS}}},
        post_processing={"reliability_share": 0.5},
    )
    version = Path(run_release(spark, config_from_mapping(raw)).path)
    table = pq.read_table(version / "data")
    manifest = read_manifest(version)
    for column in manifest["columns"]:
        name, flag = column["name"], column["reliability"]["column"]
        assert flag == f"{name}_unreliable" and flag in column["columns"]
        assert table.schema.field(flag).type == pa.bool_()
        assert column["reliability"] == {"column": flag, "share": 0.5, "rule": RELIABILITY_RULE}
        low, high = table.column(f"{name}_ci_low"), table.column(f"{name}_ci_high")
        expected = unreliable(table.column(name), low, high, 0.5)
        assert table.column(flag).to_pylist() == expected.tolist()
    assert table.column("count_unreliable").to_pylist().count(True) > len(KEYS) / 2  # noise only
    assert "count_unreliable" in (version / "README.md").read_text(encoding="utf-8")
    assert verify_release(version) == []
    flags = table.column("count_unreliable").to_pylist()
    flipped = table.set_column(
        table.schema.get_field_index("count_unreliable"),
        "count_unreliable",
        pa.array([not f for f in flags]),
    )
    assert any("count_unreliable" in p for p in check_values(flipped, manifest))


def test_the_output_contract_refuses_a_wrong_reliability_flag(tmp_path: Path) -> None:
    config = job_config(
        tmp_path, tmp_path / "unused.parquet", post_processing={"reliability_share": 0.5}
    )
    plan = build_plan(config)
    grid = plan.encodings["sum_value"].grid.step
    schema = release_schema(plan, T.StructType([T.StructField("key", T.StringType())]))
    good = released_row(grid, "A", intervals_follow=True) | {
        f"{o.name}_unreliable": False for o in plan.outputs
    }
    assert (
        check_output_contract(plan, schema, staged_rows(tmp_path / "good", [good], schema)).error
        is None
    )
    bad = [
        good | {"key": "B", "count_unreliable": True},  # zero-width interval: reliable
        good | {"key": "C", "count_ci_low": 0, "count_ci_high": 20},  # half-width 10 > 3.5
        good | {"key": "D", "mean_value_unreliable": None},
    ]
    verdict = check_output_contract(plan, schema, staged_rows(tmp_path / "bad", bad, schema))
    assert isinstance(verdict.error, OutputContractError)
    message = str(verdict.error)
    assert f"flag not {RELIABILITY_RULE} (share 0.5) in column 'count_unreliable'" in message
    assert "in column 'mean_value_unreliable'" in message
    figures = verdict.results["output_values"]
    assert figures["success"] is False
