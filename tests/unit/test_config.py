"""The job config: holes found by the config audit stay closed (no Spark needed)."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config import (
    DELTA_CEILING,
    DELTA_MIN_POSITIVE,
    EPSILON_MAX,
    EPSILON_MIN,
    MAX_PARTITIONS_PER_UNIT_LIMIT,
    MAX_ROWS_PER_UNIT_PER_PARTITION_LIMIT,
    MIN_UNITS_LIMIT,
    ConfigError,
    ContractsConfig,
    JobConfig,
    config_from_mapping,
    load_config,
)

REPO = Path(__file__).resolve().parents[2]


def raw_config() -> dict[str, Any]:
    """A small valid config mapping with absolute paths."""
    return {
        "release": {"name": "r", "output_root": "/srv/out", "data_period": "p"},
        "input": {"path": "/srv/in.parquet"},
        "privacy_unit": {"column": "user"},
        "partition_columns": ["key"],
        "contribution_bounds": {"max_partitions_per_unit": 3, "max_rows_per_unit_per_partition": 2},
        "metrics": [
            {"metric": "count"},
            {"metric": "privacy_id_count"},
            {"metric": "sum", "column": "v", "lower": -1.0, "upper": 4.0},
        ],
        "budget": {
            "epsilon": 1.0,
            "delta": 1e-6,
            "weights": {"selection": 0.25, "count": 0.25, "privacy_id_count": 0.25, "sum_v": 0.25},
        },
        "ledger": {"dataset": "events", "lifetime_budget": {"epsilon": 10.0, "delta": 1e-5}},
        "partition_selection": {"mechanism": "truncated_geometric", "min_units": 1},
        "post_processing": {"decimals": 3},
        "confidence_level": 0.9,
    }


def public_config(**keys: Any) -> dict[str, Any]:
    """``raw_config`` with public partitions read from ``keys``."""
    raw = raw_config()
    raw["partition_selection"] = {"mechanism": "public", "public_keys": keys}
    del raw["budget"]["weights"]["selection"]
    raw["budget"]["weights"]["count"] = 0.5
    return raw


def with_value(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``raw`` with the dotted ``path`` (``metrics.2.lower``) set to ``value``."""
    out = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def build(raw: dict[str, Any], base_dir: Path | None = None) -> JobConfig:
    return config_from_mapping(raw, "job.yaml", base_dir=base_dir)


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_the_base_config_is_valid() -> None:
    config = build(raw_config())
    assert config.budget.epsilon == 1.0
    assert config.input.path == "/srv/in.parquet"


# 1. Duplicate YAML keys.


def test_a_duplicate_key_names_its_path_and_both_lines(tmp_path: Path) -> None:
    text = yaml.safe_dump(raw_config(), sort_keys=False)
    text = text.replace("  epsilon: 1.0\n", "  epsilon: 0.1\n  delta: 1.0e-06\n  epsilon: 50\n", 1)
    lines = text.splitlines()
    first = lines.index("  epsilon: 0.1") + 1
    second = lines.index("  epsilon: 50") + 1
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert f"budget.epsilon: duplicate key (lines {first} and {second})" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("noise: laplace\nnoise: gaussian\n", "noise: duplicate key (lines 1 and 2)"),
        (
            "ledger:\n  lifetime_budget:\n    delta: 0\n    delta: 0.5\n",
            "ledger.lifetime_budget.delta: duplicate key (lines 3 and 4)",
        ),
        (
            "metrics:\n  - metric: count\n  - metric: sum\n    lower: 0\n    lower: -9\n",
            "metrics[1].lower: duplicate key (lines 4 and 5)",
        ),
        ("budget: {epsilon: 1, epsilon: 2}\n", "budget.epsilon: duplicate key (lines 1 and 1)"),
        ("budget:\n  weights:\n    count: 1\n    'count': 1\n", "budget.weights.count"),
    ],
)
def test_duplicate_keys_are_refused_at_every_level(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="duplicate key") as caught:
        load_config(write(tmp_path, text))
    assert message in str(caught.value)


# 2. Booleans are not numbers.

