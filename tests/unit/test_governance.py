"""Policy tiers, registrations and the registry: refused before anything is charged, the
tier bound in the ledger (both backends), every release listed with its spend."""

from __future__ import annotations

import csv
import io
import json
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.cli import main
from pipelines.config import config_from_mapping
from pipelines.errors import ExitCode, PolicyViolation
from pipelines.ledger import LedgerEntry, LedgerStore, Registration, SqliteLedger, TierMismatch
from pipelines.plan import build_plan
from pipelines.policy import govern, load_policy

POLICY: dict[str, Any] = {
    "tiers": {
        "public": {
            "max_epsilon": 10.0,
            "max_delta": 1e-5,
            "max_lifetime_epsilon": 100.0,
            "max_lifetime_delta": 1e-4,
        },
        "sensitive": {
            "max_epsilon": 1.0,
            "max_delta": 1e-6,
            "max_lifetime_epsilon": 4.0,
            "max_lifetime_delta": 1e-5,
            "noise": ["laplace"],
            "min_units": 10,
            "require": ["purpose", "owner", "approval"],
        },
    },
    "datasets": {"Ratings": "sensitive", "sessions": "public"},
}
REGISTRY = {"purpose": "weekly ratings", "owner": "team-a", "approval": "DPB-42"}


def raw_config(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """A job (ε=1, δ=1e-6, lifetime 4) on dataset 'ratings' under the test policy; its
    input is never read."""
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(POLICY), encoding="utf-8")
    raw: dict[str, Any] = {
        "release": {"name": "weekly", "output_root": str(tmp_path / "out"), "data_period": "W1"},
        "input": {"path": str(tmp_path / "missing.parquet")},
        "privacy_unit": {"column": "user_id"},
        "partition_columns": ["key"],
        "contribution_bounds": {"max_partitions_per_unit": 1, "max_rows_per_unit_per_partition": 1},
        "metrics": [{"metric": "count"}],
        "budget": {"epsilon": 1.0, "delta": 1e-6},
        "partition_selection": {"min_units": 10},
        "ledger": {
            "dataset": "ratings",
            "lifetime_budget": {"epsilon": 4.0, "delta": 1e-5},
            "policy": str(tmp_path / "policy.yaml"),
        },
        "registry": dict(REGISTRY),
    }
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = raw
        for name in parents:
            node = node[name]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return raw


def write(tmp_path: Path, raw: dict[str, Any], name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return str(path)


def test_a_config_within_its_tier_is_registered_with_tier_and_policy_digest(
    tmp_path: Path,
) -> None:
    config = config_from_mapping(raw_config(tmp_path))
    registration = govern(config, build_plan(config))
    policy = load_policy(tmp_path / "policy.yaml")
    assert registration == Registration("sensitive", policy.sha256, **REGISTRY)


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"budget__epsilon": 2.0}, "max_epsilon: budget.epsilon (the charge) is 2.0"),
        ({"budget__delta": 1e-5}, "max_delta: budget.delta"),
        ({"ledger__lifetime_budget": {"epsilon": 5.0, "delta": 1e-5}}, "max_lifetime_epsilon"),
        ({"ledger__lifetime_budget": {"epsilon": 4.0, "delta": 1e-4}}, "max_lifetime_delta"),
        ({"noise": "gaussian"}, "noise: noise is 'gaussian'"),
        ({"partition_selection__min_units": 9}, "min_units: partition_selection.min_units is 9"),
        ({"registry__approval": None}, "require: registry.approval is required"),
        ({"ledger__dataset": "unbound"}, "dataset 'unbound' (ledger.dataset) is bound to no tier"),
    ],
)
def test_each_rule_of_the_tier_refuses_with_its_own_exit_code_before_the_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, Any], rule: str
) -> None:
    """`run` and `plan` refuse a config outside its tier with exit 8 and one line naming
    the rule and its field; no ledger is created (nothing charged), no data read (the
    input does not exist: a read would be exit 4), no Spark started."""
    config = write(tmp_path, raw_config(tmp_path, **changes))
    for command in ("plan", "run"):
        assert main([command, config]) == ExitCode.POLICY_REFUSED
        err = capsys.readouterr().err
        assert rule in err and "[exit 8:" in err, err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_every_broken_rule_is_named_at_once(tmp_path: Path) -> None:
    raw = raw_config(tmp_path, budget__epsilon=3.0, noise="gaussian", registry__owner=None)
    config = config_from_mapping(raw)
    with pytest.raises(PolicyViolation) as refused:
        govern(config, build_plan(config))
    message = str(refused.value)
    assert "tier 'sensitive'" in message
    for rule in ("max_epsilon", "noise:", "registry.owner"):
        assert rule in message


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"tiers": POLICY["tiers"], "datasets": {}, "extra": 1}, "extra: unknown field"),
        (
            {"tiers": {"t": {**POLICY["tiers"]["public"], "max_epsilom": 1}}, "datasets": {}},
            "tiers.t.max_epsilom: unknown field",
        ),
        ({"tiers": POLICY["tiers"], "datasets": {"d": "secret"}}, "no tier 'secret'"),
        (
            {"tiers": POLICY["tiers"], "datasets": {"D": "public", "d": "sensitive"}},
            "bound to two tiers",
        ),
        ({"tiers": {"Bad Name": POLICY["tiers"]["public"]}, "datasets": {}}, "tier names"),
    ],
)
def test_an_invalid_policy_file_is_a_config_error_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], policy: dict[str, Any], expected: str
) -> None:
    raw = raw_config(tmp_path)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")
    raw["ledger"]["policy"] = str(tmp_path / "bad.yaml")
    assert main(["plan", write(tmp_path, raw)]) == ExitCode.CONFIG_ERROR
    assert expected in capsys.readouterr().err


