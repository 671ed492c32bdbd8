"""SparkSession lifecycle for the CLI and spark-submit mains."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

# conf/spark/local.conf, through the jobs/local.conf link in a source tree and as a copy
# inside an installed wheel, so an installed dprelease keeps the same local settings.
LOCAL_CONF = Path(__file__).parent / "local.conf"


def read_spark_conf(path: Path) -> dict[str, str]:
    """Parse a spark-defaults style file: `key value` per line, `#` comments."""
    settings: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        settings[key] = value.strip()
    return settings


def local_settings() -> dict[str, str]:
    """The embedded local settings (conf/spark/local.conf, shipped inside the package)."""
    return read_spark_conf(LOCAL_CONF)


def create_session(
    app_name: str = "dprelease", settings: dict[str, str] | None = None
) -> SparkSession:
    """A SparkSession: under spark-submit the submitted settings win; alone, local settings.

    Python workers use this interpreter, so the venv's packages are on every local worker.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # spark-submit starts the JVM first and hands its gateway port to Python.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    builder = SparkSession.builder.appName(app_name)
    if not submitted:
        for key, value in (settings if settings is not None else local_settings()).items():
            is_master = key == "spark.master"
            builder = builder.master(value) if is_master else builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