NUMERIC_FIELDS = [
    ("budget.epsilon", "budget.epsilon"),
    ("budget.delta", "budget.delta"),
    ("budget.weights.count", "budget.weights.count"),
    ("ledger.lifetime_budget.epsilon", "ledger.lifetime_budget.epsilon"),
    ("ledger.lifetime_budget.delta", "ledger.lifetime_budget.delta"),
    ("metrics.2.lower", "metrics[2].lower"),
    ("metrics.2.upper", "metrics[2].upper"),
    ("contribution_bounds.max_partitions_per_unit", "contribution_bounds.max_partitions_per_unit"),
    (
        "contribution_bounds.max_rows_per_unit_per_partition",
        "contribution_bounds.max_rows_per_unit_per_partition",
    ),
    ("partition_selection.min_units", "partition_selection.min_units"),
    ("post_processing.decimals", "post_processing.decimals"),
    ("confidence_level", "confidence_level"),
]


@pytest.mark.parametrize(("path", "shown"), NUMERIC_FIELDS)
@pytest.mark.parametrize("flag", [True, False])
def test_booleans_are_not_numbers(path: str, shown: str, flag: bool) -> None:
    with pytest.raises(ConfigError) as caught:
        build(with_value(raw_config(), path, flag))
    assert f"{shown}: must be a number, not true/false" in str(caught.value)


def test_a_yaml_true_epsilon_is_refused(tmp_path: Path) -> None:
    text = yaml.safe_dump(with_value(raw_config(), "budget.epsilon", True))
    assert "epsilon: true" in text
    with pytest.raises(ConfigError, match=r"budget\.epsilon: must be a number"):
        load_config(write(tmp_path, text))


# 3. Delta ceiling.


def test_delta_ceiling_is_documented_and_small() -> None:
    assert DELTA_CEILING == 1e-4


@pytest.mark.parametrize("path", ["budget.delta"])
@pytest.mark.parametrize("delta", [1.01e-4, 1e-3, 0.5, 0.999])
def test_delta_above_the_ceiling_is_refused_with_the_reason(path: str, delta: float) -> None:
    with pytest.raises(ConfigError) as caught:
        build(with_value(raw_config(), path, delta))
    message = str(caught.value)
    assert f"{path}: must be at most 0.0001 (DELTA_CEILING)" in message
    assert "fails outright" in message
    assert "single units' keys" in message
    assert "1/number-of-units" in message


@pytest.mark.parametrize("path", ["budget.delta", "ledger.lifetime_budget.delta"])
def test_delta_at_the_ceiling_is_accepted(path: str) -> None:
    build(with_value(raw_config(), path, DELTA_CEILING))


# 4. Numeric limits.


def test_numeric_limits_have_their_documented_values() -> None:
    assert (EPSILON_MIN, EPSILON_MAX) == (1e-6, 100.0)
    assert DELTA_MIN_POSITIVE == 1e-100
    assert MAX_PARTITIONS_PER_UNIT_LIMIT == 1_000_000
    assert MAX_ROWS_PER_UNIT_PER_PARTITION_LIMIT == 1_000_000
    assert MIN_UNITS_LIMIT == 1_000_000_000


@pytest.mark.parametrize("path", ["budget.epsilon"])
@pytest.mark.parametrize("epsilon", [0.0, -1.0, 9e-7, 100.5, 1e9, float("inf"), float("nan")])
def test_epsilon_outside_its_range_is_refused(path: str, epsilon: float) -> None:
    with pytest.raises(ConfigError) as caught:
        build(with_value(raw_config(), path, epsilon))
    assert f"{path}: must be between 1e-06 (EPSILON_MIN) and 100 (EPSILON_MAX)" in str(caught.value)


@pytest.mark.parametrize("path", ["budget.epsilon", "ledger.lifetime_budget.epsilon"])
@pytest.mark.parametrize("epsilon", [EPSILON_MIN, EPSILON_MAX])
def test_epsilon_at_its_limits_is_accepted(path: str, epsilon: float) -> None:
    build(with_value(raw_config(), path, epsilon))


