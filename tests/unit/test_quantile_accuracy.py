"""Accuracy planning for quantiles: the rank half-width `dprelease plan` states, and
accuracy-first targets in ranks (docs/privacy.md §4b, §7)."""

from __future__ import annotations

from pathlib import Path

import pytest
from scipy.stats import binom

from dp_ops.quantile_tree import expected_rank_error, rank_error_std, rank_half_width
from pipelines.accuracy import expected_accuracy, plan_for_targets, target_results, with_budget
from pipelines.config import ConfigError, JobConfig, config_from_mapping
from pipelines.plan import build_plan
from tests.support import PLAN_JOB, config_mapping
from tests.unit.test_quantile_tree import LAPLACE, PARTITION_SIZE, SHAPE, rank_errors

QUANTILES = {
    "metric": "quantiles",
    "column": "los",
    "lower": 0.0,
    "upper": 100.0,
    "ranks": [0.5, 0.9],
    "name": "los",
}


def _config(targets: list[dict[str, object]] | None = None, rows_per_unit: int = 1) -> JobConfig:
    raw = config_mapping(
        Path("releases"),
        Path("in.parquet"),
        base=PLAN_JOB,
        metrics=[{"metric": "count"}, QUANTILES],
    )
    raw["accuracy"] = {"rows_per_unit": rows_per_unit, "targets": targets or []}
    return config_from_mapping(raw)


def test_the_planned_rank_half_width_covers_simulated_medians() -> None:
    """300 medians at n = 1,000, epsilon 1 (the tree_sensitivity(1, 1, 4) noise), normal
    data: the planned 95% rank half-width holds at least 268 of the 300 rank errors.

    False-failure rate: if the true coverage is >= 0.95, P(fewer than 270) =
    binom.cdf(267, 300, 0.95) < 3e-5 (checked below). Power: half the planned width holds
    fewer than 268 (its true coverage is about 0.77), so a figure 2x too small is caught.
    """
    trials, needed = 300, 268
    assert binom.cdf(needed - 1, trials, 0.95) < 3e-5
    errors = rank_errors(LAPLACE, trials, seed=77)
    half_width = rank_half_width(SHAPE, LAPLACE, PARTITION_SIZE, 0.05)
    print(f"planned rank half-width {half_width:.4f}; held {(errors <= half_width).sum()}/300")
    assert (errors <= half_width).sum() >= needed
    assert (errors <= half_width / 2).sum() < needed


def test_rank_figures_share_one_model_and_are_capped() -> None:
    std = rank_error_std(SHAPE, LAPLACE, PARTITION_SIZE)
    assert expected_rank_error(SHAPE, LAPLACE, PARTITION_SIZE) == pytest.approx(
        std * (2 / 3.141592653589793) ** 0.5
    )
    assert rank_half_width(SHAPE, LAPLACE, PARTITION_SIZE, 0.05) == pytest.approx(1.959964 * std)
    assert rank_half_width(SHAPE, LAPLACE, 1, 0.05) == 1.0
    with pytest.raises(ValueError, match="alpha"):
        rank_half_width(SHAPE, LAPLACE, 10, 1.0)


def test_expected_accuracy_of_a_quantile_is_in_ranks_from_the_plan_s_tree() -> None:
    config = _config(rows_per_unit=5)
    found = expected_accuracy(config, [100, 1000, 10_000])["los"]
    tree = build_plan(config).trees[0].tree
    assert tree is not None
    linf = config.contribution_bounds.max_rows_per_unit_per_partition
    for item in found:
        assert item.rows == item.units * linf  # each unit keeps at most Linf values
        expected = rank_half_width(tree.shape, tree.nodes.noise, item.rows, 1 - 0.95)
        assert item.accuracy.half_width == pytest.approx(expected)
        view = item.to_dict()
        assert view["measured_in"] == "ranks"
        assert view["relative_half_width"] == view["half_width"]
    widths = [item.accuracy.half_width for item in found]
    assert widths == sorted(widths, reverse=True) and widths[-1] < widths[0]


def test_a_rank_target_finds_the_smallest_epsilon() -> None:
    config = _config([{"metric": "los", "units": 2000, "relative": 0.05}])
    plan = plan_for_targets(config)
    assert plan.epsilon is not None
    met = target_results(with_budget(config, plan.epsilon, plan.weights))
    assert all(r["met"] for r in met) and met[0]["goal_half_width"] == 0.05
    below = target_results(with_budget(config, plan.epsilon * 0.99, plan.weights))
    assert not all(r["met"] for r in below)


def test_a_quantile_target_in_value_units_is_refused_naming_the_field() -> None:
    config = _config([{"metric": "los", "units": 100, "half_width": 2.0}])
    with pytest.raises(ConfigError, match=r"accuracy\.targets\[0\]\.half_width: a quantile"):
        plan_for_targets(config)
