"""Composition of the spends of one release, and the group privacy table."""

from __future__ import annotations

import json
import math

import pytest

from dp_ops.accounting import MechanismSpend, compose, group_privacy_table
from dp_ops.calibration import epsilon_for_rho


def laplace(name: str, epsilon: float) -> MechanismSpend:
    return MechanismSpend(
        name=name,
        mechanism="discrete_laplace",
        epsilon=epsilon,
        delta=0.0,
        l1_sensitivity=3.0,
        noise_scale=3.0 / epsilon,
    )


def gaussian(name: str, rho: float) -> MechanismSpend:
    return MechanismSpend(
        name=name,
        mechanism="discrete_gaussian",
        epsilon=0.0,
        delta=0.0,
        rho=rho,
        l2_sensitivity=math.sqrt(3.0),
        noise_scale=math.sqrt(3.0 / (2 * rho)),
    )


SELECTION = MechanismSpend(
    name="selection", mechanism="truncated_geometric", epsilon=0.5, delta=1e-6
)


def test_pure_parts_add() -> None:
    spends = [SELECTION, laplace("count", 0.25), laplace("sum", 0.25)]
    total = compose(spends)
    assert total.epsilon == pytest.approx(1.0)
    assert total.delta == pytest.approx(1e-6)
    assert total.rho == 0.0
    assert total.conversion_delta == 0.0
    assert total.spends == tuple(spends)
    assert "Sequential composition over 3 mechanism(s)" in total.statement
    assert "Parallel composition across partitions" in total.statement


def test_unused_conversion_delta_is_not_charged() -> None:
    total = compose([laplace("count", 1.0)], conversion_delta=1e-6)
    assert total.delta == 0.0
    assert total.conversion_delta == 0.0


def test_zcdp_parts_add_rho_and_convert_once() -> None:
    spends = [gaussian("count", 0.02), gaussian("sum", 0.03)]
    total = compose(spends, conversion_delta=1e-6)
    assert total.rho == pytest.approx(0.05)
    assert total.epsilon == epsilon_for_rho(0.05, 1e-6)
    assert total.delta == 1e-6
    assert total.conversion_delta == 1e-6
    assert "converted once" in total.statement
    # Converting once is tighter than converting each part with half the δ.
    separately = epsilon_for_rho(0.02, 5e-7) + epsilon_for_rho(0.03, 5e-7)
    assert total.epsilon < separately


def test_mixed_composition() -> None:
    spends = [SELECTION, laplace("count", 0.3), gaussian("sum", 0.01), gaussian("mean", 0.02)]
    total = compose(spends, conversion_delta=2e-6)
    assert total.rho == pytest.approx(0.03)
    assert total.epsilon == pytest.approx(0.8 + epsilon_for_rho(0.03, 2e-6), rel=1e-12)
    assert total.delta == pytest.approx(1e-6 + 2e-6, rel=1e-12)


def test_zcdp_parts_need_a_conversion_delta() -> None:
    with pytest.raises(ValueError, match="conversion_delta"):
        compose([gaussian("sum", 0.1)])


def test_empty_composition_is_free() -> None:
    total = compose([])
    assert (total.epsilon, total.delta, total.rho) == (0.0, 0.0, 0.0)


def test_to_dict_is_json_ready() -> None:
    total = compose([SELECTION, gaussian("sum", 0.01)], conversion_delta=1e-6)
    data = json.loads(json.dumps(total.to_dict()))
    assert data["epsilon"] == total.epsilon
    assert [spend["name"] for spend in data["spends"]] == ["selection", "sum"]
    assert data["spends"][1]["rho"] == 0.01
    assert set(data["spends"][0]) == {
        "name",
        "mechanism",
        "epsilon",
        "delta",
        "rho",
        "l1_sensitivity",
        "l2_sensitivity",
        "noise_scale",
    }


def test_spend_validation() -> None:
    with pytest.raises(ValueError, match="unknown mechanism"):
        MechanismSpend(name="x", mechanism="laplace_float", epsilon=1.0, delta=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        MechanismSpend(name="x", mechanism="discrete_laplace", epsilon=-1.0, delta=0.0)
    with pytest.raises(ValueError, match="delta"):
        MechanismSpend(name="x", mechanism="discrete_laplace", epsilon=1.0, delta=1.0)
    with pytest.raises(ValueError, match="rho"):
        MechanismSpend(
            name="x", mechanism="discrete_gaussian", epsilon=0, delta=0, rho=float("nan")
        )
    with pytest.raises(ValueError, match="duplicate"):
        compose([laplace("count", 1.0), laplace("count", 1.0)])


def test_group_privacy_table() -> None:
    epsilon, delta = 0.5, 1e-6
    table = group_privacy_table(epsilon, delta)
    assert [row.group_size for row in table] == [1, 2, 4, 8]
    for row in table:
        k = row.group_size
        assert row.epsilon == pytest.approx(k * epsilon)
        assert row.delta == pytest.approx(k * math.exp((k - 1) * epsilon) * delta, rel=1e-12)
    assert (table[0].epsilon, table[0].delta) == (epsilon, delta)


def test_group_privacy_caps_delta() -> None:
    (row,) = group_privacy_table(2.0, 1e-3, group_sizes=(100,))
    assert row.delta == 1.0
    assert row.epsilon == 200.0
    (pure,) = group_privacy_table(1.0, 0.0, group_sizes=(3,))
    assert pure.delta == 0.0
    with pytest.raises(ValueError, match="group size"):
        group_privacy_table(1.0, 1e-6, group_sizes=(0,))