@pytest.mark.parametrize("path", ["budget.delta"])
@pytest.mark.parametrize("delta", [1e-101, 5e-324])
def test_a_vanishing_positive_delta_is_refused(path: str, delta: float) -> None:
    with pytest.raises(ConfigError) as caught:
        build(with_value(raw_config(), path, delta))
    assert f"{path}: must be 0 or at least 1e-100 (DELTA_MIN_POSITIVE)" in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [
        ("epsilon", 1e6, True),
        ("epsilon", 0.0, False),
        ("epsilon", float("inf"), False),
        ("delta", 0.5, True),
        ("delta", 1.0, False),
        ("delta", -1e-9, False),
    ],
)
def test_a_lifetime_budget_is_policy_only_bounded_by_its_meaning(
    field: str, value: float, accepted: bool
) -> None:
    """The release ceilings do not apply to a lifetime (many releases); it must be > 0
    (epsilon) or in [0, 1) (delta)."""
    raw = with_value(raw_config(), f"ledger.lifetime_budget.{field}", value)
    if accepted:
        build(raw)
    else:
        with pytest.raises(ConfigError, match=f"ledger.lifetime_budget.{field}"):
            build(raw)


def test_delta_zero_and_the_smallest_positive_delta_are_accepted() -> None:
    raw = public_config(path="/srv/keys.csv")
    raw["budget"]["delta"] = 0.0
    raw["ledger"]["lifetime_budget"]["delta"] = 0.0
    build(raw)
    build(with_value(raw_config(), "budget.delta", DELTA_MIN_POSITIVE))


@pytest.mark.parametrize(
    ("path", "limit", "constant"),
    [
        (
            "contribution_bounds.max_partitions_per_unit",
            MAX_PARTITIONS_PER_UNIT_LIMIT,
            "MAX_PARTITIONS_PER_UNIT_LIMIT",
        ),
        (
            "contribution_bounds.max_rows_per_unit_per_partition",
            MAX_ROWS_PER_UNIT_PER_PARTITION_LIMIT,
            "MAX_ROWS_PER_UNIT_PER_PARTITION_LIMIT",
        ),
        ("partition_selection.min_units", MIN_UNITS_LIMIT, "MIN_UNITS_LIMIT"),
    ],
)
def test_integer_limits_are_checked_at_load_time(path: str, limit: int, constant: str) -> None:
    build(with_value(raw_config(), path, limit))
    with pytest.raises(ConfigError) as caught:
        build(with_value(raw_config(), path, limit + 1))
    assert f"{path}: must be at most {limit:,} ({constant})" in str(caught.value)


# 5. Dataset names.


@pytest.mark.parametrize("given", [" MovieLens ", "movielens", "MOVIELENS\t"])
def test_dataset_names_are_canonical(given: str) -> None:
    config = build(with_value(raw_config(), "ledger.dataset", given))
    assert config.ledger.dataset == "movielens"


@pytest.mark.parametrize("given", ["", "   ", "movie lens", "-leading", "bad\nname"])
def test_invalid_dataset_names_are_config_errors(given: str) -> None:
    with pytest.raises(ConfigError, match=r"ledger\.dataset: a dataset name must be"):
        build(with_value(raw_config(), "ledger.dataset", given))


# 6. Relative paths resolve against the config file's folder.


def relative_config(**keys: Any) -> dict[str, Any]:
    raw = public_config(**keys)
    raw["input"]["path"] = "../data/in.parquet"
    raw["release"]["output_root"] = "out"
    raw["ledger"]["path"] = "ledger/l.sqlite"
    return raw


def test_relative_paths_resolve_against_base_dir(tmp_path: Path) -> None:
    config = build(relative_config(path="keys.csv"), base_dir=tmp_path / "conf")
    assert config.input.path == str(tmp_path / "data" / "in.parquet")
    assert config.release.output_root == str(tmp_path / "conf" / "out")
    assert config.ledger.path == str(tmp_path / "conf" / "ledger/l.sqlite")
    keys = config.partition_selection.public_keys
    assert keys is not None
    assert keys.path == str(tmp_path / "conf" / "keys.csv")


def test_without_base_dir_paths_are_kept_as_given() -> None:
    config = build(relative_config(path="keys.csv"))
    assert config.input.path == "../data/in.parquet"
    assert config.release.output_root == "out"
    assert config.ledger_path == Path("ledger/l.sqlite")


