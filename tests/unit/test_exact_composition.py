"""Exact composition: rational shares compose back to the configured epsilon, exactly."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dp_ops.accounting import MechanismSpend, compose
from dp_ops.calibration import exact_shares, float_down, float_up
from pipelines.config import config_from_mapping, load_config
from pipelines.ledger.model import LedgerEntry
from pipelines.plan import build_plan
from pipelines.plan_description import describe_plan
from tests.unit.test_plan import raw_config

REPO = Path(__file__).resolve().parents[2]


def test_the_default_job_composes_to_exactly_its_epsilon() -> None:
    """The figures the issue reported (0.9999999999254943, 3840.0000009536743) are exact."""
    plan = build_plan(load_config(REPO / "conf/jobs/movielens_genres.yaml"))
    described = describe_plan(plan)
    totals = described["totals"]
    assert isinstance(totals, dict)
    assert totals["epsilon"] == 1.0 and totals["epsilon_exact"] == "1"
    assert plan.composition.exact_epsilon == 1
    for mechanism in plan.aggregates:
        scale = Fraction(str(mechanism.spend.noise_scale))
        assert scale.denominator == 1, mechanism.name  # 15, 300, 345600: integers


@pytest.mark.parametrize(
    "weights",
    [
        {"selection": 0.5, "count": 0.1, "privacy_id_count": 0.1, "sum_v": 0.1, "mean_v": 0.1,
         "variance_v": 0.1},
        {"selection": 0.3, "count": 0.3, "privacy_id_count": 0.1, "sum_v": 0.1, "mean_v": 0.1,
         "variance_v": 0.1},
    ],
)  # fmt: skip
@pytest.mark.parametrize("epsilon", [1.0, 0.3, 2.5])
def test_rational_shares_compose_to_the_budget(weights: dict[str, float], epsilon: float) -> None:
    """Dyadic epsilons (1, 2.5) give exact small-denominator scales: the total is epsilon.
    The double 0.3 has a 2**54 denominator, so its scales are rounded up to 2**-20: the
    total stays at or below it, within 1e-6."""
    raw = raw_config(budget={"epsilon": epsilon, "delta": 1e-6, "weights": weights})
    plan = build_plan(config_from_mapping(raw))
    exact = plan.composition.exact_epsilon
    assert exact is not None and exact <= Fraction(epsilon)
    if epsilon == 0.3:
        assert plan.composition.epsilon == pytest.approx(epsilon, rel=1e-6)
        return
    # Every Laplace share is exact; selection is the double at or below its share.
    assert Fraction(epsilon) - exact < Fraction(epsilon) * Fraction(1, 2**50)
    assert plan.composition.epsilon == epsilon


def test_exact_shares_sum_to_one_and_read_the_stated_decimals() -> None:
    shares = exact_shares({"selection": 0.5, "count": 0.1, "mean": 0.4})
    assert shares == {"selection": Fraction(1, 2), "count": Fraction(1, 10), "mean": Fraction(2, 5)}
    assert sum(shares.values()) == 1
    thirds = exact_shares({"a": 0.3333333333, "b": 0.3333333333, "c": 0.3333333334})
    assert sum(thirds.values()) == 1


@given(st.fractions(min_value=Fraction(1, 10**9), max_value=10**6))
def test_float_up_and_down_enclose_the_rational(value: Fraction) -> None:
    assert Fraction(float_down(value)) <= value <= Fraction(float_up(value))


def test_composition_rounds_its_total_up_never_down() -> None:
    thirds = [
        MechanismSpend(f"m{i}", "discrete_laplace", float(Fraction(1, 3)), 0.0,
                       exact_epsilon=Fraction(1, 3))
        for i in range(3)
    ]  # fmt: skip
    assert compose(thirds).epsilon == 1.0 and compose(thirds).exact_epsilon == 1
    # Doubles without an exact part are added as their exact binary values, rounded up.
    tenths = [MechanismSpend(f"t{i}", "discrete_laplace", 0.1, 0.0) for i in range(10)]
    total = compose(tenths)
    assert total.exact_epsilon == 10 * Fraction(0.1)
    assert Fraction(total.epsilon) >= 10 * Fraction(0.1)


def test_the_ledger_keeps_the_exact_charge() -> None:
    """A charge of exactly 1.0 leaves exactly 9 of a lifetime of 10 (no 9.000000000074506)."""
    plan = build_plan(load_config(REPO / "conf/jobs/movielens_genres.yaml"))
    entry = LedgerEntry.reservation(
        run_id="r1",
        dataset="d",
        privacy_unit="u",
        release="r",
        data_period="p",
        epsilon=plan.composition.epsilon,
        delta=plan.composition.delta,
    )
    assert 10.0 - entry.epsilon == 9.0
