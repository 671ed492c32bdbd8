"""Metric kinds are declared once: the config, the plan and the released schema agree."""

from __future__ import annotations

import typing
from fractions import Fraction

import numpy as np
import pytest

from dp_ops.grid import choose_grid
from dp_ops.noise import DiscreteLaplace
from pipelines.config import MetricName, config_from_mapping
from pipelines.derivation import Encoding, NoisyPart, PostProcessing
from pipelines.metric_kinds import KINDS, ROWS, UNITS
from pipelines.plan import build_plan
from pipelines.released import SUFFIXES, released_columns, released_names
from tests.support import config_mapping


def _raw(metrics: list[dict[str, object]]) -> dict[str, object]:
    return config_mapping("/tmp/out", "/tmp/in.parquet", metrics=metrics)  # type: ignore[arg-type]


def test_the_config_names_exactly_the_declared_kinds() -> None:
    assert set(typing.get_args(MetricName)) == set(KINDS)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_part_of_every_kind_gets_its_sensitivity_from_the_bounds(name: str) -> None:
    kind = KINDS[name]
    metric: dict[str, object] = {"metric": name}
    if kind.measured:
        metric |= {"column": "value", "lower": -2.0, "upper": 6.0}
    if kind.tree:
        metric["ranks"] = [0.5]
    plan = build_plan(config_from_mapping(_raw([metric])))
    (output,) = plan.outputs
    l0 = plan.bounds.max_partitions_per_unit
    linf = plan.bounds.max_rows_per_unit_per_partition
    assert output.kind is kind
    for part in kind.parts:
        aggregate = plan.aggregate(output.source(part.role))
        per_row = part.row_bound(output.encoding)
        per_partition = per_row if part.per_unit else linf * per_row
        assert aggregate.sensitivity.per_partition == per_partition
        assert aggregate.sensitivity.l1 == l0 * per_partition
        expected_source = part.column if part.term is None else f"{part.column}__{output.name}"
        assert aggregate.source == expected_source


def test_a_shared_count_reads_the_released_count_and_spends_nothing_more() -> None:
    value = {"column": "value", "lower": 0.0, "upper": 5.0}
    alone = build_plan(config_from_mapping(_raw([{"metric": "mean", **value}])))
    shared = build_plan(
        config_from_mapping(_raw([{"metric": "count"}, {"metric": "mean", **value}]))
    )
    assert [a.name for a in alone.aggregates] == ["mean_value.count", "mean_value.normalized_sum"]
    assert [a.name for a in shared.aggregates] == ["count", "mean_value.normalized_sum"]
    assert shared.outputs[1].source("count") == "count"
    assert {a.source for a in shared.aggregates} == {ROWS, "nsum__mean_value"}
    assert UNITS not in {a.source for a in alone.aggregates}


def test_released_columns_are_the_four_statistics_of_each_metric() -> None:
    columns = released_columns([("count", KINDS["count"]), ("mean_v", KINDS["mean"])])
    assert [c.name for c in columns] == [*released_names("count"), *released_names("mean_v")]
    assert [c.integer for c in columns] == [True, False, True, True, False, False, False, False]
    assert released_names("x") == tuple(f"x{s}" for s in SUFFIXES.values())


def test_a_kind_derives_its_values_from_noisy_parts_only() -> None:
    grid = choose_grid(0.0, 4.0, 0.5)
    lo, hi = grid.units_range(0.0, 4.0)
    encoding = Encoding("v", 0.0, 4.0, grid, lo, hi)
    noise = DiscreteLaplace(Fraction(2))
    # Two partitions: 4 rows of value 4 (centred y = width each) and 2 rows at the midpoint.
    counts = NoisyPart(np.array([4, 2], dtype=np.int64), noise, 3)
    sums = NoisyPart(np.array([4 * (hi - lo), 0], dtype=np.int64), noise, 3)
    post = PostProcessing(clamp_negative_counts=True, decimals=None)
    released = KINDS["mean"].derive({"value": sums, "count": counts}, encoding, post, 2)
    assert released.value.tolist() == [4.0, 2.0]
    value, low, high = (
        np.asarray(a, dtype=np.float64) for a in (released.value, released.low, released.high)
    )
    assert (low <= value).all() and (value <= high).all()
    assert KINDS["mean"].released_range is not None
    assert KINDS["mean"].released_range(0.0, 4.0) == (0.0, 4.0)