@pytest.mark.parametrize(
    "given", ["/abs/keys.csv", "hdfs://nn:8020/keys.csv", "s3a://bucket/keys", "file:///k.csv"]
)
def test_absolute_paths_and_uris_are_left_alone(tmp_path: Path, given: str) -> None:
    config = build(public_config(path=given), base_dir=tmp_path)
    keys = config.partition_selection.public_keys
    assert keys is not None
    assert keys.path == given
    assert config.input.path == "/srv/in.parquet"


def test_load_config_resolves_against_the_file_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = relative_config(path="keys.csv")
    del raw["ledger"]["path"]
    file = write(tmp_path, yaml.safe_dump(raw), "conf/jobs/job.yaml")
    monkeypatch.chdir(tmp_path / "conf")  # any working directory gives the same files
    config = load_config(file)
    assert config.input.path == str(tmp_path / "conf/data/in.parquet")
    assert config.release.output_root == str(tmp_path / "conf/jobs/out")
    assert config.ledger_path == tmp_path / "conf/jobs/out/_ledger/ledger.sqlite"


@pytest.mark.parametrize("name", ["movielens.yaml", "movielens_genres.yaml"])
def test_shipped_jobs_read_and_write_at_the_repo_root(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # `make run` runs from the repo root
    config = load_config(Path("conf/jobs") / name)
    assert config.input.path == "data/movielens/ratings.parquet"
    assert config.release.output_root == "releases"
    keys = config.partition_selection.public_keys
    if keys is not None:
        assert Path(keys.path or "").resolve().is_file()


# 7. Ergonomics: scalar options, data periods.


def test_input_options_accept_yaml_scalars(tmp_path: Path) -> None:
    raw = raw_config()
    raw["input"]["options"] = {"header": True, "maxColumns": 3, "samplingRatio": 1.5, "sep": ";"}
    config = load_config(write(tmp_path, yaml.safe_dump(raw)))
    assert config.input.options == {
        "header": "true",
        "maxColumns": "3",
        "samplingRatio": "1.5",
        "sep": ";",
    }
    with pytest.raises(ConfigError, match=r"input\.options\.sep"):
        build(with_value(raw, "input.options.sep", None))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (None, {"header": "true"}),
        ({"sep": ";"}, {"header": "true", "sep": ";"}),
        ({"header": False, "sep": ";"}, {"header": "false", "sep": ";"}),
        ({"HEADER": "false"}, {"HEADER": "false"}),
    ],
)
def test_public_key_options_keep_the_header_default(
    options: dict[str, Any] | None, expected: dict[str, str]
) -> None:
    keys: dict[str, Any] = {"path": "/srv/keys.csv"}
    if options is not None:
        keys["options"] = options
    public_keys = build(public_config(**keys)).partition_selection.public_keys
    assert public_keys is not None
    assert public_keys.options == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2025", "2025"), ("2025-01-31", "2025-01-31"), ('"2026-W47"', "2026-W47")],
)
def test_data_period_accepts_yaml_numbers_and_dates(
    tmp_path: Path, text: str, expected: str
) -> None:
    body = yaml.safe_dump(raw_config()).replace("data_period: p", f"data_period: {text}")
    assert f"data_period: {text}" in body
    assert load_config(write(tmp_path, body)).release.data_period == expected


def test_data_period_from_python_values() -> None:
    date = datetime.date(2025, 1, 31)
    assert build(with_value(raw_config(), "release.data_period", date)).release.data_period == (
        "2025-01-31"
    )
    with pytest.raises(ConfigError, match=r"release\.data_period: must be text"):
        build(with_value(raw_config(), "release.data_period", True))


# 8. Contracts default.


def test_empty_input_publishes_by_default_and_fail_stays_allowed() -> None:
    assert build(raw_config()).contracts.empty_input == "publish"
    raw = raw_config()
    raw["contracts"] = {"empty_input": "fail"}
    assert build(raw).contracts.empty_input == "fail"
    description = ContractsConfig.model_fields["empty_input"].description or ""
    assert "operator choice" in description
    assert "one bit" in description
    assert "whether any valid row exists" in description
