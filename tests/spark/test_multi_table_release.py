"""A release of several tables on a real Spark session: one read, one charge, one
atomic publication under ``tables/<name>/``, one manifest, README and card."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from dp_ops.noise import DiscreteLaplace, NoiseDistribution
from pipelines.config import ReleaseSpec, release_from_mapping
from pipelines.integrity import open_ledger
from pipelines.job import run_release
from pipelines.manifest import table_views
from pipelines.release import published_versions, read_manifest
from pipelines.release_plan import build_release_plans
from pipelines.verification import verify_release
from tests.doubles import ZeroNoise
from tests.support import HUGE_LIFETIME, write_rows

ROWS = pa.schema(
    [
        ("user", pa.string()),
        ("key", pa.string()),
        ("region", pa.string()),
        ("week", pa.int32()),
        ("value", pa.float64()),
    ]
)
REGIONS = ["north", "south", "east"]


@pytest.fixture
def rows_path(tmp_path: Path) -> Path:
    """120 users; each has rows in a few keys, one region and two weeks."""
    rows = [
        {
            "user": f"u{u}",
            "key": f"k{(u + i) % 4}",
            "region": REGIONS[u % 3],
            "week": 1 + (u + i) % 2,
            "value": float((u * 7 + i) % 10),
        }
        for u in range(120)
        for i in range(3)
    ]
    return write_rows(tmp_path / "input" / "rows.parquet", rows, ROWS)


def release_mapping(output_root: Path, input_path: Path) -> dict[str, Any]:
    """Three tables: by key (private selection), by region and by region-week (public)."""
    bounds = {"max_partitions_per_unit": 2, "max_rows_per_unit_per_partition": 2}
    return {
        "release": {"name": "weekly", "data_period": "2026-W01", "output_root": str(output_root)},
        "input": {"path": str(input_path)},
        "privacy_unit": {"column": "user"},
        "budget": {"epsilon": 3.0, "delta": 1e-6},
        "ledger": {"dataset": "weekly", "lifetime_budget": HUGE_LIFETIME},
        "tables": [
            {
                "name": "by_key",
                "partition_columns": ["key"],
                "contribution_bounds": bounds,
                "metrics": [{"metric": "privacy_id_count"}, {"metric": "count"}],
            },
            {
                "name": "by_region",
                "partition_columns": ["region"],
                "contribution_bounds": bounds,
                "metrics": [{"metric": "count"}],
                "partition_selection": {
                    "mechanism": "public",
                    "public_keys": {"values": {"region": [*REGIONS, "west"]}},
                },
            },
            {
                "name": "by_region_week",
                "partition_columns": ["region", "week"],
                "contribution_bounds": bounds,
                "metrics": [
                    {"metric": "count"},
                    {"metric": "sum", "column": "value", "lower": 0.0, "upper": 1000.0},
                ],
                "partition_selection": {
                    "mechanism": "public",
                    "public_keys": {"values": {"region": REGIONS, "week": {"range": [1, 3]}}},
                },
            },
        ],
    }


def spec_of(raw: dict[str, Any]) -> ReleaseSpec:
    return release_from_mapping(copy.deepcopy(raw))


class FailsOnScale(ZeroNoise):
    """Zero noise, except that a draw at one Laplace scale fails (a fault in one table)."""

    def __init__(self, scale: object) -> None:
        self.scale = scale

    def integer_noise(self, distribution: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
        if isinstance(distribution, DiscreteLaplace) and distribution.scale == self.scale:
            raise RuntimeError("injected failure in the last table")
        return super().integer_noise(distribution, size)


def test_three_tables_publish_atomically_verify_and_are_charged_once(
    spark: SparkSession, tmp_path: Path, rows_path: Path
) -> None:
    spec = spec_of(release_mapping(tmp_path / "releases", rows_path))
    result = run_release(spark, spec)
    version = Path(result.path)
    assert sorted(p.name for p in version.iterdir()) == [
        "README.md", "SHA256SUMS", "card.html", "manifest.json", "tables"
    ]  # fmt: skip
    assert sorted(p.name for p in (version / "tables").iterdir()) == [
        "by_key", "by_region", "by_region_week"
    ]  # fmt: skip
    assert verify_release(version) == []
    manifest = read_manifest(version)
    views = table_views(manifest)
    assert [v.name for v in views] == ["by_key", "by_region", "by_region_week"]
    region = pq.read_table(version / "tables" / "by_region").to_pylist()
    assert sorted(r["region"] for r in region) == sorted([*REGIONS, "west"])  # every public key
    region_week = pq.read_table(version / "tables" / "by_region_week").to_pylist()
    assert len(region_week) == 9  # three regions times weeks 1..3, week 3 absent from the data
    # One charge, equal to the manifest's total, the sum of the tables' spends.
    entries = open_ledger(spec.config).entries("weekly")
    assert [e.status for e in entries] == ["published"]
    spends = manifest["composition"]["tables"]
    assert entries[0].epsilon == manifest["privacy"]["epsilon"] == result.epsilon
    assert manifest["privacy"]["epsilon"] == pytest.approx(sum(t["epsilon"] for t in spends))
    assert manifest["privacy"]["epsilon"] <= 3.0 * (1 + 1e-9)
    assert entries[0].delta == manifest["privacy"]["delta"] <= 1e-6
    assert result.row_count == sum(v.manifest["data"]["row_count"] for v in views)
    readme = (version / "README.md").read_text("utf-8")
    for view in views:
        assert f"## Table `{view.name}`" in readme
        assert f"under `tables/{view.name}/`" in readme
    assert f"{manifest['privacy']['epsilon']:.6g}" in readme
    card = (version / "card.html").read_text("utf-8")
    assert all(f'id="table-{v.name}"' in card for v in views)
    # verify checks every table: a changed file or a stray table is caught.
    part = next((version / "tables" / "by_region").glob("*.parquet"))
    part.write_bytes(part.read_bytes() + b"x")
    (version / "tables" / "extra").mkdir()
    problems = verify_release(version)
    assert any(p.startswith("tables/by_region/part-") and "SHA-256" in p for p in problems)
    assert "tables/extra: present but not listed in the manifest" in problems


def test_a_fault_in_the_last_table_publishes_nothing(
    spark: SparkSession, tmp_path: Path, rows_path: Path
) -> None:
    raw = release_mapping(tmp_path / "releases", rows_path)
    spec = spec_of(raw)
    last = build_release_plans(spec).tables[-1].plan
    noise = last.aggregate("sum_value").noise
    assert isinstance(noise, DiscreteLaplace)
    scale = noise.scale
    earlier = [a.noise for t in build_release_plans(spec).tables[:-1] for a in t.plan.aggregates]
    assert all(getattr(n, "scale", None) != scale for n in earlier)  # only the last table fails
    with pytest.raises(Exception, match="injected failure in the last table"):
        run_release(spark, spec, source=FailsOnScale(scale))
    release = tmp_path / "releases" / "weekly"
    assert published_versions(release) == []
    assert not list((release / "_staging").iterdir())
    assert [e.status for e in open_ledger(spec.config).entries("weekly")] == ["failed"]
    # The same release then publishes as one version.
    run_release(spark, spec, source=ZeroNoise())
    assert [v.name for v in published_versions(release)] == ["v0001"]


def test_the_input_is_read_once_for_every_table(
    spark: SparkSession, tmp_path: Path, rows_path: Path
) -> None:
    """Noiseless, each table's totals are the exact bounded totals of its own grouping:
    the tables share one read of the input and bound contributions separately."""
    spec = spec_of(release_mapping(tmp_path / "releases", rows_path))
    version = Path(run_release(spark, spec, source=ZeroNoise()).path)
    tables = {
        name: pq.read_table(version / "tables" / name).to_pylist()
        for name in ("by_key", "by_region", "by_region_week")
    }
    # Each user has 3 rows in one region: L0 = 2 keeps its one region, Linf = 2 of 3 rows.
    assert sum(r["count"] for r in tables["by_region"]) == 120 * 2
    # By key: each user has rows in 3 keys (one each); L0 = 2 keeps two of them.
    assert sum(r["count"] for r in tables["by_key"]) == 120 * 2
    assert sum(r["privacy_id_count"] for r in tables["by_key"]) == 120 * 2
    # By region-week: two cells per user (weeks 1 and 2), 2 + 1 rows, all kept.
    assert sum(r["count"] for r in tables["by_region_week"]) == 120 * 3
    manifest = json.loads((version / "manifest.json").read_text("utf-8"))
    assert "data" not in manifest and len(manifest["tables"]) == 3
