"""Quantile metrics in the config and the plan: ranks, released names, the tree's budget."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from dp_ops.noise import DiscreteGaussian, DiscreteLaplace
from dp_ops.quantile_tree import TreeShape, expected_rank_error, tree_sensitivity
from pipelines.config import ConfigError, config_from_mapping
from pipelines.manifest import manifest_schema
from pipelines.metric_kinds import KINDS
from pipelines.plan import build_plan
from pipelines.plan_description import describe_plan
from pipelines.plan_metrics import RANK_ERROR_PARTITION_SIZE
from pipelines.released import metric_column_names, rank_name
from tests.support import config_mapping

QUANTILES = {"metric": "quantiles", "column": "los", "lower": 0.0, "upper": 30.0}


def _raw(metrics: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    return config_mapping("/tmp/out", "/tmp/in.parquet", metrics=metrics, **overrides)  # type: ignore[arg-type]


def _refusal(metrics: list[dict[str, Any]]) -> str:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(_raw(metrics))
    return str(caught.value)


@pytest.mark.parametrize(
    ("ranks", "message"),
    [
        ([], "give 1 to 10 ranks"),
        ([0.1 * i for i in range(1, 10)] + [0.95, 0.99], "give 1 to 10 ranks"),
        ([0.5, 1.0], "strictly between 0 and 1"),
        ([0.0], "strictly between 0 and 1"),
        ([0.5, 0.5], "ranks must be distinct"),
        ([float("nan")], "strictly between 0 and 1"),
    ],
)
def test_bad_ranks_are_refused_naming_the_field(ranks: list[float], message: str) -> None:
    text = _refusal(
        [{"metric": "count"}, {"metric": "count", "name": "c2"}, {**QUANTILES, "ranks": ranks}]
    )
    assert "metrics[2].ranks" in text
    assert message in text


def test_ranks_are_required_for_quantiles_and_refused_elsewhere() -> None:
    assert "metrics[0].ranks: metric 'quantiles' needs 'ranks'" in _refusal([dict(QUANTILES)])
    assert "metrics[1].ranks" in _refusal(
        [{"metric": "count"}, {"metric": "count", "name": "c", "ranks": [0.5]}]
    )
    assert "needs 'column'" in _refusal([{"metric": "quantiles", "ranks": [0.5]}])
    assert "smaller than 'upper'" in _refusal([{**QUANTILES, "upper": 0.0, "ranks": [0.5]}])


def test_released_names_per_rank_come_from_one_function() -> None:
    assert [rank_name("los", r) for r in (0.5, 0.9, 0.995, 0.05)] == [
        "los_p50",
        "los_p90",
        "los_p99_5",
        "los_p5",
    ]
    assert metric_column_names("los", [0.5]) == ("los_p50", "los_p50_ci_low", "los_p50_ci_high")


def test_released_names_that_clash_are_refused() -> None:
    clash: list[dict[str, Any]] = [
        {"metric": "count", "name": "los_p50"},
        {**QUANTILES, "name": "los", "ranks": [0.5]},
    ]
    assert "released column names must be distinct: ['los_p50', " in _refusal(clash)
    with pytest.raises(ConfigError, match="partition columns clash"):
        config_from_mapping(
            _raw([{**QUANTILES, "name": "key", "ranks": [0.5]}], partition_columns=["key_p50"])
        )


def test_the_plan_releases_each_rank_and_no_std() -> None:
    plan = build_plan(config_from_mapping(_raw([{**QUANTILES, "ranks": [0.5, 0.9, 0.995]}])))
    (output,) = plan.outputs
    assert output.kind is KINDS["quantiles"] and output.tree is not None
    assert [c.name for c in plan.released] == [
        f"quantiles_los_p{p}{s}" for p in ("50", "90", "99_5") for s in ("", "_ci_low", "_ci_high")
    ]
    assert all(c.output == "quantiles_los" and not c.integer for c in plan.released)
    assert plan.aggregates == ()  # no aggregated column receives the tree's noise


@pytest.mark.parametrize("noise", ["laplace", "gaussian"])
def test_the_tree_spends_its_one_share_with_sensitivity_from_the_bounds(noise: str) -> None:
    raw = _raw([{"metric": "count"}, {**QUANTILES, "ranks": [0.5, 0.9]}], noise=noise)
    plan = build_plan(config_from_mapping(raw))
    tree = plan.outputs[1].tree
    assert tree is not None
    l0 = plan.bounds.max_partitions_per_unit
    linf = plan.bounds.max_rows_per_unit_per_partition
    shape = TreeShape(0.0, 30.0)
    assert tree.shape == shape and (shape.height, shape.branching) == (4, 16)
    sensitivity = tree.nodes.sensitivity
    assert sensitivity == tree_sensitivity(l0, linf, shape.height)
    assert sensitivity.l1 == l0 * linf * shape.height
    assert sensitivity.l2_squared == l0 * shape.height * linf**2
    share = plan.split.shares["quantiles_los"]
    eps, rho = plan.split.share_budget(share, "quantiles_los")
    if noise == "laplace":
        assert isinstance(tree.nodes.noise, DiscreteLaplace)
        assert tree.nodes.spend.epsilon <= float(eps) * (1 + 1e-12)
        assert tree.nodes.noise.scale >= sensitivity.l1 / eps
    else:
        assert isinstance(tree.nodes.noise, DiscreteGaussian)
        assert tree.nodes.spend.rho is not None and tree.nodes.spend.rho <= rho
    names = [s.name for s in plan.composition.spends]
    assert names.count("quantiles_los") == 1  # all ranks share the one mechanism
    assert plan.composition.epsilon <= plan.facts.budget_epsilon * (1 + 1e-8)


def test_the_plan_and_manifest_describe_the_tree() -> None:
    plan = build_plan(config_from_mapping(_raw([{**QUANTILES, "ranks": [0.5]}])))
    described = describe_plan(plan)
    assert described["budget"]["shares"]["quantiles_los"] == pytest.approx(0.5)  # type: ignore[index]
    mechanisms = described["mechanisms"]
    assert isinstance(mechanisms, list)
    (entry,) = mechanisms
    tree = entry["tree"]
    assert (tree["height"], tree["branching"], tree["leaves"]) == (4, 16, 16**4)
    assert tree["rank_error_partition_size"] == RANK_ERROR_PARTITION_SIZE == 1000
    output_tree = plan.outputs[0].tree
    assert output_tree is not None
    expected = expected_rank_error(output_tree.shape, output_tree.nodes.noise, 1000)
    assert tree["expected_rank_error"] == expected
    assert 0 < expected < 0.5
    assert entry["l1_sensitivity"] == 3 * 2 * 4  # L0 x Linf x height of the test job
    item = manifest_schema()["properties"]["mechanisms"]["items"]
    jsonschema.validate(entry, item)
