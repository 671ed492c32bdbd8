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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """One real PostgreSQL server for the test run (``tests.pg_server``), on 127.0.0.1.

    Without the server binaries the PostgreSQL tests are skipped on a developer's machine
    and fail under CI (CI=true), where ``.ci/run`` installs them.
    """
    from tests.pg_server import PostgresServer, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        message = "no PostgreSQL server binaries (apt-get install postgresql, or set PG_BIN)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer(bin_dir)
    server.start()
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server: object) -> str:
    """The URL of a fresh, empty database on the test server."""
    from tests.pg_server import PostgresServer

    assert isinstance(postgres_server, PostgresServer)
    return postgres_server.fresh_database()
