"""The release directory and its ledger must agree: no budget can be bypassed.

Invariants (docs/privacy.md §10):

- every published version of a release was charged in the ledger the run uses (the
  manifest records the ledger's identity), and that ledger holds its published entry;
- the manifest and README of every published version are the ones whose SHA-256 the
  ledger recorded at publication;
- a ledger that lost charges (deleted, replaced or edited) is detected from the
  cumulative spend each manifest records.

A run that finds any of these broken is refused before it charges anything.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from fractions import Fraction
from pathlib import Path
from typing import Any

from pipelines.config import ConfigError, JobConfig
from pipelines.errors import BudgetError
from pipelines.ledger import (
    BUDGET_TOLERANCE,
    BudgetRefused,
    BudgetState,
    LedgerEntry,
    LedgerStore,
    Registration,
    SqliteLedger,
    TierMismatch,
)
from pipelines.release import (
    MANIFEST,
    README,
    Version,
    published_versions,
    read_manifest,
    text_digests,
    unpublished_version_dirs,
)
from pipelines.verification import check_text_digests

log = logging.getLogger("dprelease")


def open_ledger(config: JobConfig) -> LedgerStore:
    """The job's ledger (created on first use): the PostgreSQL server of ``ledger.url``, or
    the SQLite file of ``ledger.path``. An unreachable server or an unusable path is a
    config error (exit 2) raised before anything is read or charged."""
    if config.ledger.url is not None:
        from pipelines.ledger.postgres import PostgresLedger

        try:
            return PostgresLedger(config.ledger.url)
        except OSError as error:
            raise ConfigError(f"ledger.url: {error}") from None
    try:
        return SqliteLedger(config.ledger_path)
    except (OSError, sqlite3.Error) as error:
        where = (
            "ledger.path"
            if config.ledger.path
            else "ledger.path (default: under release.output_root)"
        )
        detail = f"{type(error).__name__}: {error}"
        raise ConfigError(
            f"{where}: cannot open the ledger {config.ledger_path} ({detail})"
        ) from None


def budget_state(ledger: LedgerStore, config: JobConfig) -> BudgetState:
    """The lifetime budget of the job's dataset and privacy unit, as charged so far."""
    return ledger.state(
        config.ledger.dataset,
        config.privacy_unit.column,
        config.ledger.lifetime_budget.epsilon,
        config.ledger.lifetime_budget.delta,
    )


def check_budget_admits(
    ledger: LedgerStore, config: JobConfig, epsilon: float, delta: float
) -> None:
    """Refuse early, before any metadata is read, a run the ledger would refuse: a lifetime
    that differs from the pinned one, or a spend past it. Advisory: the reservation makes
    the binding check atomically."""
    state = budget_state(ledger, config)
    limit = 1 + BUDGET_TOLERANCE
    for spent, requested, lifetime in (
        (state.spent_epsilon, epsilon, state.lifetime_epsilon),
        (state.spent_delta, delta, state.lifetime_delta),
    ):
        if Fraction(spent) + Fraction(requested) > Fraction(lifetime) * limit:
            raise BudgetRefused(state, epsilon, delta)


def check_tier_binding(ledger: LedgerStore, config: JobConfig, registration: Registration) -> None:
    """Refuse early, before Spark, a run whose tier differs from the one the ledger binds
    its dataset to (docs/privacy.md §12). Advisory: the reservation checks it atomically."""
    bound = ledger.bound_tier(config.ledger.dataset)
    if bound is not None and bound != registration.tier:
        raise TierMismatch(config.ledger.dataset, bound, registration.tier)


def cumulative_spend(budget: BudgetState, ledger_identity: str) -> dict[str, object]:
    """The manifest's cumulative statement: every charge to the dataset up to this run's,
    and the identity of the ledger that holds them."""
    return {
        "ledger_identity": ledger_identity,
        "dataset": budget.dataset,
        "privacy_unit": budget.privacy_unit,
        "epsilon": budget.spent_epsilon,
        "delta": budget.spent_delta,
        "lifetime_epsilon": budget.lifetime_epsilon,
        "lifetime_delta": budget.lifetime_delta,
        "charges": budget.charges,
        "statement": (
            f"sequential (basic) composition over the {budget.charges} charged run(s) of "
            f"dataset {budget.dataset!r} per {budget.privacy_unit!r}, this one included "
            "(published, superseded, failed and retried runs all count)"
        ),
    }


