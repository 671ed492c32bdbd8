"""Plan limits: what depends only on the config is refused by `build_plan`, before Spark.

Every limit on a derived number (noise scales in grid units, the keep table, selection
thresholds, the exact-arithmetic proof, grids that cannot resolve the bounds) is refused
with a ConfigError naming the config field and the limit, so `dprelease plan` and
`dprelease run` refuse the same configs (docs/privacy.md §3, §5, §6).
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import dp_ops.selection
import pipelines.plan
import pipelines.plan_limits
from dp_ops.noise import DiscreteGaussian, DiscreteLaplace, NoiseDistribution
from dp_ops.samplers import sample_discrete_gaussian, sample_discrete_laplace
from dp_ops.selection import (
    MAX_KEEP_TABLE_LENGTH,
    keep_table_length_lower_bound,
    truncated_geometric_keep_table,
)
from dp_ops.selection_rules import (
    GaussianThresholdSelection,
    LaplaceThresholdSelection,
    TruncatedGeometricSelection,
)
from pipelines.config import ConfigError, JobConfig, config_from_mapping
from pipelines.metric_kinds import VARIANCE
from pipelines.plan import (
    ArithmeticBoundError,
    Encoding,
    ReleasePlan,
    build_plan,
    check_exact_arithmetic,
)
from pipelines.plan_description import describe_plan
from pipelines.plan_limits import (
    MAX_GAUSSIAN_SIGMA_SQUARED_UNITS,
    MAX_LAPLACE_SCALE_UNITS,
    MAX_SELECTION_THRESHOLD,
    MIN_GAUSSIAN_SIGMA_SQUARED_UNITS,
    MIN_LAPLACE_SCALE_UNITS,
)
from tests.support import PLAN_JOB, config_mapping

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = {"mechanism": "public", "public_keys": {"path": "/tmp/keys.csv"}}
# Every refusal starts with the config field it is about.
FIELD_PREFIXES = (
    "budget.",
    "metrics[",
    "partition_selection.",
    "contribution_bounds.",
    "confidence_level",
    "post_processing.",
)


def raw_config(**overrides: Any) -> dict[str, Any]:
    metrics: list[dict[str, Any]] = [
        {"metric": "count"},
        {"metric": "privacy_id_count"},
        {"metric": "sum", "column": "value", "lower": -1.0, "upper": 4.0},
        {"metric": "mean", "column": "v", "lower": 0.0, "upper": 10.0},
    ]
    raw = config_mapping(Path("/tmp/out"), Path("/tmp/in.parquet"), PLAN_JOB, metrics=metrics)
    return raw | overrides


def bounds(l0: int, linf: int) -> dict[str, int]:
    return {"max_partitions_per_unit": l0, "max_rows_per_unit_per_partition": linf}


def refusal(**overrides: Any) -> str:
    """The message of the ConfigError build_plan raises for the config."""
    with pytest.raises(ConfigError) as caught:
        build_plan(config_from_mapping(raw_config(**overrides)))
    return str(caught.value)


def assert_names(message: str, *parts: str) -> None:
    assert message.startswith(FIELD_PREFIXES), message
    for part in parts:
        assert part in message, (part, message)


# The sum is metrics[2], after two cheap counts of units (public keys: no selection).
SUM_THIRD = [
    {"metric": "privacy_id_count"},
    {"metric": "privacy_id_count", "name": "units_again"},
    {"metric": "sum", "column": "value", "lower": 0.0, "upper": 1.0},
]
#: Equal shares for SUM_THIRD (the default weights would give the sum nearly all).
SUM_THIRD_BUDGET = {
    "epsilon": 1e-6,
    "delta": 0.0,
    "weights": {"privacy_id_count": 0.25, "units_again": 0.25, "sum_value": 0.5},
}


# --------------------------------------------------------------------------------------
# Exact arithmetic, in the plan.
# --------------------------------------------------------------------------------------


def test_build_plan_runs_the_exact_arithmetic_proof(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipelines.plan_limits, "_DECIMAL_LIMIT", 2**64)
    with pytest.raises(ArithmeticBoundError) as caught:
        build_plan(config_from_mapping(raw_config()))
    assert isinstance(caught.value, ConfigError)
    assert_names(str(caught.value), "metrics[2] (sum_value)", "decimal(38,0)")


def test_the_proof_refuses_integers_too_large_for_exact_sums() -> None:
    plan = build_plan(config_from_mapping(raw_config()))
    check_exact_arithmetic(plan)  # the plan as built passes
    output = plan.outputs[3]
    assert output.encoding is not None
    # A mean's cells add at most Linf·W: even the widest grid fits.
    wide = dataclasses.replace(output.encoding, lo_units=-(2**40), hi_units=2**40)
    outputs = (*plan.outputs[:3], dataclasses.replace(output, encoding=wide))
    check_exact_arithmetic(dataclasses.replace(plan, outputs=outputs))
    # A variance's cells add up to Linf·W²: W = 2**41 passes every limit.
    squares = (*plan.outputs[:3], dataclasses.replace(output, kind=VARIANCE, encoding=wide))
    with pytest.raises(ArithmeticBoundError, match=r"^metrics\[3\] \(mean_v\):.*10\*\*38"):
        check_exact_arithmetic(dataclasses.replace(plan, outputs=squares))
    # W² = 2**62 fits a long, but Linf = 2 such rows in one cell do not.
    narrow = dataclasses.replace(output.encoding, lo_units=0, hi_units=2**31)
    outputs = (*plan.outputs[:3], dataclasses.replace(output, kind=VARIANCE, encoding=narrow))
    assert plan.bounds.max_rows_per_unit_per_partition * 2**62 > 2**63 - 1
    with pytest.raises(ArithmeticBoundError, match=r"must fit a long"):
        check_exact_arithmetic(dataclasses.replace(plan, outputs=outputs))


def test_plan_and_cli_import_no_spark() -> None:
    code = (
        "import sys, pipelines.plan, jobs.cli; "
        "sys.exit(any(m.split('.')[0] == 'pyspark' for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


# --------------------------------------------------------------------------------------
# Noise scales in grid units.
# --------------------------------------------------------------------------------------


def test_laplace_scale_above_the_sampler_limit_names_the_metric() -> None:
    message = refusal(
        budget=SUM_THIRD_BUDGET,
        contribution_bounds=bounds(10**6, 10**6),
        metrics=SUM_THIRD,
        partition_selection=PUBLIC,
    )
    assert_names(
        message,
        "metrics[2] (sum_value)",
        "2**50 (MAX_LAPLACE_SCALE_UNITS)",
        "budget.weights.sum_value",
    )


def test_count_noise_above_the_sampler_limit_names_the_count() -> None:
    message = refusal(
        budget={"epsilon": 1e-6, "delta": 0.0},
        contribution_bounds=bounds(10**6, 10**6),
        partition_selection=PUBLIC,
    )
    assert_names(message, "metrics[0] (count)", "MAX_LAPLACE_SCALE_UNITS", "budget.epsilon")


def test_gaussian_sigma_above_the_sampler_limit_names_the_metric() -> None:
    message = refusal(
        noise="gaussian",
        budget={"epsilon": 1e-6, "delta": 1e-5},
        contribution_bounds=bounds(10**6, 10**6),
        metrics=SUM_THIRD,
        partition_selection=PUBLIC,
    )
    assert_names(message, "metrics[2] (sum_value)", "2**100 (MAX_GAUSSIAN_SIGMA_SQUARED_UNITS)")


@pytest.mark.parametrize(
    ("noise", "constant", "limit"),
    [
        ("laplace", "MIN_LAPLACE_SCALE_UNITS", Fraction(2**40)),
        ("gaussian", "MIN_GAUSSIAN_SIGMA_SQUARED_UNITS", Fraction(2**80)),
    ],
)
def test_noise_below_the_minimum_names_the_metric_and_epsilon(
    monkeypatch: pytest.MonkeyPatch, noise: str, constant: str, limit: Fraction
) -> None:
    # No config in range reaches the real minimum (checked in the property test); a
    # raised one shows the refusal.
    monkeypatch.setattr(pipelines.plan_limits, constant, limit)
    message = refusal(noise=noise)
    assert_names(message, "metrics[0] (count)", constant, "lower budget.epsilon")


def test_the_limits_are_the_samplers_limits() -> None:
    assert MAX_LAPLACE_SCALE_UNITS == 2**50
    assert MAX_GAUSSIAN_SIGMA_SQUARED_UNITS == 2**100
    assert MIN_LAPLACE_SCALE_UNITS * 2**8 == 1
    assert MIN_GAUSSIAN_SIGMA_SQUARED_UNITS * 2**16 == 1
    for scale in (MAX_LAPLACE_SCALE_UNITS, MIN_LAPLACE_SCALE_UNITS):
        assert draw_time(DiscreteLaplace(scale)) < 1.0
        assert math.isfinite(DiscreteLaplace(scale).std())
    for sigma_squared in (MAX_GAUSSIAN_SIGMA_SQUARED_UNITS, MIN_GAUSSIAN_SIGMA_SQUARED_UNITS):
        assert draw_time(DiscreteGaussian(sigma_squared)) < 1.0
        assert math.isfinite(DiscreteGaussian(sigma_squared).std())
    with pytest.raises(ValueError, match="2\\*\\*50"):
        sample_discrete_laplace(MAX_LAPLACE_SCALE_UNITS + Fraction(1, 2**20), 1)
    with pytest.raises(ValueError, match="2\\*\\*100"):
        sample_discrete_gaussian(MAX_GAUSSIAN_SIGMA_SQUARED_UNITS + 1, 1)


# --------------------------------------------------------------------------------------
# Partition selection: keep table and thresholds.
# --------------------------------------------------------------------------------------


def test_keep_table_too_long_names_the_budget_fields() -> None:
    start = time.perf_counter()
    message = refusal(budget={"epsilon": 1e-3, "delta": 1e-10}, contribution_bounds=bounds(100, 1))
    assert time.perf_counter() - start < 1.0  # refused without building the table
    assert_names(
        message,
        "budget.epsilon",
        "budget.weights.selection",
        "contribution_bounds.max_partitions_per_unit",
        "10,000,000 entries (MAX_KEEP_TABLE_LENGTH)",
    )


def test_keep_table_counts_the_min_units_prefix() -> None:
    message = refusal(partition_selection={"mechanism": "truncated_geometric", "min_units": 10**9})
    assert_names(
        message, "budget.epsilon", "partition_selection.min_units", "MAX_KEEP_TABLE_LENGTH"
    )


def test_keep_table_refused_when_built_over_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # The O(1) bound lets this table through; building it finds it too long.
    monkeypatch.setattr(dp_ops.selection, "MAX_KEEP_TABLE_LENGTH", 30)
    message = refusal()
    assert_names(message, "budget.epsilon", "MAX_KEEP_TABLE_LENGTH")


def test_keep_table_delta_too_small_names_budget_delta() -> None:
    message = refusal(budget={"epsilon": 1.0, "delta": 1e-13}, contribution_bounds=bounds(1000, 1))
    assert_names(
        message,
        "budget.delta",
        "contribution_bounds.max_partitions_per_unit",
        "1e-15 (MIN_KEEP_TABLE_DELTA)",
    )


def test_build_plan_builds_the_keep_table() -> None:
    plan = build_plan(config_from_mapping(raw_config()))
    assert isinstance(plan.selection, TruncatedGeometricSelection)
    assert "table" in vars(plan.selection)  # cached: built (and checked) by the plan


def test_threshold_noise_above_the_sampler_limit_names_the_selection() -> None:
    message = refusal(
        budget={
            "epsilon": 1e-6,
            "delta": 1e-6,
            "weights": {"selection": 1e-4, "privacy_id_count": 1 - 1e-4},
        },
        contribution_bounds=bounds(10**6, 1),
        metrics=[{"metric": "privacy_id_count"}],
        partition_selection={"mechanism": "laplace_threshold", "post_aggregation": False},
    )
    assert_names(
        message,
        "partition_selection.mechanism (laplace_threshold)",
        "MAX_LAPLACE_SCALE_UNITS",
        "budget.weights.selection",
        "contribution_bounds.max_partitions_per_unit",
    )


def test_gaussian_threshold_noise_above_the_sampler_limit_names_the_selection() -> None:
    message = refusal(
        noise="gaussian",
        # As epsilon goes to 0, rho tends to the rho of (0, delta): delta must be tiny too.
        budget={
            "epsilon": 1e-6,
            "delta": 1e-40,
            "weights": {"selection": 1e-6, "privacy_id_count": 1 - 1e-6},
        },
        contribution_bounds=bounds(10**6, 1),
        metrics=[{"metric": "privacy_id_count"}],
        partition_selection={"mechanism": "gaussian_threshold", "post_aggregation": False},
    )
    assert_names(
        message,
        "partition_selection.mechanism (gaussian_threshold)",
        "MAX_GAUSSIAN_SIGMA_SQUARED_UNITS",
    )


def test_threshold_at_or_above_2_53_is_refused() -> None:
    message = refusal(
        budget={
            "epsilon": 1e-6,
            "delta": 1e-100,
            "weights": {"selection": 0.01, "privacy_id_count": 0.99},
        },
        contribution_bounds=bounds(10**6, 1),
        metrics=[{"metric": "privacy_id_count"}],
        partition_selection={"mechanism": "laplace_threshold", "post_aggregation": False},
    )
    assert_names(
        message,
        "partition_selection.mechanism (laplace_threshold)",
        "2**53 (MAX_SELECTION_THRESHOLD)",
        "budget.epsilon",
    )
    assert MAX_SELECTION_THRESHOLD == 2**53


@settings(max_examples=40, deadline=None)
@given(
    epsilon_p=st.floats(1e-3, 700),
    delta_p=st.floats(1e-15, 0.9),
    min_units=st.integers(1, 50),
)
def test_the_keep_table_length_bound_is_a_lower_bound(
    epsilon_p: float, delta_p: float, min_units: int
) -> None:
    table = truncated_geometric_keep_table(epsilon_p, delta_p, min_units)
    assert keep_table_length_lower_bound(epsilon_p, delta_p, min_units) <= len(table)


def test_a_per_partition_epsilon_below_1e_15_still_builds_a_table() -> None:
    table = truncated_geometric_keep_table(1e-17, 1e-3)
    assert table[-1] == 1.0
    assert len(table) <= MAX_KEEP_TABLE_LENGTH


# --------------------------------------------------------------------------------------
# Grids, shares and the confidence level.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "lower", "upper"),
    [
        ("mean", 2.0**60 - 256, 2.0**60),  # narrow for its magnitude: one grid point
        ("variance", 0.0, 1e-310),  # narrower than the finest grid
        ("sum", -1e-310, 1e-310),
    ],
)
def test_bounds_the_grid_cannot_resolve_name_the_metric(
    metric: str, lower: float, upper: float
) -> None:
    message = refusal(
        budget={"epsilon": 100.0, "delta": 1e-6},
        metrics=[{"metric": metric, "column": "v", "lower": lower, "upper": upper}],
    )
    assert_names(message, f"metrics[0] ({metric}_v)", "MAX_ABS_UNITS")


def test_a_weight_whose_epsilon_underflows_names_the_weight() -> None:
    message = refusal(
        budget={"epsilon": 1e-6, "delta": 1e-6, "weights": {"selection": 1e-320, "count": 1.0}},
        metrics=[{"metric": "count"}],
    )
    assert_names(message, "budget.weights.selection", "underflows")


def test_a_confidence_level_that_rounds_away_is_refused() -> None:
    assert_names(refusal(confidence_level=1e-17), "confidence_level")


# --------------------------------------------------------------------------------------
# `dprelease plan` refuses the same configs, with exit 2 and without Spark.
# --------------------------------------------------------------------------------------


def test_plan_command_prints_the_refusal_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    raw = raw_config(
        budget=SUM_THIRD_BUDGET,
        contribution_bounds=bounds(10**6, 10**6),
        metrics=SUM_THIRD,
        partition_selection=PUBLIC,
    )
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    code = (
        "import sys\n"
        "from jobs.cli import main\n"
        "code = main(['plan', sys.argv[1]])\n"
        "assert not any(m.split('.')[0] == 'pyspark' for m in sys.modules)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "metrics[2] (sum_value)" in result.stderr
    assert "MAX_LAPLACE_SCALE_UNITS" in result.stderr
    assert result.stdout == ""


def test_plan_command_prints_an_accepted_plan(tmp_path: Path) -> None:
    from jobs.cli import main

    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(raw_config()), encoding="utf-8")
    assert main(["plan", str(config)]) == 0


# --------------------------------------------------------------------------------------
# Property: every accepted plan's noise is drawable, and its numbers are finite.
# --------------------------------------------------------------------------------------


def draw_time(noise: NoiseDistribution) -> float:
    """Seconds to draw one sample of ``noise`` through dp_ops.samplers."""
    start = time.perf_counter()
    if isinstance(noise, DiscreteLaplace):
        sample_discrete_laplace(noise.scale, 1)
    else:
        sample_discrete_gaussian(noise.sigma_squared, 1)
    return time.perf_counter() - start


def assert_finite(value: object, where: str = "plan") -> None:
    """Every number in a described plan is finite (and an int fits int64)."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert_finite(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            assert_finite(item, f"{where}[{i}]")
    elif isinstance(value, bool | str) or value is None:
        pass
    elif isinstance(value, int):
        assert abs(value) < 2**63, where
    else:
        assert isinstance(value, float), where
        assert math.isfinite(value), where