def test_repeated_keys_and_unknown_config_fields_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = raw_config(tmp_path)
    (tmp_path / "twice.yaml").write_text("tiers: {}\ntiers: {}\ndatasets: {}\n", encoding="utf-8")
    raw["ledger"]["policy"] = str(tmp_path / "twice.yaml")
    assert main(["plan", write(tmp_path, raw)]) == ExitCode.CONFIG_ERROR
    assert "tiers" in capsys.readouterr().err
    raw = raw_config(tmp_path)
    raw["registry"]["approver"] = "x"
    assert main(["plan", write(tmp_path, raw)]) == ExitCode.CONFIG_ERROR
    assert "registry.approver: unknown field" in capsys.readouterr().err


def test_a_server_url_with_a_password_or_next_to_a_path_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for url, path, expected in (
        ("postgresql://u:secret@h/db", None, "must not hold a password"),
        ("postgresql://h/db?password=secret", None, "must not hold a password"),
        ("mysql://h/db", None, "PostgreSQL URI"),
        ("postgresql://h/db", "ledger.sqlite", "at most one of 'path'"),
    ):
        raw = raw_config(tmp_path)
        raw["ledger"] |= {"url": url} | ({"path": path} if path else {})
        assert main(["plan", write(tmp_path, raw)]) == ExitCode.CONFIG_ERROR
        err = capsys.readouterr().err
        assert expected in err and "secret" not in err


def entry(dataset: str = "ratings", epsilon: float = 0.5) -> LedgerEntry:
    return LedgerEntry.reservation(
        run_id=uuid.uuid4().hex,
        dataset=dataset,
        privacy_unit="user_id",
        release="weekly",
        data_period="W1",
        epsilon=epsilon,
        delta=0.0,
    )


SENSITIVE = Registration("sensitive", "a" * 64, **REGISTRY)


def test_the_first_tiered_charge_binds_the_dataset_to_its_tier(ledger: LedgerStore) -> None:
    """Contract (both backends): charges without a tier bind nothing; the first tiered
    charge binds the dataset; another tier, or none, is refused with TierMismatch and
    charges nothing; other datasets are free; registrations are recorded with charges."""
    untiered = entry()
    ledger.reserve(untiered, 10.0, 0.0)
    assert ledger.bound_tier("ratings") is None
    tiered = entry()
    ledger.reserve(tiered, 10.0, 0.0, SENSITIVE)
    assert ledger.bound_tier(" Ratings ") == "sensitive"
    for other in (Registration("public", "b" * 64), Registration(), None):
        with pytest.raises(TierMismatch) as mismatch:
            ledger.reserve(entry(), 10.0, 0.0, other)
    assert "binds it to tier 'sensitive'" in str(mismatch.value)
    assert pickle.loads(pickle.dumps(mismatch.value)).bound == "sensitive"
    assert len(ledger.entries()) == 2
    ledger.reserve(entry("sessions"), 10.0, 0.0, Registration("public", "b" * 64))
    registrations = ledger.registrations()
    assert registrations[tiered.run_id] == SENSITIVE
    assert registrations[untiered.run_id] == Registration()
    # A retried reservation must carry the same registration.
    assert ledger.reserve(tiered, 10.0, 0.0, SENSITIVE).charges == 2
    with pytest.raises(ValueError, match="fresh run id"):
        ledger.reserve(tiered, 10.0, 0.0, Registration("sensitive", "c" * 64))


