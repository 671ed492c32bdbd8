"""Public keys generated from the config, end to end on a real Spark session.

A ``values:`` product releases every generated key, including the ones the data never
has, and releases exactly the keys of the same run over an equivalent keys file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from pipelines.config import ConfigError, config_from_mapping
from pipelines.job import run_release
from tests.support import raw_job_config, write_rows

SCHEMA = pa.schema([("user", pa.string()), ("region", pa.string()), ("week", pa.int32())])
REGIONS, WEEKS = ["north", "south", "east"], range(1, 5)


@pytest.fixture
def region_weeks(tmp_path: Path) -> Path:
    """Rows in three of the twelve region-weeks only."""
    rows = [
        {"user": f"u{i}", "region": region, "week": week}
        for i, (region, week) in enumerate([("north", 1), ("north", 2), ("south", 4)] * 3)
    ]
    return write_rows(tmp_path / "input" / "rows.parquet", rows, SCHEMA)


def released_keys(spark: SparkSession, root: Path, data: Path, keys: dict[str, Any]) -> set[Any]:
    """The (region, week) keys one public-keys run publishes under ``root``."""
    raw = raw_job_config(
        root,
        data,
        partition_columns=["region", "week"],
        metrics=[{"metric": "count"}],
        partition_selection={"mechanism": "public", "public_keys": keys},
    )
    result = run_release(spark, config_from_mapping(raw))
    table = pq.read_table(Path(result.path) / "data").to_pylist()
    assert len(table) == len({(r["region"], r["week"]) for r in table})  # one row per key
    return {(r["region"], r["week"]) for r in table}


def test_generated_keys_release_every_key_as_the_keys_file_does(
    spark: SparkSession, tmp_path: Path, region_weeks: Path
) -> None:
    everything = {(r, w) for r in REGIONS for w in WEEKS}
    generated = released_keys(
        spark,
        tmp_path / "a",
        region_weeks,
        {"values": {"region": REGIONS, "week": {"range": [1, 4]}}},
    )
    assert generated == everything  # nine of the twelve keys have no rows
    keys_file = tmp_path / "keys.csv"
    keys_file.write_text(
        "region,week\n" + "".join(f"{r},{w}\n" for r, w in sorted(everything)), encoding="utf-8"
    )
    assert released_keys(spark, tmp_path / "b", region_weeks, {"path": str(keys_file)}) == generated
    regions_file = tmp_path / "regions.csv"
    regions_file.write_text("region\n" + "".join(f"{r}\n" for r in REGIONS), encoding="utf-8")
    product = {"path": str(regions_file), "values": {"week": [1, 2, 3, 4]}}
    assert released_keys(spark, tmp_path / "c", region_weeks, product) == generated


def test_generated_values_that_do_not_convert_are_config_errors(
    spark: SparkSession, tmp_path: Path, region_weeks: Path
) -> None:
    weeks = {"iso_weeks": ["2020-W53", "2021-W01"]}
    with pytest.raises(ConfigError, match=r"values\.week: '2020-W53' does not convert to .*int"):
        released_keys(spark, tmp_path, region_weeks, {"values": {"region": REGIONS, "week": weeks}})
    with pytest.raises(ConfigError, match=r"values\.week: '01' and '1' are the same key as int"):
        released_keys(
            spark, tmp_path, region_weeks, {"values": {"region": REGIONS, "week": ["1", "01"]}}
        )


def test_keys_file_values_differing_by_case_are_config_errors(
    spark: SparkSession, tmp_path: Path, region_weeks: Path
) -> None:
    regions_file = tmp_path / "regions.csv"
    regions_file.write_text("region\nnorth\nNorth \n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'region' has 'North ' and 'north'"):
        released_keys(
            spark, tmp_path, region_weeks, {"path": str(regions_file), "values": {"week": [1]}}
        )
