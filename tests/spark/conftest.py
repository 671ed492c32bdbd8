"""Fixtures of the Spark tests: hand-computable inputs (helpers live in tests/support.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pyspark import cloudpickle

import tests.doubles
from tests.support import EVENTS, write_rows

# Executors must unpickle the test doubles without importing tests/.
cloudpickle.register_pickle_by_value(tests.doubles)  # type: ignore[no-untyped-call]


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