def test_a_run_under_another_tier_is_refused_before_spark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dataset charged under 'sensitive' refuses a config that drops ledger.policy:
    exit 8 from the pre-check (nothing charged, no data read)."""
    raw = raw_config(tmp_path)
    ledger = SqliteLedger(tmp_path / "out" / "_ledger" / "ledger.sqlite")
    ledger.reserve(entry(), 4.0, 1e-5, SENSITIVE)
    raw["ledger"].pop("policy")
    assert main(["run", write(tmp_path, raw)]) == ExitCode.POLICY_REFUSED
    err = capsys.readouterr().err
    assert "binds it to tier 'sensitive'" in err and "no policy" in err
    assert len(ledger.entries()) == 1


def test_set_lifetime_stays_within_the_tier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, raw_config(tmp_path))
    args = ["ledger", "set-lifetime", config, "--delta", "1e-5", "--reason", "more"]
    assert main([*args, "--epsilon", "5"]) == ExitCode.POLICY_REFUSED
    assert "max_lifetime_epsilon: --epsilon is 5.0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main([*args, "--epsilon", "3"]) == ExitCode.OK


def test_registry_lists_releases_across_datasets_with_their_spend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = SqliteLedger(path)
    first, second, other = entry(epsilon=0.5), entry(epsilon=0.25), entry("sessions", 2.0)
    ledger.reserve(first, 4.0, 0.0, SENSITIVE)
    ledger.reserve(other, 10.0, 0.0)
    ledger.reserve(second, 4.0, 0.0, SENSITIVE)
    ledger.mark(
        first.run_id, "published", "v0001", manifest_sha256="1" * 64, readme_sha256="2" * 64
    )
    ledger.mark(second.run_id, "failed")

    assert main(["registry", "--ledger", str(path), "--format", "jsonl"]) == ExitCode.OK
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["dataset"], r["status"], r["spent_epsilon"]) for r in rows] == [
        ("ratings", "published", 0.5),
        ("sessions", "reserved", 2.0),
        ("ratings", "failed", 0.75),
    ]
    assert (rows[0]["tier"], rows[0]["approval"], rows[0]["version"]) == (
        "sensitive",
        "DPB-42",
        "v0001",
    )
    assert rows[1]["tier"] is None

    assert main(["registry", "--ledger", str(path), "--format", "csv"]) == ExitCode.OK
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["epsilon"] for r in parsed] == ["0.5", "2.0", "0.25"]
    assert parsed[1]["owner"] == ""

    assert main(["registry", "--ledger", str(path), "--dataset", "SESSIONS"]) == ExitCode.OK
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["created_at", "dataset", "privacy_unit"]
    assert len(table) == 2 and "sessions" in table[1]

    assert main(["registry", "--ledger", str(tmp_path / "none.sqlite")]) == ExitCode.CONFIG_ERROR


def test_the_shipped_example_policy_admits_the_shipped_jobs() -> None:
    """conf/policy/tiers.yaml loads, and binds the MovieLens jobs to a tier they meet."""
    root = Path(__file__).resolve().parents[2]
    policy = load_policy(root / "conf" / "policy" / "tiers.yaml")
    assert sorted(policy.config.tiers) == ["highly_sensitive", "internal", "public", "sensitive"]
    for job in ("movielens.yaml", "movielens_genres.yaml"):
        raw = yaml.safe_load((root / "conf" / "jobs" / job).read_text(encoding="utf-8"))
        raw["ledger"]["policy"] = str(root / "conf" / "policy" / "tiers.yaml")
        config = config_from_mapping(raw, base_dir=root / "conf" / "jobs")
        assert govern(config, build_plan(config)).tier == "public"
