"""The release job and the budget ledger: reserve first, charge every attempt, refuse early."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspark.sql import SparkSession

from jobs.cli import main
from pipelines.config import config_from_mapping
from pipelines.errors import ExitCode
from pipelines.ledger import SqliteLedger, parse_entries
from pipelines.release import published_versions, read_manifest
from pipelines.verification import verify_release
from tests.support import raw_job_config


def write_config(path: Path, raw: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return str(path)


def budgeted(tmp_path: Path, events_path: Path, lifetime: float, **release: str) -> dict[str, Any]:
    """A job of epsilon 1, delta 1e-6 against a lifetime budget of ``lifetime`` epsilon."""
    raw = raw_job_config(tmp_path / "releases", events_path)
    raw["release"] |= release
    lifetime_budget = {"epsilon": lifetime, "delta": 1e-3}
    raw["ledger"] = {"dataset": "events-db", "lifetime_budget": lifetime_budget}
    return raw


def run(config: str, spark: SparkSession, *extra: str) -> int:
    return main(["run", config, *extra], spark=spark)


def test_each_attempt_is_charged_once_and_the_manifest_states_the_cumulative_spend(
    spark: SparkSession, tmp_path: Path, events_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Publish, re-run (a no-op, not charged), supersede (charged again): the manifest of
    each version states the spend of every charge up to its own."""
    config = write_config(tmp_path / "job.yaml", budgeted(tmp_path, events_path, 10.0))
    ledger = SqliteLedger(tmp_path / "releases" / "_ledger" / "ledger.sqlite")

    assert run(config, spark) == ExitCode.OK
    first = json.loads(capsys.readouterr().out)
    assert (first["spent_epsilon"], first["remaining_epsilon"]) == (1.0, 9.0)
    assert run(config, spark) == ExitCode.ALREADY_PUBLISHED
    again = json.loads(capsys.readouterr().out)
    assert (again["status"], again["version"], again["spent_epsilon"]) == (
        "already_published",
        "v0001",
        1.0,
    )
    assert run(config, spark, "--supersede") == ExitCode.OK
    capsys.readouterr()

    entries = ledger.entries("events-db")
    assert [(e.status, e.version, e.epsilon, e.delta) for e in entries] == [
        ("published", "v0001", 1.0, 1e-6),
        ("published", "v0002", 1.0, 1e-6),
    ]
    release = tmp_path / "releases" / "events"
    for version, charges in (("v0001", 1), ("v0002", 2)):
        manifest = read_manifest(release / version)
        cumulative = manifest["composition"]["cumulative"]
        assert cumulative["charges"] == charges
        assert cumulative["epsilon"] == pytest.approx(charges * 1.0)
        assert cumulative["delta"] == pytest.approx(charges * 1e-6)
        assert (cumulative["lifetime_epsilon"], cumulative["dataset"]) == (10.0, "events-db")
        assert manifest["release"]["run_id"] == entries[charges - 1].run_id
        assert verify_release(release / version) == []
    assert read_manifest(release / "v0002")["release"]["supersedes"] == "v0001"


