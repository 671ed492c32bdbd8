"""What tests share besides fixtures: input writers and the one config factory.

``config_mapping`` builds every test config: a base job (``EVENTS_JOB`` for the Spark
tests, ``AUDIT_JOB`` for the privacy suite) over an input file and a release root, with
top-level fields replaced by ``overrides``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config import JobConfig, config_from_mapping

EVENTS = pa.schema([("user", pa.string()), ("key", pa.string()), ("value", pa.float64())])
# A lifetime budget no test run can exhaust: every run_release reserves its spend.
HUGE_LIFETIME = {"epsilon": 1e9, "delta": 0.5}

EVENTS_JOB: Mapping[str, Any] = {
    "release": {"name": "events", "data_period": "2026-W47"},
    "privacy_unit": {"column": "user"},
    "partition_columns": ["key"],
    "contribution_bounds": {"max_partitions_per_unit": 3, "max_rows_per_unit_per_partition": 2},
    "metrics": [
        {"metric": "privacy_id_count"},
        {"metric": "count"},
        {"metric": "sum", "column": "value", "lower": 0.0, "upper": 10.0},
        {"metric": "mean", "column": "value", "lower": 0.0, "upper": 10.0},
    ],
    # Pinned (also the default): the suites written for a sum's own noise keep it; shared
    # parts have their own tests (tests/unit/test_shared_parts.py and the Spark suite).
    "budget": {"epsilon": 1.0, "delta": 1e-6, "share_parts": False},
    "ledger": {"dataset": "events", "lifetime_budget": {"epsilon": 1000.0, "delta": 1e-3}},
    # Pinned: the suites written for one rule keep it; the default (auto) has its own tests.
    "partition_selection": {"mechanism": "truncated_geometric"},
}
AUDIT_JOB: Mapping[str, Any] = {
    "release": {"name": "audit", "data_period": "P1"},
    "privacy_unit": {"column": "user"},
    "partition_columns": ["key"],
    "contribution_bounds": {"max_partitions_per_unit": 1, "max_rows_per_unit_per_partition": 4},
    "metrics": [
        {"metric": "count"},
        {"metric": "sum", "column": "value", "lower": 0.0, "upper": 10.0},
        {"metric": "mean", "column": "value", "lower": 0.0, "upper": 10.0},
    ],
    "budget": {"epsilon": 4.0, "delta": 1e-4, "share_parts": False},
    "ledger": {"dataset": "audit", "lifetime_budget": HUGE_LIFETIME},
    "partition_selection": {"mechanism": "truncated_geometric"},
}


#: The plan tests' job: no input is read, so the paths need not exist.
PLAN_JOB: Mapping[str, Any] = {
    "release": {"name": "r", "data_period": "p"},
    "privacy_unit": {"column": "user"},
    "partition_columns": ["key"],
    "contribution_bounds": {"max_partitions_per_unit": 3, "max_rows_per_unit_per_partition": 2},
    "metrics": [{"metric": "count"}],
    "budget": {"epsilon": 1.0, "delta": 1e-6},
    "ledger": {"dataset": "events", "lifetime_budget": {"epsilon": 10.0, "delta": 1e-5}},
    "partition_selection": {"mechanism": "truncated_geometric"},
}


def public_selection(directory: Path, keys: list[str]) -> dict[str, Any]:
    """Write ``keys`` as ``directory/keys.csv`` (column ``key``); the ``partition_selection``
    section that releases exactly them."""
    path = directory / "keys.csv"
    path.write_text("key\n" + "".join(f"{key}\n" for key in keys), encoding="utf-8")
    return {"mechanism": "public", "public_keys": {"path": str(path)}}


def write_rows(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> Path:
    """Write rows as one Parquet file and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def config_mapping(
    output_root: Path, input_path: Path, base: Mapping[str, Any] = EVENTS_JOB, **overrides: Any
) -> dict[str, Any]:
    """A valid config mapping over ``input_path``; ``overrides`` replace top-level fields."""
    raw = copy.deepcopy(dict(base))
    raw["release"] = {**raw["release"], "output_root": str(output_root)}
    raw["input"] = {"path": str(input_path)}
    return raw | overrides


#: The Spark tests' job (``EVENTS_JOB``) and the privacy suite's (``AUDIT_JOB``).
raw_job_config = partial(config_mapping, base=EVENTS_JOB)
audit_config = partial(config_mapping, base=AUDIT_JOB)


def job_config(tmp: Path, input_path: Path, **overrides: Any) -> JobConfig:
    """The typed config of ``raw_job_config`` with releases under ``tmp/releases``."""
    return config_from_mapping(raw_job_config(tmp / "releases", input_path, **overrides))


def released_row(
    grid: float, key: str, *, intervals_follow: bool = False, **changes: Any
) -> dict[str, Any]:
    """One well-formed released row of ``EVENTS_JOB`` (key, the four metrics with std and
    zero-width intervals), with ``changes`` applied; with ``intervals_follow``, a changed
    value's interval ends move with it."""
    row: dict[str, Any] = {"key": key}
    for name, value in (
        ("privacy_id_count", 5),
        ("count", 7),
        ("sum_value", 4 * grid),
        ("mean_value", 2.5),
    ):
        row |= {name: value, f"{name}_std": 1.0, f"{name}_ci_low": value, f"{name}_ci_high": value}
    if not intervals_follow:
        return row | changes
    for name, value in changes.items():
        row |= {name: value, f"{name}_ci_low": value, f"{name}_ci_high": value}
    return row


def staged_rows(directory: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> Path:
    """``rows`` written as one staged part file under ``directory/data``; that folder."""
    data = directory / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), data / "part-00000.parquet")
    return data
