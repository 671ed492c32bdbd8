"""Shared fixtures: one real local Spark session per test run, temporary release roots."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """The one SparkSession of the test run (local[2], the shipped local settings)."""
    from jobs.session import create_session, local_settings

    settings = local_settings() | {
        "spark.master": "local[2]",
        "spark.sql.shuffle.partitions": "4",
        "spark.default.parallelism": "4",
    }
    session = create_session("dprelease-tests", settings)
    yield session
    session.stop()
