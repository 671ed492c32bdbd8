"""Release runs on the server ledger: the PostgreSQL server restarted, or down, between
the reservation and the publication; the manifest states the tier and the registry."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspark.sql import SparkSession

from jobs.cli import main
from pipelines.config import load_config
from pipelines.errors import ExitCode
from pipelines.job import run_release, start_run
from pipelines.ledger import BudgetState, LedgerEntry, Registration
from pipelines.ledger.postgres import PostgresLedger
from pipelines.release import published_versions, read_manifest, text_digests
from tests.pg_server import PostgresServer
from tests.support import raw_job_config


class InterruptedLedger(PostgresLedger):
    """The real server ledger, whose server is restarted (or stopped) right after the
    reservation commits: between reserve and publish, where a real outage would hurt."""

    def __init__(self, url: str, server: PostgresServer, action: str) -> None:
        super().__init__(url)
        self.server = server
        self.action = action

    def reserve(
        self,
        entry: LedgerEntry,
        lifetime_epsilon: float,
        lifetime_delta: float,
        registration: Registration | None = None,
    ) -> BudgetState:
        state = super().reserve(entry, lifetime_epsilon, lifetime_delta, registration)
        getattr(self.server, self.action)()
        return state


POLICY = {
    "tiers": {
        "internal": {
            "max_epsilon": 1.0,
            "max_delta": 1e-6,
            "max_lifetime_epsilon": 1000.0,
            "max_lifetime_delta": 1e-3,
            "require": ["purpose", "owner"],
        }
    },
    "datasets": {"events": "internal"},
}


def _config(tmp_path: Path, events_path: Path, url: str, *, policy: bool = False) -> str:
    raw: dict[str, Any] = raw_job_config(tmp_path / "releases", events_path)
    raw["ledger"] |= {"url": url}
    raw["registry"] = {"purpose": "test release", "owner": "team-a"}
    if policy:
        (tmp_path / "policy.yaml").write_text(yaml.safe_dump(POLICY), encoding="utf-8")
        raw["ledger"]["policy"] = str(tmp_path / "policy.yaml")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return str(path)


def _run_interrupted(
    spark: SparkSession, config_path: str, server: PostgresServer, action: str
) -> None:
    config = load_config(config_path)
    start = start_run(config)
    assert config.ledger.url is not None
    ledger = InterruptedLedger(config.ledger.url, server, action)
    assert run_release(spark, config, start=dataclasses.replace(start, ledger=ledger))


def test_a_server_restarted_between_reserve_and_publish_is_reconnected_to(
    spark: SparkSession,
    tmp_path: Path,
    events_path: Path,
    postgres_server: PostgresServer,
    postgres_url: str,
) -> None:
    """The run publishes and marks its entry published with the version's digests over
    a new connection; the manifest and README record the server ledger's identity, the
    policy tier and the registry fields, as the ledger's registration does."""
    config = _config(tmp_path, events_path, postgres_url, policy=True)
    _run_interrupted(spark, config, postgres_server, "restart")
    [version] = published_versions(tmp_path / "releases" / "events")
    ledger = PostgresLedger(postgres_url)
    [entry] = ledger.entries()
    assert (entry.status, entry.version) == ("published", version.name)
    assert entry.manifest_sha256 == text_digests(version.path)["manifest.json"]
    manifest = read_manifest(version.path)
    assert manifest["composition"]["cumulative"]["ledger_identity"] == ledger.identity
    assert manifest["governance"] == ledger.registrations()[entry.run_id].to_dict()
    assert (manifest["governance"]["tier"], manifest["governance"]["owner"]) == (
        "internal",
        "team-a",
    )
    readme = (version.path / "README.md").read_text(encoding="utf-8")
    assert "Policy tier: internal. Purpose: test release. Owner: team-a." in readme
    card = (version.path / "card.html").read_text(encoding="utf-8")
    assert "Policy tier: internal. Purpose: test release. Owner: team-a." in card


def test_a_server_down_at_publication_is_reconciled_by_the_next_run(
    spark: SparkSession,
    tmp_path: Path,
    events_path: Path,
    postgres_server: PostgresServer,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The server stops after the charge: the version is published, its entry stays
    reserved (still charged). With the server back, the next run of the period finds it
    published (exit 5), relabels the entry published with the files' digests, and
    `verify --config` agrees with the ledger."""
    config = _config(tmp_path, events_path, postgres_url)
    try:
        _run_interrupted(spark, config, postgres_server, "stop")
    finally:
        postgres_server.start()
    release = tmp_path / "releases" / "events"
    [version] = published_versions(release)
    [entry] = PostgresLedger(postgres_url).entries()
    assert (entry.status, entry.epsilon) == ("reserved", 1.0)
    capsys.readouterr()

    assert main(["run", config], spark=spark) == ExitCode.ALREADY_PUBLISHED
    [entry] = PostgresLedger(postgres_url).entries()
    assert (entry.status, entry.version) == ("published", version.name)
    assert entry.readme_sha256 == text_digests(version.path)["README.md"]
    assert main(["verify", str(release), "--config", config]) == ExitCode.OK
