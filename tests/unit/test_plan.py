"""The release plan: derived from the config alone, never over budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dp_ops.noise import DiscreteGaussian, DiscreteLaplace
from pipelines.config import ConfigError, config_from_mapping
from pipelines.plan import PublicPartitions, build_plan
from pipelines.plan_description import describe_plan
from tests.support import PLAN_JOB, config_mapping


def raw_config(**overrides: Any) -> dict[str, Any]:
    metrics: list[dict[str, Any]] = [
        {"metric": "count"},
        {"metric": "privacy_id_count"},
        {"metric": "sum", "column": "v", "lower": -1.0, "upper": 4.0},
        {"metric": "mean", "column": "v", "lower": 0.0, "upper": 10.0},
        {"metric": "variance", "column": "v", "lower": 0.0, "upper": 10.0},
    ]
    raw = config_mapping(Path("/tmp/out"), Path("/tmp/in.parquet"), PLAN_JOB, metrics=metrics)
    return raw | overrides


def test_sensitivities_come_from_the_bounds() -> None:
    plan = build_plan(config_from_mapping(raw_config()))
    by_name = {a.name: a for a in plan.aggregates}
    assert by_name["count"].sensitivity.l1 == 3 * 2
    assert by_name["privacy_id_count"].sensitivity.l1 == 3
    sum_encoding = plan.encodings["sum_v"]
    assert by_name["sum_v"].sensitivity.l1 == 3 * 2 * sum_encoding.max_abs_units
    mean_encoding = plan.encodings["mean_v"]
    assert by_name["mean_v.normalized_sum"].sensitivity.per_partition == 2 * mean_encoding.width
    # The released count serves as the mean's and variance's denominator.
    assert "mean_v.count" not in by_name
    assert by_name["variance_v.normalized_sum_of_squares"].sensitivity.per_partition == (
        2 * plan.encodings["variance_v"].width ** 2
    )


def test_laplace_scale_matches_each_budget_share() -> None:
    plan = build_plan(config_from_mapping(raw_config()))
    assert isinstance(plan.selection, object)
    total = 0.0
    for aggregate in plan.aggregates:
        assert isinstance(aggregate.noise, DiscreteLaplace)
        epsilon = float(aggregate.sensitivity.l1 / aggregate.noise.scale)
        assert epsilon == pytest.approx(aggregate.spend.epsilon)
        total += epsilon
    assert total + plan.selection.epsilon <= 1.0  # type: ignore[union-attr]


def test_no_config_field_sets_a_sensitivity_or_a_noise_scale() -> None:
    for field in ("sensitivity", "l1_sensitivity", "noise_scale", "scale", "sigma", "seed"):
        with pytest.raises(ConfigError, match="unknown field"):
            config_from_mapping(raw_config(**{field: 1.0}))


def test_gaussian_plan_converts_rho_once_within_the_budget() -> None:
    plan = build_plan(config_from_mapping(raw_config(noise="gaussian")))
    assert all(isinstance(a.noise, DiscreteGaussian) for a in plan.aggregates)
    assert plan.composition.rho > 0
    assert plan.composition.epsilon <= 1.0 + 1e-9
    assert plan.composition.delta <= 1e-6 * (1 + 1e-9)


def test_public_partitions_spend_no_selection_budget() -> None:
    raw = raw_config(
        partition_selection={"mechanism": "public", "public_keys": {"path": "/tmp/keys.csv"}},
        budget={"epsilon": 1.0, "delta": 0.0},
    )
    plan = build_plan(config_from_mapping(raw))
    assert isinstance(plan.selection, PublicPartitions)
    assert plan.composition.delta == 0.0
    assert describe_plan(plan)["selection"] == {
        "mechanism": "public",
        "provenance": "/tmp/keys.csv",
        "epsilon": 0.0,
        "delta": 0.0,
    }


@settings(max_examples=40, deadline=None)
@given(
    epsilon=st.floats(0.01, 20),
    delta=st.floats(1e-12, 1e-4),
    l0=st.integers(1, 50),
    linf=st.integers(1, 50),
    lower=st.floats(-1e6, 1e6),
    width=st.floats(1e-3, 1e6),
    gaussian=st.booleans(),
    mechanism=st.sampled_from(["truncated_geometric", "laplace_threshold", "gaussian_threshold"]),
)
def test_every_plan_stays_within_its_budget(
    epsilon: float,
    delta: float,
    l0: int,
    linf: int,
    lower: float,
    width: float,
    gaussian: bool,
    mechanism: str,
) -> None:
    raw = raw_config(
        budget={"epsilon": epsilon, "delta": delta},
        contribution_bounds={
            "max_partitions_per_unit": l0,
            "max_rows_per_unit_per_partition": linf,
        },
        metrics=[
            {"metric": "count"},
            {"metric": "mean", "column": "v", "lower": lower, "upper": lower + width},
        ],
        noise="gaussian" if gaussian else "laplace",
        partition_selection={"mechanism": mechanism},
    )
    plan = build_plan(config_from_mapping(raw))
    assert plan.composition.epsilon <= epsilon * (1 + 1e-9)
    assert plan.composition.delta <= delta * (1 + 1e-9)
    for encoding in plan.encodings.values():
        assert encoding.lo_units <= encoding.hi_units
        assert encoding.grid.step > 0