def reconcile_ledger(ledger: LedgerStore, release: Path, config: JobConfig) -> None:
    """Mark as published the reserved runs of this release whose version is visible.

    A driver killed between publication and its ledger update leaves its entry
    ``reserved``: still charged (so the budget stays safe), only mislabelled. Runs with
    no visible version stay ``reserved``: they are running, or died, and stay charged.
    The digests recorded are those of the version's files as found.
    """
    reserved = {
        e.run_id
        for e in ledger.entries(config.ledger.dataset)
        if e.status == "reserved" and e.release == config.release.name
    }
    if not reserved:
        return
    for version in published_versions(release):
        run_id = read_manifest(version.path)["release"]["run_id"]
        if run_id in reserved:
            digests = text_digests(version.path)
            ledger.mark(
                run_id,
                "published",
                version.name,
                manifest_sha256=digests[MANIFEST],
                # A missing README is recorded as empty: later checks then report it.
                readme_sha256=digests.get(README, hashlib.sha256(b"").hexdigest()),
            )
            log.info("ledger: run %s recorded as published %s", run_id, version.name)


def _refuse(config: JobConfig, version: str, reason: str) -> BudgetError:
    return BudgetError(
        f"release {config.release.name} {version}: {reason}; refusing to run. Use the ledger "
        "that charged this release (ledger.path), or publish under another release name"
    )


def _check_version(
    ledger: LedgerStore, config: JobConfig, version: Version, held: dict[str, LedgerEntry]
) -> None:
    """Refuse unless ``version`` was charged in this ledger, as recorded, and the ledger
    holds at least the cumulative spend its manifest states."""
    manifest: dict[str, Any] = read_manifest(version.path)
    cumulative = manifest["composition"]["cumulative"]
    if cumulative.get("ledger_identity") != ledger.identity:
        raise _refuse(
            config,
            version.name,
            f"charged in another ledger (identity {cumulative.get('ledger_identity')}, "
            f"this ledger is {ledger.identity})",
        )
    entry = held.get(version.name)
    if entry is None or entry.run_id != manifest["release"]["run_id"]:
        raise _refuse(
            config,
            version.name,
            "the ledger does not hold this published version (was the "
            "ledger deleted, replaced or edited?)",
        )
    expected = {MANIFEST: entry.manifest_sha256 or "", README: entry.readme_sha256 or ""}
    problems = check_text_digests(version.path, expected, "the ledger")
    if problems:
        raise _refuse(config, version.name, "; ".join(problems))
    stated = Fraction(cumulative["epsilon"])
    spent = sum(
        (
            Fraction(e.epsilon)
            for e in ledger.entries(cumulative["dataset"])
            if e.privacy_unit == cumulative["privacy_unit"]
        ),
        Fraction(0),
    )
    if spent < stated * (1 - Fraction(1, 10**9)):
        raise _refuse(
            config,
            version.name,
            f"its manifest states a cumulative spend of epsilon {float(stated):.6g}, the ledger "
            f"holds {float(spent):.6g} (charges were removed from the ledger)",
        )


def check_release_held(ledger: LedgerStore, release: Path, config: JobConfig) -> None:
    """Raise BudgetError unless the ledger holds every published version of the release
    as published, and holds at least the spend the newest manifest states."""
    gaps = unpublished_version_dirs(release)
    if gaps:
        raise _refuse(config, gaps[0].name, f"the version has no {MANIFEST} (was it deleted?)")
    versions = published_versions(release)
    held = ledger.published_versions_of(config.release.name)
    for version in versions:
        _check_version(ledger, config, version, held)


def ledger_problems(ledger: LedgerStore, release: Path, config: JobConfig) -> dict[str, list[str]]:
    """Per version name, where the release differs from the ledger's record of it: a
    recorded version gone or without its manifest, an edited manifest or README."""
    problems: dict[str, list[str]] = {}
    for name, entry in sorted(ledger.published_versions_of(config.release.name).items()):
        version = release / name
        if not (version / MANIFEST).is_file():
            problems[name] = [f"recorded as published in the ledger, but {MANIFEST} is missing"]
            continue
        expected = {MANIFEST: entry.manifest_sha256 or "", README: entry.readme_sha256 or ""}
        found = check_text_digests(version, expected, "the ledger")
        if found:
            problems[name] = found
    return problems
