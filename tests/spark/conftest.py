"""Helpers for Spark tests: configs over files written to a temporary directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark import cloudpickle

import tests.doubles
from pipelines.config import JobConfig, config_from_mapping

# Executors must unpickle the test doubles without importing tests/.
cloudpickle.register_pickle_by_value(tests.doubles)  # type: ignore[no-untyped-call]


def write_rows(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> Path:
    """Write rows as one Parquet file and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


EVENTS = pa.schema([("user", pa.string()), ("key", pa.string()), ("value", pa.float64())])


def raw_job_config(output_root: Path, input_path: Path, **overrides: Any) -> dict[str, Any]:
    """A small valid config mapping over ``input_path``; ``overrides`` replace top-level fields."""
    raw: dict[str, Any] = {
        "release": {"name": "events", "output_root": str(output_root), "data_period": "2026-W47"},
        "input": {"path": str(input_path)},
        "privacy_unit": {"column": "user"},
        "partition_columns": ["key"],
        "contribution_bounds": {"max_partitions_per_unit": 3, "max_rows_per_unit_per_partition": 2},
        "metrics": [
            {"metric": "privacy_id_count"},
            {"metric": "count"},
            {"metric": "sum", "column": "value", "lower": 0.0, "upper": 10.0},
            {"metric": "mean", "column": "value", "lower": 0.0, "upper": 10.0},
        ],
        "budget": {"epsilon": 1.0, "delta": 1e-6},
        "ledger": {"dataset": "events", "lifetime_budget": {"epsilon": 1000.0, "delta": 1e-3}},
    }
    return raw | overrides


def job_config(tmp: Path, input_path: Path, **overrides: Any) -> JobConfig:
    """The typed config of ``raw_job_config`` with releases under ``tmp/releases``."""
    return config_from_mapping(raw_job_config(tmp / "releases", input_path, **overrides))


@pytest.fixture
def events_path(tmp_path: Path) -> Path:
    """Hand-computable events: see the expected aggregates in test_release_job."""
    rows: list[dict[str, Any]] = [
        # u1: 3 rows in A (Linf=2 keeps 2), 1 in B.
        {"user": "u1", "key": "A", "value": 4.0},
        {"user": "u1", "key": "A", "value": 4.0},
        {"user": "u1", "key": "A", "value": 4.0},
        {"user": "u1", "key": "B", "value": 20.0},  # clamped to 10
        # u2: one row in A and one in B.
        {"user": "u2", "key": "A", "value": 2.0},
        {"user": "u2", "key": "B", "value": -5.0},  # clamped to 0
        # u3: one row in C, and rows the invalid-values policy drops.
        {"user": "u3", "key": "C", "value": 7.0},
        {"user": "u3", "key": "C", "value": float("nan")},
        {"user": None, "key": "C", "value": 1.0},
        {"user": "u4", "key": None, "value": 1.0},
    ]
    return write_rows(tmp_path / "input" / "events.parquet", rows, EVENTS)
