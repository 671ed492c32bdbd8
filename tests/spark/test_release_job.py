"""End-to-end release job on local Spark: exact aggregates, layout, manifest, failures."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from dp_ops.noise import NoiseDistribution
from pipelines.errors import InputContractError
from pipelines.job import run_release
from pipelines.manifest import manifest_schema, validate_manifest
from pipelines.release import published_versions, read_manifest
from pipelines.verification import verify_release
from tests.doubles import ZeroNoise
from tests.support import job_config


def released_rows(version_path: str) -> dict[str, dict[str, Any]]:
    table = pq.read_table(Path(version_path) / "data")
    return {row["key"]: row for row in table.to_pylist()}


def test_noiseless_release_has_exact_bounded_aggregates(
    spark: SparkSession, tmp_path: Path, events_path: Path
) -> None:
    config = job_config(tmp_path, events_path)
    result = run_release(spark, config, source=ZeroNoise())
    rows = released_rows(result.path)
    assert set(rows) == {"A", "B", "C"}  # the null-key row is dropped, not released
    assert [rows[k]["privacy_id_count"] for k in "ABC"] == [2, 2, 1]
    # u1's cell in A has n = 3 rows: it counts c = min(3, Linf = 2); null unit and NaN
    # rows are dropped.
    assert [rows[k]["count"] for k in "ABC"] == [3, 2, 1]
    # Aggregate first: u1's cell total 12 lies inside [c*0, c*10] and is kept whole (row
    # sampling would have kept 8); clamping of values: 20 -> 10 and -5 -> 0.
    assert [rows[k]["sum_value"] for k in "ABC"] == [14.0, 10.0, 7.0]
    # u1's mean sum is scaled by c/n = 2/3: 2 rows of its mean 4, then u2's 2.
    assert rows["A"]["mean_value"] == pytest.approx(10 / 3, abs=1e-9)
    assert rows["B"]["mean_value"] == pytest.approx(5.0)
    assert rows["C"]["mean_value"] == pytest.approx(7.0)


def test_release_layout_manifest_and_verify(
    spark: SparkSession, tmp_path: Path, events_path: Path
) -> None:
    config = job_config(tmp_path, events_path)
    result = run_release(spark, config)
    version = Path(result.path)
    assert result.status == "published"
    assert version == tmp_path / "releases" / "events" / "v0001"
    assert sorted(p.name for p in version.iterdir()) == [
        "README.md",
        "SHA256SUMS",
        "card.html",
        "data",
        "manifest.json",
    ]
    # The checksum file covers the card.
    assert "  card.html\n" in (version / "SHA256SUMS").read_text()
    # The canonical layout: one file for a small release, named by its index and count.
    assert [p.name for p in (version / "data").iterdir()] == ["part-00000-of-00001.parquet"]
    assert not list((tmp_path / "releases" / "events" / "_staging").iterdir())
    assert verify_release(version) == []
    manifest = read_manifest(version)
    validate_manifest(manifest)
    assert manifest["privacy"]["epsilon"] <= 1.0
    assert manifest["privacy"]["delta"] <= 1e-6
    assert "v0001" in (version / "README.md").read_text()


def test_released_values_lie_on_the_grid_and_agree_with_the_manifest(
    spark: SparkSession, tmp_path: Path, events_path: Path
) -> None:
    config = job_config(
        tmp_path,
        events_path,
        partition_selection={
            "mechanism": "public",
            "public_keys": {"path": str(keys_file(tmp_path))},
        },
    )
    result = run_release(spark, config)
    manifest = read_manifest(Path(result.path))
    table = pq.read_table(Path(result.path) / "data")
    mechanisms = {m["name"]: m for m in manifest["mechanisms"]}
    for column in manifest["columns"]:
        name = column["name"]
        values = np.array(table.column(name).to_pylist(), dtype=float)
        low = np.array(table.column(f"{name}_ci_low").to_pylist(), dtype=float)
        high = np.array(table.column(f"{name}_ci_high").to_pylist(), dtype=float)
        std = np.array(table.column(f"{name}_std").to_pylist(), dtype=float)
        assert np.isfinite(values).all() and (low <= values).all() and (values <= high).all()
        if column["metric"] in ("count", "privacy_id_count", "sum"):
            grid = column.get("grid", 1.0)
            assert (values / grid == np.round(values / grid)).all()
            mechanism = mechanisms[name]
            assert std == pytest.approx(np.full(len(std), mechanism["std"]))
            if column["metric"] == "sum":
                assert np.allclose(high - low, 2 * mechanism["ci_half_width"])


def keys_file(tmp_path: Path, keys: tuple[str, ...] = ("A", "B", "Z")) -> Path:
    path = tmp_path / "keys.csv"
    path.write_text("key\n" + "\n".join(keys) + "\n")
    return path


def test_public_keys_are_all_emitted_and_other_rows_dropped_before_bounding(
    spark: SparkSession, tmp_path: Path, events_path: Path
) -> None:
    config = job_config(
        tmp_path,
        events_path,
        contribution_bounds={"max_partitions_per_unit": 1, "max_rows_per_unit_per_partition": 5},
        partition_selection={
            "mechanism": "public",
            "public_keys": {"path": str(keys_file(tmp_path, ("C", "Z")))},
        },
    )
    rows = released_rows(run_release(spark, config, source=ZeroNoise()).path)
    assert set(rows) == {"C", "Z"}  # Z has no row in the data and is still released
    assert rows["Z"]["privacy_id_count"] == 0 and rows["Z"]["count"] == 0
    # u3's rows in C survive L0 = 1 because rows outside the public keys were dropped first.
    assert rows["C"]["privacy_id_count"] == 1 and rows["C"]["count"] == 1
    manifest = read_manifest(Path(run_release(spark, config, supersede=True).path))
    assert manifest["partitions"]["mechanism"] == "public"
    assert manifest["privacy"]["delta"] == 0.0


def test_manifest_holds_only_allow_listed_keys_and_no_raw_statistic(
    spark: SparkSession, tmp_path: Path, events_path: Path
) -> None:
    config = job_config(tmp_path, events_path)
    version = Path(run_release(spark, config).path)
    manifest = read_manifest(version)
    schema = manifest_schema()

    def walk(node: Any, rule: dict[str, Any], path: str) -> None:
        if isinstance(node, dict):
            assert rule.get("additionalProperties") is False, f"{path} is not closed"
            for key, value in node.items():
                assert key in rule["properties"], f"{path}.{key} is not allow-listed"
                walk(value, rule["properties"][key], f"{path}.{key}")
        elif isinstance(node, list) and "items" in rule:
            for item in node:
                walk(item, rule["items"], path + "[]")

    walk(manifest, schema, "manifest")
    text = json.dumps(manifest)
    # Raw input facts (10 rows, 4 units, 3 kept keys, the raw values) never appear.
    for raw in ('"u1"', '"u2"', '"u3"', '"A"', '"B"', '"C"', "20.0", "-5.0"):
        assert raw not in text
    assert "input_rows" not in text and "dropped" not in text


class ExplodingNoise(ZeroNoise):
    """Fails inside the Spark task, after bounding and aggregation ran."""

    def integer_noise(self, distribution: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
        raise RuntimeError("injected failure in the noise step")


def test_a_failed_run_publishes_nothing_and_keeps_earlier_versions(
    spark: SparkSession, tmp_path: Path, events_path: Path
) -> None:
    config = job_config(tmp_path, events_path)
    first = Path(run_release(spark, config).path)
    before = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    with pytest.raises(Exception, match="injected failure"):
        run_release(spark, config, supersede=True, source=ExplodingNoise())
    missing = job_config(tmp_path, tmp_path / "nowhere.parquet")
    with pytest.raises(InputContractError, match="input"):
        run_release(spark, missing, supersede=True)
    release = tmp_path / "releases" / "events"
    assert [v.name for v in published_versions(release)] == ["v0001"]
    assert sorted(p.name for p in release.iterdir()) == ["_operator", "_staging", "v0001"]
    assert not list((release / "_staging").iterdir())
    assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == before
    assert verify_release(first) == []


def test_rerun_of_a_published_period_is_a_no_op_and_supersede_adds_a_version(
    spark: SparkSession, tmp_path: Path, events_path: Path
) -> None:
    config = job_config(tmp_path, events_path)
    first = run_release(spark, config)
    again = run_release(spark, config)
    assert again.status == "already_published" and again.version == first.version
    newer = run_release(spark, config, supersede=True)
    assert newer.version == "v0002"
    assert read_manifest(Path(newer.path))["release"]["supersedes"] == "v0001"


def test_verify_detects_a_tampered_file(
    spark: SparkSession, tmp_path: Path, events_path: Path
) -> None:
    version = Path(run_release(spark, job_config(tmp_path, events_path)).path)
    copy = tmp_path / "copy"
    shutil.copytree(version, copy)
    part = next((copy / "data").glob("*.parquet"))
    part.write_bytes(part.read_bytes()[:-8] + b"\x00" * 8)
    assert any("SHA-256" in p for p in verify_release(copy))
    (copy / "manifest.json").unlink()
    assert verify_release(copy) and "not a published version" in verify_release(copy)[0]


def test_gaussian_noise_release(spark: SparkSession, tmp_path: Path, events_path: Path) -> None:
    config = job_config(tmp_path, events_path, noise="gaussian")
    version = Path(run_release(spark, config).path)
    manifest = read_manifest(version)
    assert manifest["privacy"]["rho"] > 0
    assert manifest["privacy"]["epsilon"] <= 1.0 + 1e-9
    assert (
        math.isclose(manifest["privacy"]["delta"], 1e-6, rel_tol=1e-9)
        or manifest["privacy"]["delta"] < 1e-6
    )
    assert verify_release(version) == []
