"""SparkSession lifecycle for the CLI and spark-submit mains.

A local session is quiet unless ``verbose``: the driver JVM gets the project's log4j2
configuration (errors only), Spark's console progress bars are off (local.conf), and the
notices the JVM prints outside log4j2 (the incubator-module notice of Spark's launcher,
the shell's default log level lines) are dropped from its stderr; every other JVM stderr
line is passed on unchanged. Local runs bind to 127.0.0.1 (no loopback host warning).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from pyspark import SparkConf, SparkContext
from pyspark.java_gateway import launch_gateway
from pyspark.sql import SparkSession

# conf/spark/local.conf, through the jobs/local.conf link in a source tree and as a copy
# inside an installed wheel, so an installed dprelease keeps the same local settings.
LOCAL_CONF = Path(__file__).parent / "local.conf"
# conf/spark/log4j2.properties, shipped the same way.
LOG4J2_CONF = Path(__file__).parent / "log4j2.properties"
# JVM stderr lines printed before log4j2 is configured, dropped unless verbose.
_JVM_NOISE = re.compile(
    r"^(WARNING: Using incubator modules: jdk\.incubator\.vector"
    r"|Using Spark's default log4j profile: .*"
    r'|Setting default log level to "[A-Z]+"\.'
    r"|To adjust logging level use sc\.setLogLevel\(newLevel\)\..*)$"
)


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


def quiet_settings(settings: dict[str, str]) -> dict[str, str]:
    """``settings`` plus the driver JVM option that loads the project's log4j2 config."""
    option = f"-Dlog4j2.configurationFile={LOG4J2_CONF.resolve().as_uri()}"
    existing = settings.get("spark.driver.extraJavaOptions", "")
    return settings | {"spark.driver.extraJavaOptions": f"{existing} {option}".strip()}


def _forward(stream: IO[bytes], verbose: bool) -> None:
    """Copy the JVM's stderr to ours, line by line, dropping known start-up notices; the
    pipe is drained to its end whatever happens to our stderr, so the JVM never blocks."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace")
        if verbose or not _JVM_NOISE.match(line.rstrip("\n")):
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):  # our stderr is closed: keep draining the pipe
                continue


def _start_gateway(settings: dict[str, str], verbose: bool) -> None:
    """Start the driver JVM with these settings, its stderr through ``_forward``."""
    if SparkContext._gateway is not None:  # a JVM of this process is already running
        return
    conf = SparkConf(loadDefaults=False).setAll(list(settings.items()))
    gateway = launch_gateway(conf, popen_kwargs={"stderr": subprocess.PIPE})  # type: ignore[no-untyped-call]
    stream = gateway.proc.stderr
    threading.Thread(target=_forward, args=(stream, verbose), daemon=True).start()
    SparkContext._ensure_initialized(gateway=gateway)


def create_session(
    app_name: str = "dprelease", settings: dict[str, str] | None = None, verbose: bool = False
) -> SparkSession:
    """A SparkSession: under spark-submit the submitted settings win; alone, local settings
    (quiet unless ``verbose``, see the module docstring).

    Python workers use this interpreter, so the venv's packages are on every local worker.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # spark-submit starts the JVM first and hands its gateway port to Python.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    builder = SparkSession.builder.appName(app_name)
    if not submitted:
        chosen = settings if settings is not None else local_settings()
        if not verbose:
            chosen = quiet_settings(chosen)
            if chosen.get("spark.master", "").startswith("local"):
                # Local mode binds to the loopback address: say so, instead of a JVM warning.
                os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        _start_gateway(chosen, verbose)
        for key, value in chosen.items():
            is_master = key == "spark.master"
            builder = builder.master(value) if is_master else builder.config(key, value)
    return builder.getOrCreate()