def test_a_refused_run_reads_no_data_and_leaves_no_trace(
    spark: SparkSession, tmp_path: Path, events_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lifetime 1.5 admits one run of epsilon 1. The second is refused with exit 3 before
    it reads its input (deleted here, so a read would fail with exit 4)."""
    config = write_config(tmp_path / "job.yaml", budgeted(tmp_path, events_path, 1.5))
    assert run(config, spark) == ExitCode.OK
    release = tmp_path / "releases" / "events"
    before = sorted(p.relative_to(release) for p in release.rglob("*"))
    events_path.unlink()
    capsys.readouterr()

    assert run(config, spark, "--supersede") == ExitCode.BUDGET_REFUSED

    out, err = capsys.readouterr()
    assert out == ""
    assert "privacy budget refused for dataset 'events-db'" in err
    assert "remaining ε=0.5" in err
    assert sorted(p.relative_to(release) for p in release.rglob("*")) == before
    ledger = SqliteLedger(tmp_path / "releases" / "_ledger" / "ledger.sqlite")
    assert [e.status for e in ledger.entries()] == ["published"]


def test_a_failed_run_stays_charged(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An input-contract failure after the reservation: exit 4, nothing published, and
    the attempt is charged (its status is 'failed') and counted against the lifetime."""
    empty = tmp_path / "empty.parquet"
    spark.createDataFrame([], "user string, key string, value double").write.parquet(str(empty))
    raw = budgeted(tmp_path, empty, 10.0)
    raw["contracts"] = {"empty_input": "fail"}
    config = write_config(tmp_path / "job.yaml", raw)
    assert run(config, spark) == ExitCode.INPUT_CONTRACT_FAILED
    assert "charge stays" in capsys.readouterr().err
    capsys.readouterr()

    ledger = SqliteLedger(tmp_path / "releases" / "_ledger" / "ledger.sqlite")
    [entry] = ledger.entries()
    assert (entry.status, entry.version, entry.epsilon) == ("failed", None, 1.0)
    assert ledger.state("events-db", "user", 10.0, 1e-3).spent_epsilon == 1.0
    assert published_versions(tmp_path / "releases" / "events") == []


def test_eight_concurrent_runs_against_a_budget_for_five(
    spark: SparkSession, tmp_path: Path, events_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Eight runs (eight data periods) start together on one ledger whose lifetime admits
    five: exactly five publish (five distinct, verifying versions), three are refused, the
    ledger holds exactly the five charges."""
    configs = [
        write_config(
            tmp_path / f"job-{i}.yaml",
            budgeted(tmp_path, events_path, 5.0, data_period=f"2026-W{i + 10:02d}"),
        )
        for i in range(8)
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(lambda c: run(c, spark), configs))
    capsys.readouterr()

    assert sorted(codes) == [ExitCode.OK] * 5 + [ExitCode.BUDGET_REFUSED] * 3
    release = tmp_path / "releases" / "events"
    versions = published_versions(release)
    assert [v.name for v in versions] == [f"v{n:04d}" for n in range(1, 6)]
    assert all(verify_release(v.path) == [] for v in versions)
    ledger = SqliteLedger(tmp_path / "releases" / "_ledger" / "ledger.sqlite")
    entries = ledger.entries()
    assert sorted(e.status for e in entries) == ["published"] * 5
    assert {e.version for e in entries} == {v.name for v in versions}
    periods = {read_manifest(v.path)["release"]["data_period"] for v in versions}
    assert periods == {e.data_period for e in entries}
    assert not any((release / "_staging").iterdir())


def test_ledger_show_and_export(
    spark: SparkSession, tmp_path: Path, events_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ledger show` prints each charge and the remaining budget; `ledger export` round-trips."""
    raw = budgeted(tmp_path, events_path, 4.0)
    config = write_config(tmp_path / "job.yaml", raw)
    assert main(["ledger", "show", config]) == ExitCode.CONFIG_ERROR  # no ledger yet
    assert run(config, spark) == ExitCode.OK
    capsys.readouterr()

    assert main(["ledger", "show", config]) == ExitCode.OK
    lines = capsys.readouterr().out.splitlines()
    assert "dataset 'events-db'" in lines[0]
    assert "published v0001" in lines[2]
    state = json.loads(lines[-1])
    assert (state["spent_epsilon"], state["remaining_epsilon"], state["charges"]) == (1.0, 3.0, 1)

    for fmt in ("jsonl", "csv"):
        assert main(["ledger", "export", config, "--format", fmt]) == ExitCode.OK
        ledger = SqliteLedger(config_from_mapping(raw).ledger_path)
        assert parse_entries(capsys.readouterr().out, fmt) == ledger.entries()
