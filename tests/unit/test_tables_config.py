"""Configs with ``tables:``: validation, budget shares, and the release's plan (no Spark)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.cli import main
from pipelines.config import ConfigError, load_release, release_from_mapping
from pipelines.errors import ExitCode, PolicyViolation
from pipelines.policy import govern
from pipelines.release_plan import build_release_plans, describe_release_plans
from tests.support import PLAN_JOB, config_mapping

REPO = Path(__file__).resolve().parents[2]


def tables_mapping(**budget: Any) -> dict[str, Any]:
    """Two tables over one input: a private-selection table and a public-keys table."""
    base = config_mapping(Path("/nowhere/out"), Path("/nowhere/in.parquet"), base=PLAN_JOB)
    shared = {k: base[k] for k in ("release", "input", "privacy_unit", "ledger")}
    bounds = base["contribution_bounds"]
    return shared | {
        "budget": {"epsilon": 1.0, "delta": 1e-6} | budget,
        "tables": [
            {
                "name": "by_key",
                "partition_columns": ["key"],
                "contribution_bounds": bounds,
                "metrics": [{"metric": "count"}],
            },
            {
                "name": "by_region",
                "partition_columns": ["region"],
                "contribution_bounds": bounds,
                "metrics": [{"metric": "count"}, {"metric": "privacy_id_count"}],
                "partition_selection": {
                    "mechanism": "public",
                    "public_keys": {"values": {"region": ["north", "south"]}},
                },
            },
        ],
    }


def test_a_config_without_tables_is_a_release_of_one_table() -> None:
    raw = config_mapping(Path("/out"), Path("/in.parquet"), base=PLAN_JOB)
    spec = release_from_mapping(raw)
    assert not spec.multi and len(spec.tables) == 1
    assert spec.tables[0].data_dir == "data" and spec.tables[0].name is None
    assert (spec.budget_epsilon, spec.budget_delta) == (1.0, 1e-6)


def test_weights_split_epsilon_and_give_delta_only_to_tables_that_need_it() -> None:
    raw = tables_mapping()
    raw["tables"][0]["budget"] = {"weight": 3}
    raw["tables"][1]["budget"] = {"weight": 1}
    spec = release_from_mapping(raw)
    (first, second) = (t.config.budget for t in spec.tables)
    assert (first.epsilon, second.epsilon) == (0.75, 0.25)
    assert (first.delta, second.delta) == (1e-6, 0.0)  # public keys and Laplace: no delta
    assert [t.data_dir for t in spec.tables] == ["tables/by_key", "tables/by_region"]
    plans = build_release_plans(spec)
    assert plans.epsilon == pytest.approx(1.0) and plans.delta <= 1e-6


def test_default_weights_are_equal_and_the_plan_adds_the_tables_up() -> None:
    plans = build_release_plans(release_from_mapping(tables_mapping()))
    described = describe_release_plans(plans)
    totals = described["totals"]
    assert isinstance(totals, dict)
    spends = totals["tables"]
    assert [t["name"] for t in spends] == ["by_key", "by_region"]
    assert [t["epsilon"] for t in spends] == [pytest.approx(0.5), pytest.approx(0.5)]
    assert totals["epsilon"] == pytest.approx(sum(t["epsilon"] for t in spends))
    tables = described["tables"]
    assert isinstance(tables, list) and [t["name"] for t in tables] == ["by_key", "by_region"]


def test_absolute_budgets_must_fit_the_release_budget() -> None:
    raw = tables_mapping()
    raw["tables"][0]["budget"] = {"epsilon": 0.6, "delta": 1e-6}
    raw["tables"][1]["budget"] = {"epsilon": 0.4}
    spec = release_from_mapping(copy.deepcopy(raw))
    assert [t.config.budget.epsilon for t in spec.tables] == [0.6, 0.4]
    raw["tables"][1]["budget"] = {"epsilon": 0.5}
    with pytest.raises(ConfigError, match=r"epsilons add up to 1\.1, more than budget\.epsilon 1"):
        release_from_mapping(copy.deepcopy(raw))
    raw["tables"][1]["budget"] = {"weight": 1}
    with pytest.raises(ConfigError, match="every table a weight, or every table an absolute"):
        release_from_mapping(raw)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["tables"][1].update(name="by_key"), r"names must be distinct.*by_key"),
        (lambda r: r["tables"][1].update(name="By Region"), r"tables\[1\]\.name: must be"),
        (lambda r: r["budget"].update(weights={"count": 1.0}), "tables\\[\\]\\.budget\\.weights"),
        (lambda r: r.update(tables=[]), "tables: .*at least 1"),
        (lambda r: r["tables"][0].update(typo=1), r"tables\[0\]\.typo: unknown field"),
        (
            lambda r: r["tables"][0]["budget"].update(weights={"count": 1.0}),
            r"tables\[0\] \(by_key\): budget\.weights must name exactly \['count', 'selection'\]",
        ),
        (
            lambda r: r["tables"][1].update(partition_columns=["region", "count"]),
            r"tables\[1\] \(by_region\): .*clash with output columns",
        ),
    ],
)
def test_bad_tables_are_config_errors_naming_the_table(change: Any, message: str) -> None:
    raw = tables_mapping()
    raw["tables"][0].setdefault("budget", {})
    change(raw)
    with pytest.raises(ConfigError, match=message):
        release_from_mapping(raw)


def test_the_default_job_is_a_release_of_three_tables() -> None:
    spec = load_release(REPO / "conf/jobs/movielens_tables.yaml")
    assert [t.name for t in spec.tables] == ["by_genre", "by_year", "by_genre_year"]
    plans = build_release_plans(spec)
    assert plans.epsilon == pytest.approx(2.0) and plans.delta == 0.0
    keys = spec.tables[2].config.partition_selection.public_keys
    assert keys is not None and keys.has_file and keys.values is not None  # file x years


def test_a_policy_tier_caps_the_release_total_and_binds_every_table(tmp_path: Path) -> None:
    """Two tables of epsilon 0.6 each pass a tier cap of 1 one by one but not together;
    a table-level rule (min_units) names its table."""
    policy = {
        "tiers": {"t": {"max_epsilon": 1.0, "max_delta": 1e-5, "max_lifetime_epsilon": 10.0,
                        "max_lifetime_delta": 1e-4, "min_units": 5}},
        "datasets": {"events": "t"},
    }  # fmt: skip
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")
    raw = tables_mapping(epsilon=1.2)
    raw["ledger"] = dict(raw["ledger"], policy=str(tmp_path / "policy.yaml"))
    raw["tables"][0]["partition_selection"] = {"min_units": 5}
    spec = release_from_mapping(copy.deepcopy(raw))
    with pytest.raises(PolicyViolation) as refused:
        govern(spec.config, build_release_plans(spec))
    assert "max_epsilon: budget.epsilon (the charge) is 1.19" in str(refused.value)
    raw["budget"]["epsilon"] = 1.0
    raw["tables"][0]["partition_selection"] = {"min_units": 2}
    spec = release_from_mapping(raw)
    with pytest.raises(PolicyViolation, match=r"tables \(by_key\) min_units: .* is 2"):
        govern(spec.config, build_release_plans(spec))


def test_plan_prints_each_tables_noise_and_keep_probability_then_the_totals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump(tables_mapping()), encoding="utf-8")
    assert main(["plan", str(path), "--epsilon", "2"]) == ExitCode.OK
    printed = json.loads(capsys.readouterr().out)
    assert printed["totals"]["epsilon"] == pytest.approx(2.0)
    by_key, by_region = printed["tables"]
    assert (by_key["name"], by_region["name"]) == ("by_key", "by_region")
    for table in (by_key, by_region):
        assert table["budget"]["epsilon"] == pytest.approx(1.0)
        for figures in table["accuracy"]["metrics"].values():
            assert all(f["std"] > 0 and f["half_width"] > 0 for f in figures)
    keep = by_key["accuracy"]["keep_probability_by_units"]
    assert keep[0][1] < 0.5 and keep[-1][1] == 1.0  # private selection: keep rises to 1
    assert by_region["selection"]["mechanism"] == "public"
