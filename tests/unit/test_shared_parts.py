"""Shared parts (a sum derived from a mean's noisy parts) and the default weights."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from dp_ops.noise import NoiseDistribution
from pipelines.config import JobConfig, config_from_mapping
from pipelines.noising import noise_step, noisy_frame
from pipelines.plan import OutputMetric, ReleasePlan, build_plan
from pipelines.plan_description import describe_plan
from tests.support import config_mapping

PUBLIC = {"mechanism": "public", "public_keys": {"values": {"key": ["a", "b"]}}}


def _config(shared: bool = True, **overrides: Any) -> JobConfig:
    raw = config_mapping(Path("/tmp/out"), Path("/tmp/in.parquet"), **overrides)
    raw["budget"] = {**raw["budget"], "share_parts": shared}
    return config_from_mapping(raw)


def _output(plan: ReleasePlan, name: str) -> OutputMetric:
    return next(o for o in plan.outputs if o.name == name)


class ZeroNoise:
    """No noise and every partition kept: the released values are the exact ones."""

    def integer_noise(self, distribution: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
        return np.zeros(size, dtype=np.int64)

    def keep(self, probabilities: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        return np.ones(len(probabilities), dtype=bool)


def test_the_sum_draws_no_noise_and_its_weight_is_spent_by_the_mean() -> None:
    config = _config(partition_selection=PUBLIC)
    plan = build_plan(config)
    names = [a.name for a in plan.aggregates]
    assert "sum_value" not in names and "mean_value.normalized_sum" in names
    total, mean = _output(plan, "sum_value"), _output(plan, "mean_value")
    assert total.shared is not None and total.shared.lender == "mean_value"
    assert total.mechanisms == ["mean_value.normalized_sum", "count"]
    assert total.budget_share == 0.0
    weights = config.weights
    assert mean.budget_share == pytest.approx(weights["sum_value"] + weights["mean_value"])
    assert mean.encoding is not None and total.encoding is not None
    assert total.encoding.grid.step == mean.encoding.grid.step / 2
    assert plan.composition.epsilon == pytest.approx(config.budget.epsilon, rel=1e-12)
    assert "sum_value" not in plan.encodings  # bounding encodes the column once, for the mean


def test_the_derived_sum_is_the_exact_sum_without_noise() -> None:
    plan = build_plan(_config(partition_selection=PUBLIC))
    mean = _output(plan, "mean_value").encoding
    assert mean is not None
    # Two partitions: values {2, 5, 7.5} and {10}, one row per unit (no Linf scaling).
    values = [[2.0, 5.0, 7.5], [10.0]]
    units = [[round(v / mean.grid.step) for v in vs] for vs in values]
    centred = [sum(2 * u - mean.lo_units - mean.hi_units for u in us) for us in units]
    exact = {
        "units": [3, 1],
        "rows": [3, 1],
        "nsum__mean_value": centred,
    }
    columns = {k: pd.Series(np.asarray(v, dtype=np.int64)) for k, v in exact.items()}
    frame = noisy_frame(noise_step(plan), columns, ZeroNoise())
    assert frame["sum_value"].tolist() == [14.5, 10.0]
    assert frame["count"].tolist() == [3, 1]
    assert (frame["sum_value_ci_low"] <= frame["sum_value"]).all()


def test_a_shared_sum_has_less_noise_than_its_own_at_the_same_weights() -> None:
    weights = {"selection": 0.2, "privacy_id_count": 0.2, "count": 0.2}
    weights |= {"sum_value": 0.2, "mean_value": 0.2}
    budget = {"epsilon": 1.0, "delta": 1e-6, "weights": weights}
    shared: dict[str, Any] = describe_plan(build_plan(_config(True, budget=budget)))
    own: dict[str, Any] = describe_plan(build_plan(_config(False, budget=budget)))
    own_std = next(m["std"] for m in own["mechanisms"] if m["name"] == "sum_value")
    assert shared["shared_parts"]["sum_value"]["std"] < 0.75 * own_std


def test_share_parts_false_and_other_bounds_keep_the_sum_s_own_noise() -> None:
    assert "sum_value" in [a.name for a in build_plan(_config(False)).aggregates]
    metrics = [
        {"metric": "count"},
        {"metric": "sum", "column": "value", "lower": 0.0, "upper": 5.0},
        {"metric": "mean", "column": "value", "lower": 0.0, "upper": 10.0},
    ]
    config = _config(True, metrics=metrics)
    assert config.shared_sums == {}
    assert "sum_value" in [a.name for a in build_plan(config).aggregates]


# ---- default weights ---------------------------------------------------------------


def _relative_variance(plan: ReleasePlan, skip: set[str]) -> float:
    """The objective the defaults minimise: Σ (a part's noise std / its metric's scale)²
    over the parts the metrics draw (not a shared sum, nor the fixed mechanisms), at a
    partition of one unit with one row (the reference size cancels): counts 1, a sum
    max|bound|, a mean's normalised sum (upper - lower) / 2 in half-grid steps."""
    total = 0.0
    for output in plan.outputs:
        if output.name in skip or output.shared is not None:
            continue
        own = [m for _, m in output.sources if m.split(".")[0] == output.name]
        for mechanism in own:
            std = plan.aggregate(mechanism).noise.std()
            encoding = output.encoding
            if encoding is not None and mechanism != f"{output.name}.count":
                bound = max(abs(encoding.lower), abs(encoding.upper))
                scale = bound if not output.kind.lends_sum else encoding.upper - encoding.lower
                std *= encoding.grid.step / scale
            total += std**2
    return total


@pytest.mark.parametrize("noise", ["laplace", "gaussian"])
def test_default_weights_minimise_the_stated_objective(noise: str) -> None:
    config = _config(True, noise=noise)
    weights = config.weights
    assert all(w > 0 for w in weights.values()) and sum(weights.values()) == pytest.approx(1)
    fixed = {"selection", "privacy_id_count"}
    assert weights["selection"] == weights["privacy_id_count"] == pytest.approx(1 / 5)
    best = _relative_variance(build_plan(config), fixed)
    free = [n for n in weights if n not in fixed]
    rest = 1.0 - sum(weights[n] for n in fixed)
    rng = np.random.default_rng(11)
    for _ in range(25):
        raw = rng.dirichlet(np.ones(len(free)))
        trial = {n: weights[n] for n in fixed} | {
            n: float(rest * w) for n, w in zip(free, raw, strict=True)
        }
        trial[free[-1]] = 1.0 - sum(v for k, v in trial.items() if k != free[-1])
        budget = {"epsilon": 1.0, "delta": 1e-6, "weights": trial}
        other = _relative_variance(build_plan(_config(True, noise=noise, budget=budget)), fixed)
        assert best <= other * (1 + 1e-3)


def test_default_weights_are_data_free_and_name_every_output() -> None:
    config = _config(True, partition_selection=PUBLIC)
    weights = config.weights
    assert set(weights) == {"privacy_id_count", "count", "sum_value", "mean_value"}
    # A sum and its lender share their group's weight equally.
    assert weights["sum_value"] == pytest.approx(weights["mean_value"])
    shares = build_plan(config).split.shares
    assert sum(shares.values(), Fraction(0)) == 1
