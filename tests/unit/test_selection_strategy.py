"""The selection strategy from the plan alone: auto, and post-aggregation thresholding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from dp_ops.noise import NoiseDistribution
from dp_ops.selection_rules import (
    GaussianThresholdSelection,
    LaplaceThresholdSelection,
    ThresholdRule,
    TruncatedGeometricSelection,
)
from pipelines.config import config_from_mapping
from pipelines.noising import noise_step, noisy_frame
from pipelines.plan import UNITS, ReleasePlan, build_plan
from pipelines.plan_selection import units_for_half
from tests.support import PLAN_JOB, config_mapping

BENCH_METRICS = [
    {"metric": "count"},
    {"metric": "privacy_id_count"},
    {"metric": "sum", "column": "value", "lower": 0.0, "upper": 100.0},
    {"metric": "mean", "column": "value", "lower": 0.0, "upper": 100.0},
]


def plan_of(selection: dict[str, Any], metrics: Any = None, **overrides: Any) -> ReleasePlan:
    raw = config_mapping(Path("/out"), Path("/in.parquet"), base=PLAN_JOB, **overrides)
    raw["contribution_bounds"] = {
        "max_partitions_per_unit": 3,
        "max_rows_per_unit_per_partition": 2,
    }
    raw["metrics"] = metrics or BENCH_METRICS
    raw["partition_selection"] = selection
    return build_plan(config_from_mapping(raw))


def test_auto_picks_the_rule_with_the_fewest_units_for_half_and_says_why() -> None:
    plan = plan_of({"mechanism": "auto"})
    forced = {
        m: plan_of({"mechanism": m}).selection
        for m in ("truncated_geometric", "laplace_threshold", "gaussian_threshold")
    }
    units = {m: units_for_half(rule) for m, rule in forced.items()}  # type: ignore[arg-type]
    best = min(units, key=lambda m: units[m])
    assert plan.selection == forced[best]
    for mechanism, count in units.items():
        assert f"{mechanism} {count:,}" in plan.selection_reason
    assert plan.selection_reason.startswith(f"auto: {best} ")
    # At L0 = 3 with a released privacy_id_count, a threshold on it wins.
    assert isinstance(plan.selection, ThresholdRule) and plan.selection_reuses == "privacy_id_count"


def test_units_for_half_is_the_first_unit_count_kept_with_probability_half() -> None:
    rule = LaplaceThresholdSelection(0.5, 1e-6, 3)
    n = units_for_half(rule)
    assert rule.keep_probability(n) >= 0.5 > rule.keep_probability(n - 1)
    geometric = TruncatedGeometricSelection(0.2, 1e-6, 3)
    n = units_for_half(geometric)
    assert geometric.keep_probability(n) >= 0.5 > geometric.keep_probability(n - 1)


@pytest.mark.parametrize("noise", ["laplace", "gaussian"])
@pytest.mark.parametrize("mechanism", ["laplace_threshold", "gaussian_threshold"])
def test_post_aggregation_thresholding_spends_the_two_shares_once(
    mechanism: str, noise: str
) -> None:
    """The rule's epsilon is selection's share plus the count's; the count's aggregate has
    the rule's noise and spends nothing; the total stays within the budget."""
    plan = plan_of({"mechanism": mechanism}, noise=noise)
    rule = plan.selection
    assert isinstance(rule, LaplaceThresholdSelection | GaussianThresholdSelection)
    assert plan.selection_reuses == "privacy_id_count"
    shares = plan.split.shares
    assert rule.epsilon == pytest.approx(float(shares["selection"] + shares["privacy_id_count"]))
    count = plan.aggregate("privacy_id_count")
    assert count.noise == rule.noise and count.spend.epsilon == 0.0
    assert plan.composition.epsilon <= 1.0 * (1 + 1e-9)
    assert plan.composition.delta <= 1e-6 * (1 + 1e-9)
    separate = plan_of({"mechanism": mechanism, "post_aggregation": False}, noise=noise)
    assert separate.selection_reuses is None
    assert separate.selection.epsilon == pytest.approx(float(shares["selection"]))  # type: ignore[union-attr]
    assert units_for_half(rule) < units_for_half(separate.selection)  # type: ignore[arg-type]


def test_without_a_privacy_id_count_nothing_is_reused() -> None:
    plan = plan_of({"mechanism": "laplace_threshold"}, metrics=[{"metric": "count"}])
    assert plan.selection_reuses is None


class FixedNoise:
    """Noise +5 on every draw; records the distributions drawn from."""

    def __init__(self) -> None:
        self.draws: list[tuple[NoiseDistribution, int]] = []

    def integer_noise(self, distribution: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
        self.draws.append((distribution, size))
        return np.full(size, 5, dtype=np.int64)

    def keep(self, probabilities: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        raise AssertionError("a threshold rule draws no Bernoulli")


def test_the_released_count_is_the_thresholded_noisy_count_drawn_once() -> None:
    plan = plan_of({"mechanism": "laplace_threshold"}, metrics=[{"metric": "privacy_id_count"}])
    rule = plan.selection
    assert isinstance(rule, LaplaceThresholdSelection)
    t = rule.threshold
    units = pd.Series([t - 6, t - 5, t, t + 100], dtype="int64")
    source = FixedNoise()
    frame = noisy_frame(noise_step(plan), {UNITS: units}, source)
    assert frame["keep"].tolist() == [False, True, True, True]
    assert frame["privacy_id_count"].dropna().tolist() == [t, t + 5, t + 105]
    assert source.draws == [(rule.noise, 4)]  # one draw per partition, for both uses
