"""Accuracy-first planning: expected intervals, the smallest epsilon meeting targets, the
keep table until 1, and display rounding. All data-free."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from dp_ops.accuracy import mean_accuracy
from jobs.cli import main
from pipelines.accuracy import (
    expected_accuracy,
    keep_probability_table,
    plan_for_targets,
    target_results,
    with_budget,
)
from pipelines.config import ConfigError, config_from_mapping
from pipelines.display import format_budget, format_interval
from pipelines.errors import ExitCode
from pipelines.plan import build_plan
from pipelines.plan_description import describe_plan
from tests.unit.test_plan import raw_config

TARGETS: dict[str, Any] = {
    "rows_per_unit": 2,
    "units": [50, 200],
    "targets": [
        {"metric": "mean_v", "half_width": 0.3, "units": 200},
        {"metric": "count", "relative": 0.05, "units": 200},
    ],
}


def _config(**overrides: Any) -> Any:
    return config_from_mapping(raw_config(accuracy=TARGETS, **overrides))


def test_expected_accuracy_matches_the_plan_s_own_noise() -> None:
    config = _config()
    described: dict[str, Any] = describe_plan(build_plan(config))
    mechanisms = {m["name"]: m for m in described["mechanisms"]}
    found = expected_accuracy(config)
    assert set(found) == {"count", "privacy_id_count", "sum_v", "mean_v"}  # no variance
    count = found["count"][0]
    assert count.accuracy.half_width == mechanisms["count"]["ci_half_width"]
    assert count.rows == 100  # 50 units x 2 rows (Linf = 2)
    mean = found["mean_v"][1]
    expected = mechanisms["mean_v.normalized_sum"]["std"] / (2 * 400)
    assert mean.accuracy.std == pytest.approx(expected)
    # Larger partitions, tighter means; counts do not depend on the size.
    assert found["mean_v"][1].accuracy.half_width < found["mean_v"][0].accuracy.half_width
    assert found["count"][0].accuracy == found["count"][1].accuracy


def test_mean_interval_at_the_middle_and_off_it() -> None:
    centred = mean_accuracy(1000, numerator_std=200, numerator_half_width=600,
                            count_std=40, count_half_width=100)  # fmt: skip
    assert centred.std == pytest.approx(0.1)
    assert centred.half_width == pytest.approx(600 / (2 * 900))
    off = mean_accuracy(1000, 200, 600, 40, 100, offset=2.0)
    assert off.half_width > centred.half_width and off.std > centred.std


def test_smallest_epsilon_meets_every_target_and_is_minimal() -> None:
    config = _config()
    plan = plan_for_targets(config)
    assert plan.epsilon is not None
    assert abs(sum(plan.weights.values()) - 1) < 1e-9
    met = target_results(with_budget(config, plan.epsilon, plan.weights))
    assert all(r["met"] for r in met)
    # One step below the three-digit answer (and 1% below) misses some target.
    below = target_results(with_budget(config, plan.epsilon * 0.99, plan.weights))
    assert not all(r["met"] for r in below)
    # The selection keeps its configured fraction of the budget (to the 4 decimals shown).
    assert plan.weights["selection"] == pytest.approx(config.weights["selection"], abs=1e-4)


def test_unreachable_targets_and_unknown_metrics() -> None:
    impossible = dict(TARGETS, targets=[{"metric": "count", "half_width": 1e-9, "units": 10}])
    assert plan_for_targets(config_from_mapping(raw_config(accuracy=impossible))).epsilon is None
    unknown = dict(TARGETS, targets=[{"metric": "nope", "half_width": 1.0, "units": 10}])
    with pytest.raises(ConfigError, match=r"accuracy\.targets\[0\]\.metric"):
        plan_for_targets(config_from_mapping(raw_config(accuracy=unknown)))
    both = dict(TARGETS, targets=[{"metric": "count", "half_width": 1, "relative": 1, "units": 1}])
    with pytest.raises(ConfigError, match="exactly one"):
        config_from_mapping(raw_config(accuracy=both))


def test_the_keep_table_runs_until_it_reaches_one() -> None:
    described = describe_plan(build_plan(_config()))
    table = keep_probability_table(described)
    units = [n for n, _ in table]
    probabilities = [p for _, p in table]
    assert units[0] == 1 and units == sorted(units)
    assert probabilities == sorted(probabilities)
    assert probabilities[-1] == 1.0 and probabilities[-2] < 1.0
    # The last row is the first certain keep: one unit fewer is not certain.
    rule = build_plan(_config()).selection
    assert not isinstance(rule, type(None))
    assert rule.keep_probability(units[-1] - 1) < 1.0  # type: ignore[union-attr]
    public = raw_config(
        partition_selection={"mechanism": "public", "public_keys": {"path": "/tmp/k.csv"}},
    )
    public["budget"] = {"epsilon": 1.0, "delta": 0.0}
    assert keep_probability_table(describe_plan(build_plan(config_from_mapping(public)))) == []


def test_plan_command_prints_accuracy_at_a_given_epsilon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw_config(accuracy=TARGETS)), encoding="utf-8")
    assert main(["plan", str(path), "--epsilon", "2", "--units", "10,1000"]) == ExitCode.OK
    printed = json.loads(capsys.readouterr().out)
    accuracy = printed["accuracy"]
    assert printed["budget"]["epsilon"] == 2.0 and accuracy["epsilon"] == 2.0
    assert [r["units"] for r in accuracy["metrics"]["mean_v"]] == [10, 1000]
    assert accuracy["keep_probability_by_units"][-1][1] == 1.0
    assert accuracy["accuracy_first"]["smallest_epsilon"] > 0
    assert {r["metric"] for r in accuracy["targets"]} == {"mean_v", "count"}


@pytest.mark.parametrize(
    ("value", "low", "high", "shown"),
    [
        (5.2, 4.9, 5.5, "5.2 ± 0.3"),
        (3.68, 3.54, 3.82, "3.68 ± 0.14"),
        (5613, 4714, 6512, "5,613 ± 899"),
        (0.5, 0.5, 5.0, "0.5 [0.5, 5.0]"),
        (0, 0, 27, "0 [0, 27]"),
    ],
)
def test_values_are_shown_at_the_precision_of_their_interval(
    value: float, low: float, high: float, shown: str
) -> None:
    assert format_interval(value, low, high) == shown


def test_budgets_print_exactly_when_exact() -> None:
    assert format_budget(1.0) == "1"
    assert format_budget(1e-6) == "1e-06"
    assert format_budget(0.9999999999254943) == "1"