def noise_of(plan: ReleasePlan) -> list[NoiseDistribution]:
    noises = [a.noise for a in plan.aggregates]
    if isinstance(plan.selection, LaplaceThresholdSelection | GaussianThresholdSelection):
        noises.append(plan.selection.noise)
    return noises


def property_config(
    epsilon: float,
    delta: float,
    l0: int,
    linf: int,
    lower: float,
    upper: float,
    metric: str,
    with_count: bool,
    gaussian: bool,
    mechanism: str,
) -> JobConfig:
    metrics: list[dict[str, Any]] = [
        {"metric": metric, "column": "v", "lower": lower, "upper": upper}
    ]
    if with_count:
        metrics.insert(0, {"metric": "count"})
    selection: dict[str, Any] = PUBLIC if mechanism == "public" else {"mechanism": mechanism}
    return config_from_mapping(
        raw_config(
            budget={"epsilon": epsilon, "delta": delta},
            contribution_bounds=bounds(l0, linf),
            metrics=metrics,
            noise="gaussian" if gaussian else "laplace",
            partition_selection=selection,
        )
    )


@settings(max_examples=80, deadline=None)
@given(
    epsilon=st.floats(1e-6, 100),
    delta=st.floats(1e-12, 1e-4),
    l0=st.integers(1, 10**6),
    linf=st.integers(1, 10**6),
    ends=st.tuples(st.floats(-(2.0**60), 2.0**60), st.floats(-(2.0**60), 2.0**60)),
    metric=st.sampled_from(["sum", "mean", "variance"]),
    with_count=st.booleans(),
    gaussian=st.booleans(),
    mechanism=st.sampled_from(
        ["truncated_geometric", "laplace_threshold", "gaussian_threshold", "public"]
    ),
)
def test_every_accepted_plan_draws_its_noise_and_is_finite(
    epsilon: float,
    delta: float,
    l0: int,
    linf: int,
    ends: tuple[float, float],
    metric: str,
    with_count: bool,
    gaussian: bool,
    mechanism: str,
) -> None:
    lower, upper = min(ends), max(ends)
    assume(lower < upper)
    config = property_config(
        epsilon, delta, l0, linf, lower, upper, metric, with_count, gaussian, mechanism
    )
    refused: ConfigError | None = None
    try:
        plan = build_plan(config)
    except ConfigError as error:
        refused = error
    if refused is not None:
        assert str(refused).startswith(FIELD_PREFIXES), str(refused)
        return
    for noise in noise_of(plan):
        assert draw_time(noise) < 1.0, noise
        assert math.isfinite(noise.std())
        if isinstance(noise, DiscreteLaplace):
            assert MIN_LAPLACE_SCALE_UNITS <= noise.scale <= MAX_LAPLACE_SCALE_UNITS
        else:
            assert (
                MIN_GAUSSIAN_SIGMA_SQUARED_UNITS
                <= noise.sigma_squared
                <= MAX_GAUSSIAN_SIGMA_SQUARED_UNITS
            )
    for aggregate in plan.aggregates:
        assert 0 <= aggregate.ci_half_width < 2**63
    if isinstance(plan.selection, LaplaceThresholdSelection | GaussianThresholdSelection):
        assert plan.selection.threshold < MAX_SELECTION_THRESHOLD
    if isinstance(plan.selection, TruncatedGeometricSelection):
        assert len(plan.selection.table) <= MAX_KEEP_TABLE_LENGTH
    encodings: list[Encoding] = list(plan.encodings.values())
    assert all(e.lo_units <= e.hi_units and math.isfinite(e.grid.step) for e in encodings)
    check_exact_arithmetic(plan)
    described = describe_plan(plan)
    assert_finite(described)
    json.dumps(described, allow_nan=False)
