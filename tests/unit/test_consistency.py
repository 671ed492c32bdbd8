"""Consistent rows and reliability flags: data-free post-processing of every released row."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pytest
from pyspark.sql import types as T

from dp_ops.noise import NoiseDistribution
from pipelines.config import ConfigError, config_from_mapping
from pipelines.consistency import (
    clip_sum,
    consistency_steps,
    consistent_values,
    project_count_pair,
    row_rules,
)
from pipelines.derivation import RELIABILITY_RULE, unreliable
from pipelines.noising import noise_step, noisy_frame, release_schema
from pipelines.plan import ReleasePlan, build_plan
from pipelines.readme import _reliability
from pipelines.released import FLAG, released_name
from tests.support import config_mapping

KEYS = ["a", "b"]


def _plan(**post: Any) -> ReleasePlan:
    raw = config_mapping("/tmp/out", "/tmp/in.parquet")  # type: ignore[arg-type]
    raw["partition_selection"] = {"mechanism": "public", "public_keys": {"values": {"key": KEYS}}}
    raw["post_processing"] = post
    return build_plan(config_from_mapping(raw))


class TargetNoise:
    """Noise that makes every noisy aggregate equal a chosen integer (a seam for tests)."""

    def __init__(self, targets: dict[str, npt.NDArray[np.int64]], exact: dict[str, Any]) -> None:
        self.targets, self.exact, self.calls = targets, exact, 0

    def integer_noise(self, distribution: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
        name = list(self.targets)[self.calls]
        self.calls += 1
        return np.asarray(self.targets[name] - self.exact[name], dtype=np.int64)

    def keep(self, probabilities: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        return np.ones(len(probabilities), dtype=bool)


def test_a_crossed_pair_becomes_the_inverse_variance_weighted_mean() -> None:
    units = np.array([10, 3, 7], dtype=np.int64)
    rows = np.array([4, 9, 7], dtype=np.int64)
    new_units, new_rows = project_count_pair(units, rows, units_variance=1.0, rows_variance=3.0)
    # Crossed in the first row: (3*10 + 1*4) / 4 = 8.5, rounded half to even.
    assert new_units.tolist() == [8, 3, 7]
    assert new_rows.tolist() == [8, 9, 7]


def test_the_projection_minimises_the_weighted_distance_among_consistent_integers() -> None:
    rng = np.random.default_rng(7)
    units = rng.integers(-20, 40, 300)
    rows = rng.integers(-20, 40, 300)
    vu, vr = 2.0, 5.0
    new_units, new_rows = project_count_pair(units, rows, vu, vr)
    assert (new_rows >= new_units).all()
    grid = np.arange(-25, 45)
    for u, r, nu, nr in zip(units, rows, new_units, new_rows, strict=True):
        cost = (grid[:, None] - u) ** 2 / vu + (grid[None, :] - r) ** 2 / vr
        cost[grid[:, None] > grid[None, :]] = np.inf  # only u <= r is consistent
        assert (nu - u) ** 2 / vu + (nr - r) ** 2 / vr <= cost.min() + (vu + vr) / (4 * vu * vr)


def test_a_sum_is_clipped_to_the_count_times_its_grid_bounds() -> None:
    total = np.array([-5, 50, 12, 3], dtype=np.int64)
    count = np.array([2, 3, 0, -4], dtype=np.int64)
    assert clip_sum(total, count, 0, 10).tolist() == [0, 30, 0, 0]
    assert clip_sum(total, count, -2, 4).tolist() == [-4, 12, 0, 0]
    assert clip_sum(total, None, 0, 10).tolist() == [0, 50, 12, 3]
    assert clip_sum(total, None, -10, -1).tolist() == [-5, 0, 0, 0]
    assert clip_sum(total, None, -1, 1).tolist() == total.tolist()
    huge = np.array([2**70], dtype=object)
    assert clip_sum(huge, np.array([2**40], dtype=np.int64), 0, 2**31).tolist() == [2**70]


def _frame(plan: ReleasePlan, exact: dict[str, Any], noisy: dict[str, Any]) -> pd.DataFrame:
    step = noise_step(plan)
    columns = {name: pd.Series(values) for name, values in exact.items()}
    targets = {a.name: np.asarray(noisy[a.name], dtype=np.int64) for a in step.aggregates}
    sources = {a.name: np.asarray(exact[a.source], dtype=np.int64) for a in step.aggregates}
    return noisy_frame(step, columns, TargetNoise(targets, sources))


def test_released_rows_are_a_function_of_the_noisy_values_only() -> None:
    plan = _plan()
    noisy = {a.name: np.array([9, -2]) for a in plan.aggregates}
    noisy["count"] = np.array([4, 1])
    sources = {a.source for a in plan.aggregates} | {"units"}
    one = {source: np.array([3, 1]) for source in sources}
    other = {source: np.array([40, 0]) for source in sources}
    assert _frame(plan, one, noisy).equals(_frame(plan, other, noisy))


@pytest.mark.parametrize("seed", range(5))
def test_every_released_row_is_consistent_and_inside_its_interval(seed: int) -> None:
    plan = _plan()
    rng = np.random.default_rng(seed)
    noisy = {a.name: rng.integers(-30, 60, 2) for a in plan.aggregates}
    exact = {s: np.zeros(2, dtype=np.int64) for s in {a.source for a in plan.aggregates}}
    frame = _frame(plan, exact | {"units": np.zeros(2, dtype=np.int64)}, noisy)
    grid = plan.encodings["sum_value"].grid.step
    hi_units = plan.encodings["sum_value"].hi_units
    count, units = frame["count"].astype(float), frame["privacy_id_count"].astype(float)
    assert (count >= units).all() and (units >= 0).all()
    sums = frame["sum_value"].astype(float) / grid
    assert (sums >= 0).all() and (sums <= count * hi_units).all()
    for output in plan.outputs:
        value = frame[output.name].astype(float)
        assert (frame[f"{output.name}_ci_low"] <= value).all()
        assert (value <= frame[f"{output.name}_ci_high"]).all()


def test_consistent_rows_off_leaves_the_noisy_values_as_drawn() -> None:
    plan = _plan(consistent_rows=False)
    assert row_rules(plan.outputs, plan.post).empty
    noisy = {"privacy_id_count": np.array([9]), "count": np.array([2])}
    assert consistent_values(row_rules(plan.outputs, plan.post), noisy, {}) == {}


def test_the_manifest_lists_the_projection_among_the_post_processing_steps() -> None:
    plan = _plan()
    rules = row_rules(plan.outputs, plan.post)
    assert rules.count is not None and rules.count.output == "count"
    assert "inverse-variance weighted mean" in consistency_steps(rules, "count")[0]
    assert "inverse-variance weighted mean" in consistency_steps(rules, "privacy_id_count")[0]
    assert consistency_steps(rules, "sum_value") == [
        "clipped to ['count' * lower, 'count' * upper] (bounds rounded to the grid)"
    ]
    assert consistency_steps(rules, "mean_value") == []


def test_the_reliability_flag_marks_values_whose_half_width_exceeds_the_share() -> None:
    value = np.array([10.0, 10.0, 0.0, -4.0, 0.0])
    low = np.array([6.0, 4.0, 0.0, -6.0, -1.0])
    high = np.array([14.0, 16.0, 0.0, -2.0, 1.0])
    # Half-widths 4, 6, 0, 2, 1 against 0.5 * |value| = 5, 5, 0, 2, 0.
    assert unreliable(value, low, high, 0.5).tolist() == [False, True, False, False, True]


def test_flags_are_released_columns_fixed_by_the_config() -> None:
    plain, flagged = _plan(), _plan(reliability_share=0.5)
    assert not any(c.boolean for c in plain.released)
    flags = [c for c in flagged.released if c.boolean]
    assert [c.name for c in flags] == [released_name(o.name, FLAG) for o in flagged.outputs]
    schema = release_schema(flagged, T.StructType([T.StructField("key", T.StringType())]))
    assert {schema.field(c.name).type for c in flags} == {pa.bool_()}
    assert schema.names.index("count_unreliable") == schema.names.index("count_ci_high") + 1


def test_the_noise_step_sets_each_flag_by_the_rule() -> None:
    plan = _plan(reliability_share=0.5)
    noisy = {a.name: np.array([500, 1]) for a in plan.aggregates}
    exact = {s: np.zeros(2, dtype=np.int64) for s in {a.source for a in plan.aggregates}}
    frame = _frame(plan, exact | {"units": np.zeros(2, dtype=np.int64)}, noisy)
    for output in plan.outputs:
        value, low, high = (
            frame[released_name(output.name, s)].astype(float)
            for s in ("value", "ci_low", "ci_high")
        )
        expected = unreliable(value, low, high, 0.5)
        assert frame[released_name(output.name, FLAG)].astype(bool).tolist() == expected.tolist()
    assert frame["count_unreliable"].tolist() == [False, True]


@pytest.mark.parametrize("share", [0, -1, float("inf"), True])
def test_a_reliability_share_must_be_a_positive_number(share: object) -> None:
    raw = config_mapping("/tmp/out", "/tmp/in.parquet")  # type: ignore[arg-type]
    raw["post_processing"] = {"reliability_share": share}
    with pytest.raises(ConfigError, match="reliability_share"):
        config_from_mapping(raw)


def test_the_release_readme_states_the_flag_rule() -> None:
    manifest: dict[str, Any] = {
        "columns": [
            {"reliability": {"column": "count_unreliable", "share": 0.5, "rule": RELIABILITY_RULE}}
        ]
    }
    (sentence, _) = _reliability(manifest)
    assert "`count_unreliable`" in sentence and RELIABILITY_RULE in sentence and "0.5" in sentence
