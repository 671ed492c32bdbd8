"""Public keys generated from the config: lists, integer ranges, ISO-week ranges (no Spark)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.config import ConfigError, JobConfig, config_from_mapping
from pipelines.config.key_generators import (
    PUBLIC_KEYS_LIMIT,
    IntegerRange,
    IsoWeekRange,
    generated_key_count,
    generated_values,
)
from pipelines.plan import build_plan
from pipelines.plan_description import describe_plan
from tests.support import PLAN_JOB, config_mapping


def keys_config(keys: dict[str, Any], columns: list[str] | None = None) -> JobConfig:
    """A plan-only config with public keys ``keys`` over ``columns``."""
    raw = config_mapping(Path("/nowhere/out"), Path("/nowhere/in.parquet"), base=PLAN_JOB)
    raw["partition_columns"] = columns or ["region", "week"]
    raw["partition_selection"] = {"mechanism": "public", "public_keys": keys}
    return config_from_mapping(raw)


def test_listed_values_are_text_in_the_given_order() -> None:
    config = keys_config({"values": {"region": ["north", "south"], "week": [1, 2.5, True]}})
    keys = config.partition_selection.public_keys
    assert keys is not None and keys.values is not None
    assert generated_values(keys.values["region"]) == ["north", "south"]
    assert generated_values(keys.values["week"]) == ["1", "2.5", "true"]
    assert generated_key_count(keys.values) == 6


def test_an_integer_range_includes_both_bounds() -> None:
    config = keys_config({"values": {"region": ["north"], "week": {"range": [1, 52]}}})
    keys = config.partition_selection.public_keys
    assert keys is not None and keys.values is not None
    week = keys.values["week"]
    assert isinstance(week, IntegerRange) and week.size() == 52
    assert generated_key_count(keys.values) == 52


def test_iso_weeks_cross_a_year_boundary_and_keep_week_53() -> None:
    weeks = IsoWeekRange(iso_weeks=["2020-W52", "2021-W02"]).values()
    assert weeks == ["2020-W52", "2020-W53", "2021-W01", "2021-W02"]
    full = IsoWeekRange(iso_weeks=["2020-W01", "2020-W53"]).values()
    assert len(full) == 53 and full[0] == "2020-W01" and full[-1] == "2020-W53"
    assert len(IsoWeekRange(iso_weeks=["2025-W01", "2025-W52"]).values()) == 52
    assert IsoWeekRange(iso_weeks=["2024-W10", "2024-W10"]).values() == ["2024-W10"]


@pytest.mark.parametrize(
    ("generator", "message"),
    [
        ({"range": [52, 1]}, "first 52 is after last 1"),
        ({"range": [1]}, "range"),
        ({"range": [1, 2.5]}, "integers"),
        ({"range": [True, 3]}, "integers"),
        ({"iso_weeks": ["2025-W10", "2025-W01"]}, "first 2025-W10 is after last 2025-W01"),
        ({"iso_weeks": ["2025-01", "2025-W02"]}, "not an ISO week of the form YYYY-Www"),
        ({"iso_weeks": ["2025-W01", "2021-W53"]}, "ISO year 2021 has no week 53"),
        ({"iso_weeks": ["2025-W00", "2025-W02"]}, "has no week 0"),
        ([], "at least 1"),
    ],
)
def test_bad_generators_are_config_errors(generator: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        keys_config({"values": {"region": ["north"], "week": generator}})
    assert "week" in str(caught.value)


@pytest.mark.parametrize(
    ("values", "first", "second"),
    [
        (["north", "North"], "north", "North"),
        (["north", " north"], "north", " north"),
        (["NORTH ", "north"], "NORTH ", "north"),
        (["north", "north"], "north", "north"),
    ],
)
def test_values_differing_by_whitespace_or_case_are_config_errors(
    values: list[str], first: str, second: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        keys_config({"values": {"region": values, "week": [1]}})
    text = str(caught.value)
    assert "region" in text and repr(first) in text and repr(second) in text


def test_generated_columns_must_cover_exactly_the_partition_columns() -> None:
    with pytest.raises(ConfigError, match=r"\['week'\] have no values"):
        keys_config({"values": {"region": ["north"]}})
    with pytest.raises(ConfigError, match=r"\['day'\] are not partition columns"):
        keys_config({"values": {"region": ["north"], "week": [1], "day": [1]}})
    with pytest.raises(ConfigError, match="the keys file would cover none"):
        keys_config({"path": "/keys.csv", "values": {"region": ["north"], "week": [1]}})
    with pytest.raises(ConfigError, match="exactly one of 'path' or 'table'"):
        keys_config({"path": "/keys.csv", "table": "t", "values": {"week": [1]}})
    with pytest.raises(ConfigError, match="at least one partition column"):
        keys_config({"values": {}})


def test_the_product_is_capped() -> None:
    big = {"range": [1, 100_000]}
    assert PUBLIC_KEYS_LIMIT < 100_000 * 100_000
    with pytest.raises(ConfigError, match="PUBLIC_KEYS_LIMIT"):
        keys_config({"values": {"region": big, "week": big}})
    keys_config({"values": {"region": {"range": [1, 1000]}, "week": {"range": [1, 10_000]}}})


def test_plan_and_provenance_show_the_generated_keys() -> None:
    config = keys_config({"values": {"region": ["north", "south"], "week": {"range": [1, 52]}}})
    selection = describe_plan(build_plan(config))["selection"]
    assert isinstance(selection, dict)
    assert selection["provenance"] == (
        "generated from the config: region (2 values) × week (range 1..52)"
    )
    assert selection["public_keys"] == {"count": 104, "generated": 104, "times_keys_file": False}
    assert selection["epsilon"] == 0.0 and selection["delta"] == 0.0


def test_a_product_with_a_keys_file_names_both() -> None:
    config = keys_config(
        {
            "path": "/regions.csv",
            "provenance": "census list",
            "values": {"week": {"iso_weeks": ["2025-W01", "2025-W52"]}},
        }
    )
    selection = describe_plan(build_plan(config))["selection"]
    assert isinstance(selection, dict)
    assert selection["provenance"] == (
        "/regions.csv × generated from the config: week (ISO weeks 2025-W01..2025-W52); census list"
    )
    assert selection["public_keys"] == {"count": None, "generated": 52, "times_keys_file": True}
