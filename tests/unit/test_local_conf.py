"""The embedded local Spark settings travel with the package, not only with the source tree."""

from __future__ import annotations

import tomllib
from pathlib import Path

from jobs.session import LOCAL_CONF, local_settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_reads_the_one_local_conf_of_the_repository() -> None:
    assert LOCAL_CONF.parent == ROOT / "jobs"
    assert LOCAL_CONF.read_bytes() == (ROOT / "conf" / "spark" / "local.conf").read_bytes()


def test_the_wheel_ships_local_conf_as_package_data() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "local.conf" in project["tool"]["setuptools"]["package-data"]["jobs"]


def test_local_settings_pin_utc_and_ansi() -> None:
    settings = local_settings()
    assert settings["spark.sql.session.timeZone"] == "UTC"
    assert settings["spark.sql.ansi.enabled"] == "true"
    assert settings["spark.master"].startswith("local")
