"""The ledger contract suite (every test taking ``ledger`` runs against SQLite and a real
PostgreSQL server) and the SQLite specifics: charges, refusals, persistence, concurrency, pinned
lifetimes, identity, dataset names, digests of published versions, schema migration."""

from __future__ import annotations

import getpass
import hashlib
import json
import multiprocessing
import pickle
import sqlite3
import uuid
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path

import psycopg
import pytest
import yaml

from jobs.cli import main
from pipelines.errors import ExitCode
from pipelines.ledger import (
    BudgetRefused,
    BudgetState,
    LedgerEntry,
    LedgerStore,
    LifetimeChange,
    LifetimeMismatch,
    SqliteLedger,
    dataset_name,
    export_entries,
    parse_entries,
    published_entry,
)
from tests.ledger_backends import execute_raw

DIGESTS = {
    "manifest_sha256": hashlib.sha256(b"manifest.json").hexdigest(),
    "readme_sha256": hashlib.sha256(b"README.md").hexdigest(),
}


def reservation(
    epsilon: float = 0.2,
    delta: float = 0.0,
    *,
    dataset: str = "ratings",
    privacy_unit: str = "user_id",
    release: str = "weekly",
    data_period: str = "2026-W47",
    run_id: str | None = None,
) -> LedgerEntry:
    return LedgerEntry.reservation(
        run_id=run_id or uuid.uuid4().hex,
        dataset=dataset,
        privacy_unit=privacy_unit,
        release=release,
        data_period=data_period,
        epsilon=epsilon,
        delta=delta,
    )


def test_both_ledgers_are_ledger_stores(ledger: LedgerStore) -> None:
    """Each backend satisfies the LedgerStore seam the release job is written against."""
    store: LedgerStore = ledger
    assert store.entries() == []
    assert store.identity == ledger.identity
    assert store.lifetime_changes() == []
    assert store.published_versions_of("weekly") == {}


def test_reserve_charges_and_returns_the_state_after_the_charge(ledger: LedgerStore) -> None:
    """A reservation is charged at once; ε and δ add up across runs (basic composition)."""
    first = ledger.reserve(reservation(0.25, 1e-7), 1.0, 1e-5)
    assert (first.spent_epsilon, first.spent_delta) == (0.25, 1e-7)
    second = ledger.reserve(reservation(0.5, 2e-7), 1.0, 1e-5)
    assert second.spent_epsilon == 0.75
    assert second.spent_delta == pytest.approx(3e-7, rel=1e-15)
    assert second.remaining_epsilon == 0.25
    assert ledger.state("ratings", "user_id", 1.0, 1e-5) == second
    assert [entry.status for entry in ledger.entries()] == ["reserved", "reserved"]


def test_lifetime_admits_exactly_five_runs_of_a_fifth(ledger: LedgerStore) -> None:
    """Exact boundary: ε=0.2 five times fits a lifetime of 1.0 and the sixth is refused.

    In floats 0.2+0.2+0.2+0.2+0.2 is not 1.0 and the exact sum of five doubles 0.2 is
    1 + 5.6e-17; the exact sums plus the 1e-12 slack admit exactly five.
    """
    for _ in range(5):
        state = ledger.reserve(reservation(0.2), 1.0, 0.0)
    assert state.spent_epsilon == 1.0
    assert state.remaining_epsilon == 0.0
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(0.2), 1.0, 0.0)
    assert len(ledger.entries()) == 5


def test_ten_tenths_fit_where_float_addition_would_drift(ledger: LedgerStore) -> None:
    """Amounts are summed exactly: ten runs of 0.1 fit 1.0 though float addition gives 0.999…9."""
    assert sum([0.1] * 10) != 1.0  # the hazard this guards against
    for _ in range(10):
        ledger.reserve(reservation(0.1), 1.0, 0.0)
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(1e-9), 1.0, 0.0)


def test_the_slack_never_admits_more_than_lifetime_times_one_plus_1e12(
    ledger: LedgerStore,
) -> None:
    """Charges are never rounded down: a spend past lifetime·(1+1e-12) is refused."""
    ledger.reserve(reservation(1.0), 1.0, 0.0)
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(2e-12), 1.0, 0.0)
    # One tiny charge beyond the lifetime, inside the slack, is as far as it goes.
    ledger.reserve(reservation(6e-13), 1.0, 0.0)
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(6e-13), 1.0, 0.0)
    spent = sum((Fraction(entry.epsilon) for entry in ledger.entries()), Fraction(0))
    assert spent <= Fraction(1) * (1 + Fraction(1, 10**12))


def test_delta_is_budgeted_like_epsilon(ledger: LedgerStore) -> None:
    """δ adds across runs and a run that would pass the lifetime δ is refused, even with ε left."""
    ledger.reserve(reservation(0.1, 6e-6), 10.0, 1e-5)
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(0.1, 6e-6), 10.0, 1e-5)
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(0.1, 1e-7, dataset="pure"), 10.0, 0.0)


def test_refusal_names_the_budget_and_charges_nothing(ledger: LedgerStore) -> None:
    """A refused run leaves no row; its message names dataset, privacy unit, requested and
    remaining budget, and the exception survives pickling (it crosses process boundaries)."""
    ledger.reserve(reservation(0.75), 1.0, 1e-6)
    with pytest.raises(BudgetRefused) as refused:
        ledger.reserve(reservation(0.5), 1.0, 1e-6)
    message = str(refused.value)
    assert "'ratings'" in message
    assert "'user_id'" in message
    assert "requested ε=0.5" in message
    assert "remaining ε=0.25" in message
    assert refused.value.state.remaining_epsilon == 0.25
    assert len(ledger.entries()) == 1
    copy = pickle.loads(pickle.dumps(refused.value))
    assert str(copy) == message
    assert copy.state == refused.value.state


def test_failed_and_published_runs_stay_charged(ledger: LedgerStore) -> None:
    """mark only changes the status: failed and published runs keep their charge."""
    failed = reservation(0.4)
    published = reservation(0.4)
    ledger.reserve(failed, 1.0, 0.0)
    ledger.reserve(published, 1.0, 0.0)
    ledger.mark(failed.run_id, "failed")
    ledger.mark(published.run_id, "published", "v0001", **DIGESTS)
    assert ledger.state("ratings", "user_id", 1.0, 0.0).spent_epsilon == 0.8
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(0.4), 1.0, 0.0)
    statuses = {entry.run_id: (entry.status, entry.version) for entry in ledger.entries()}
    assert statuses == {failed.run_id: ("failed", None), published.run_id: ("published", "v0001")}


def test_mark_allows_only_reserved_to_final_and_repeats_are_no_ops(ledger: LedgerStore) -> None:
    """Status moves once, reserved → published|failed; the same mark again is a no-op
    (orchestrator retry); changing a final status or marking an unknown run is an error."""
    entry = reservation()
    ledger.reserve(entry, 1.0, 0.0)
    with pytest.raises(ValueError, match="version"):
        ledger.mark(entry.run_id, "published")
    ledger.mark(entry.run_id, "published", "v0002", **DIGESTS)
    ledger.mark(entry.run_id, "published", "v0002", **DIGESTS)
    with pytest.raises(ValueError, match="already published"):
        ledger.mark(entry.run_id, "failed")
    with pytest.raises(ValueError, match="already published"):
        ledger.mark(entry.run_id, "published", "v0003", **DIGESTS)
    with pytest.raises(ValueError, match="status"):
        ledger.mark(entry.run_id, "reserved")  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        ledger.mark("no-such-run", "failed")
    assert ledger.entries()[0].version == "v0002"


def test_a_retried_reservation_is_not_charged_twice(ledger: LedgerStore) -> None:
    """The run id is the primary key: repeating an identical reservation is a no-op, and
    reusing a run id for other values or after a final status is refused."""
    entry = reservation(0.3)
    ledger.reserve(entry, 1.0, 0.0)
    again = ledger.reserve(entry, 1.0, 0.0)
    assert again.spent_epsilon == 0.3
    assert len(ledger.entries()) == 1
    with pytest.raises(ValueError, match="fresh run id"):
        ledger.reserve(reservation(0.1, run_id=entry.run_id), 1.0, 0.0)
    ledger.mark(entry.run_id, "failed")
    with pytest.raises(ValueError, match="fresh run id"):
        ledger.reserve(entry, 1.0, 0.0)
    assert ledger.state("ratings", "user_id", 1.0, 0.0).spent_epsilon == 0.3


def test_datasets_and_privacy_units_have_separate_budgets(ledger: LedgerStore) -> None:
    """A budget belongs to one (dataset, privacy unit): spending one leaves the others whole."""
    ledger.reserve(reservation(1.0), 1.0, 0.0)
    ledger.reserve(reservation(1.0, privacy_unit="household_id"), 1.0, 0.0)
    ledger.reserve(reservation(1.0, dataset="sessions"), 1.0, 0.0)
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(0.1), 1.0, 0.0)
    assert ledger.state("sessions", "household_id", 1.0, 0.0).spent_epsilon == 0.0
    assert [entry.dataset for entry in ledger.entries("sessions")] == ["sessions"]
    assert len(ledger.entries()) == 3


def test_remaining_is_clamped_when_the_lifetime_is_lowered(ledger: LedgerStore) -> None:
    """set_lifetime may lower a pinned lifetime below the spend: every further run is then
    refused and the state reports 0 remaining, never a negative budget."""
    ledger.reserve(reservation(0.8), 1.0, 0.0)
    ledger.set_lifetime("ratings", "user_id", 0.5, 0.0, "retire the dataset", "alice")
    state = ledger.state("ratings", "user_id", 0.5, 0.0)
    assert state == BudgetState("ratings", "user_id", 0.5, 0.0, 0.8, 0.0, 1)
    assert state.remaining_epsilon == 0.0
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(0.0), 0.5, 0.0)


def test_ledger_persists_across_reopen(tmp_path: Path) -> None:
    """Charges and statuses are in the file: a new SqliteLedger on the same path sees them,
    in reservation order, with the exact amounts."""
    path = tmp_path / "nested" / "ledger.sqlite"
    first = SqliteLedger(path)
    entries = [reservation(0.1), reservation(0.2, 1e-9), reservation(0.3)]
    for entry in entries:
        first.reserve(entry, 1.0, 1e-6)
    first.mark(entries[1].run_id, "published", "v0001", **DIGESTS)
    reopened = SqliteLedger(path)
    assert [entry.run_id for entry in reopened.entries()] == [entry.run_id for entry in entries]
    assert reopened.entries()[1].version == "v0001"
    assert [entry.epsilon for entry in reopened.entries()] == [0.1, 0.2, 0.3]
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_invalid_entries_and_lifetimes_are_rejected(ledger: LedgerStore) -> None:
    """Amounts must be finite and non-negative with δ < 1, timestamps UTC, and a version only
    on published entries; a non-reserved entry cannot be reserved."""
    for bad in (float("nan"), float("inf"), -0.1):
        with pytest.raises(ValueError, match="epsilon"):
            reservation(bad)
    with pytest.raises(ValueError, match="delta"):
        reservation(0.1, 1.0)
    with pytest.raises(ValueError, match="UTC"):
        LedgerEntry("r", "d", "u", "rel", "p", 0.1, 0.0, "reserved", "2026-01-01T00:00:00")
    with pytest.raises(ValueError, match="version"):
        LedgerEntry("r", "d", "u", "rel", "p", 0.1, 0.0, "failed", "2026-01-01T00:00:00Z", "v1")
    published = LedgerEntry(
        "r", "d", "u", "rel", "p", 0.1, 0.0, "published", "2026-01-01T00:00:00Z", "v1"
    )
    with pytest.raises(ValueError, match="reserved"):
        ledger.reserve(published, 1.0, 0.0)
    with pytest.raises(ValueError, match="lifetime_epsilon"):
        ledger.reserve(reservation(), float("nan"), 0.0)
    assert ledger.entries() == []


def test_published_entry_finds_the_latest_version_of_a_period(ledger: LedgerStore) -> None:
    """Idempotency support: the latest published run of (release, period), ignoring failed
    and reserved runs; a supersede is a new run and is charged again."""
    old, failed, newer = reservation(0.2), reservation(0.2), reservation(0.2)
    for entry in (old, failed, newer):
        ledger.reserve(entry, 1.0, 0.0)
    assert published_entry(ledger.entries(), "weekly", "2026-W47") is None
    ledger.mark(old.run_id, "published", "v0001", **DIGESTS)
    ledger.mark(failed.run_id, "failed")
    ledger.mark(newer.run_id, "published", "v0002", **DIGESTS)
    latest = published_entry(ledger.entries(), "weekly", "2026-W47")
    assert latest is not None
    assert latest.version == "v0002"
    assert published_entry(ledger.entries(), "weekly", "2026-W48") is None
    assert ledger.state("ratings", "user_id", 1.0, 0.0).spent_epsilon == pytest.approx(0.6)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_round_trips_exactly(ledger: LedgerStore, fmt: str) -> None:
    """export_entries then parse_entries gives back equal entries, bit-exact amounts,
    including awkward text (commas, quotes, non-ASCII) and a missing version."""
    ledger.reserve(reservation(0.1, 1e-7, release='a,"b"', data_period="Q1 — ü"), 1.0, 1e-5)
    ledger.reserve(reservation(1 / 3, 1.2345678901234567e-9), 1.0, 1e-5)
    ledger.mark(ledger.entries()[1].run_id, "published", "v0001", **DIGESTS)
    entries = ledger.entries()
    assert entries[1].manifest_sha256 == DIGESTS["manifest_sha256"]
    text = export_entries(entries, fmt)  # type: ignore[arg-type]
    assert parse_entries(text, fmt) == entries  # type: ignore[arg-type]
    assert len(text.splitlines()) == len(entries) + (1 if fmt == "csv" else 0)


def test_export_rejects_unknown_formats_and_fields() -> None:
    """A wrong format name or a foreign field is an error, not a silent partial import."""
    with pytest.raises(ValueError, match="format"):
        export_entries([], "xml")  # type: ignore[arg-type]
    line = export_entries([reservation()]).replace('"version"', '"versions"')
    with pytest.raises(ValueError, match="unknown fields"):
        parse_entries(line)


def _reserve_in_child(path: str, barrier: object, results: object) -> None:
    """Child process body: wait for all, reserve ε=0.2 against 1.0, report the outcome."""
    ledger = SqliteLedger(path)
    entry = reservation(0.2)
    barrier.wait(timeout=60)  # type: ignore[attr-defined]
    try:
        ledger.reserve(entry, 1.0, 0.0)
        outcome = "admitted"
    except BudgetRefused:
        outcome = "refused"
    except Exception as error:  # reported to the parent, which fails the test
        outcome = f"error: {type(error).__name__}: {error}"
    results.put((entry.run_id, outcome))  # type: ignore[attr-defined]


def test_eight_concurrent_processes_share_one_budget_exactly(tmp_path: Path) -> None:
    """Eight processes (spawned, released together by a barrier) each reserve ε=0.2 against a
    lifetime of 1.0 on a fresh file: exactly five are admitted and three refused, with no
    lost, duplicated or failed (locked) reservation."""
    path = str(tmp_path / "ledger.sqlite")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(8)
    results = context.Queue()
    processes = [
        context.Process(target=_reserve_in_child, args=(path, barrier, results)) for _ in range(8)
    ]
    for process in processes:
        process.start()
    outcomes = dict(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    admitted = {run_id for run_id, outcome in outcomes.items() if outcome == "admitted"}
    refused = {run_id for run_id, outcome in outcomes.items() if outcome == "refused"}
    assert (len(admitted), len(refused)) == (5, 3), outcomes
    entries = SqliteLedger(path).entries()
    assert {entry.run_id for entry in entries} == admitted
    assert len(entries) == 5
    assert SqliteLedger(path).state("ratings", "user_id", 1.0, 0.0).spent_epsilon == 1.0


def _reserve_with_lifetime_in_child(
    path: str, lifetime: float, barrier: object, results: object
) -> None:
    """Child process body: reserve ε=0.2 against ``lifetime``, report the outcome."""
    ledger = SqliteLedger(path)
    entry = reservation(0.2)
    barrier.wait(timeout=60)  # type: ignore[attr-defined]
    try:
        ledger.reserve(entry, lifetime, 0.0)
        outcome = "admitted"
    except LifetimeMismatch:
        outcome = "mismatch"
    except Exception as error:  # reported to the parent, which fails the test
        outcome = f"error: {type(error).__name__}: {error}"
    results.put((entry.run_id, lifetime, outcome))  # type: ignore[attr-defined]


def test_concurrent_first_reservations_pin_exactly_one_lifetime(tmp_path: Path) -> None:
    """Eight processes race for the first reservation of a fresh budget, four configured
    with a lifetime of 1.0 and four with 2.0: exactly one lifetime is pinned, every run
    configured with it is admitted, and every other run is refused and charges nothing."""
    path = str(tmp_path / "ledger.sqlite")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(8)
    results = context.Queue()
    lifetimes = [1.0, 2.0] * 4
    processes = [
        context.Process(
            target=_reserve_with_lifetime_in_child, args=(path, lifetime, barrier, results)
        )
        for lifetime in lifetimes
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    ledger = SqliteLedger(path)
    pinned = ledger.pinned_lifetime("ratings", "user_id")
    assert pinned is not None
    for _, lifetime, outcome in outcomes:
        assert outcome == ("admitted" if lifetime == pinned[0] else "mismatch"), outcomes
    assert len(ledger.entries()) == 4
    assert ledger.state("ratings", "user_id", *pinned).spent_epsilon == pytest.approx(0.8)


def _v1_ledger(path: Path, rows: list[tuple[object, ...]]) -> None:
    """A schema version 1 ledger file, made with the SQL of that version."""
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(
            """CREATE TABLE ledger_entries (
                run_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, privacy_unit TEXT NOT NULL,
                release TEXT NOT NULL, data_period TEXT NOT NULL,
                epsilon REAL NOT NULL CHECK (epsilon >= 0),
                delta REAL NOT NULL CHECK (delta >= 0 AND delta < 1),
                status TEXT NOT NULL CHECK (status IN ('reserved', 'published', 'failed')),
                created_at TEXT NOT NULL, version TEXT)"""
        )
        connection.execute(
            "CREATE INDEX ledger_entries_budget ON ledger_entries (dataset, privacy_unit)"
        )
        connection.executemany("INSERT INTO ledger_entries VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
        connection.execute("PRAGMA user_version = 1")
    connection.close()


T0 = "2026-01-01T00:00:00+00:00"
V1_ROWS: list[tuple[object, ...]] = [
    ("r1", "MovieLens", "user_id", "weekly", "W1", 0.5, 1e-7, "published", T0, "v0001"),
    ("r2", "movielens ", "user_id", "weekly", "W2", 0.25, 0.0, "failed", T0, None),
    ("r3", "sessions", "device", "daily", "D1", 1.0, 0.0, "reserved", T0, None),
]


def test_a_version_1_ledger_is_migrated_keeping_entries_and_charges(tmp_path: Path) -> None:
    """Opening a version 1 file adds the identity, lifetime tables and digest columns in
    one transaction: every entry and charge is kept, spellings of one dataset merge into
    one budget, nothing is pinned (version 1 knew no lifetime), and the migrated file then
    behaves like a new one."""
    path = tmp_path / "ledger.sqlite"
    _v1_ledger(path, V1_ROWS)
    ledger = SqliteLedger(path)
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 3
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    connection.close()
    assert {"ledger_meta", "lifetimes", "lifetime_changes"} <= tables
    entries = ledger.entries()
    assert [(e.run_id, e.dataset, e.epsilon, e.status) for e in entries] == [
        ("r1", "movielens", 0.5, "published"),
        ("r2", "movielens", 0.25, "failed"),
        ("r3", "sessions", 1.0, "reserved"),
    ]
    assert (entries[0].version, entries[0].manifest_sha256, entries[0].readme_sha256) == (
        "v0001",
        None,
        None,
    )
    state = ledger.state("MovieLens", "user_id", 1.0, 1e-6)
    assert (state.spent_epsilon, state.spent_delta, state.charges) == (0.75, 1e-7, 2)
    assert ledger.pinned_lifetime("movielens", "user_id") is None
    assert uuid.UUID(hex=ledger.identity).version == 4
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(0.5, dataset="movielens"), 1.0, 1e-6)
    assert ledger.pinned_lifetime("movielens", "user_id") is None  # refused: nothing pinned
    ledger.reserve(reservation(0.25, dataset="movielens"), 1.0, 1e-6)
    assert ledger.pinned_lifetime("movielens", "user_id") == (1.0, 1e-6)
    reopened = SqliteLedger(path)
    assert reopened.identity == ledger.identity  # migrated once
    assert len(reopened.entries()) == 4


def test_a_failed_migration_leaves_the_version_1_file_unchanged(tmp_path: Path) -> None:
    """A version 1 dataset name that is no valid name stops the migration, and its single
    transaction rolls back: the file stays version 1 with its entries; a schema version
    newer than this code is refused."""
    path = tmp_path / "ledger.sqlite"
    _v1_ledger(path, [("r1", "movie lens", "user_id", "w", "W1", 0.5, 0.0, "reserved", T0, None)])
    with pytest.raises(OSError, match="movie lens"):
        SqliteLedger(path)
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 1
        columns = [row[1] for row in connection.execute("PRAGMA table_info(ledger_entries)")]
        assert "manifest_sha256" not in columns
        assert connection.execute("SELECT count(*) FROM ledger_entries").fetchone()[0] == 1
        assert connection.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'ledger_meta'"
        ).fetchone() == (0,)
        connection.execute("PRAGMA user_version = 4")
    connection.close()
    with pytest.raises(OSError, match="schema version 4"):
        SqliteLedger(path)


def test_each_ledger_has_its_own_identity_which_survives_reopening(tmp_path: Path) -> None:
    """The identity is a uuid4 hex made once with the file: two ledgers differ, a reopened
    ledger keeps it, and the file holds exactly one identity row, which cannot change."""
    first = SqliteLedger(tmp_path / "a.sqlite")
    second = SqliteLedger(tmp_path / "b.sqlite")
    assert first.identity != second.identity
    assert uuid.UUID(hex=first.identity).version == 4
    assert len(first.identity) == 32
    assert SqliteLedger(tmp_path / "a.sqlite").identity == first.identity
    assert SqliteLedger(tmp_path / "a.sqlite").created_at == first.created_at
    with sqlite3.connect(tmp_path / "a.sqlite") as connection:
        assert connection.execute("SELECT identity FROM ledger_meta").fetchall() == [
            (first.identity,)
        ]
        with pytest.raises(sqlite3.DatabaseError, match="identity is fixed"):
            connection.execute("UPDATE ledger_meta SET identity = ?", (second.identity,))
    connection.close()


def test_a_deleted_or_replaced_ledger_is_refused_not_restarted(tmp_path: Path) -> None:
    """An open ledger whose file was deleted does not recreate an empty one (which would
    start every budget from zero), and one whose file was replaced by another ledger
    refuses to charge it: both are OSErrors naming the identity."""
    path = tmp_path / "ledger.sqlite"
    ledger = SqliteLedger(path)
    ledger.reserve(reservation(0.9), 1.0, 0.0)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with pytest.raises(OSError, match="restore it from backup"):
        ledger.reserve(reservation(0.9), 1.0, 0.0)
    assert not path.exists()
    SqliteLedger(path)  # someone starts a fresh ledger in its place
    with pytest.raises(OSError, match=ledger.identity):
        ledger.reserve(reservation(0.9), 1.0, 0.0)
    with pytest.raises(OSError, match="deleted or replaced"):
        ledger.entries()


def test_the_first_reservation_pins_the_lifetime_and_a_larger_one_is_refused(
    ledger: LedgerStore,
) -> None:
    """A later config with a larger lifetime is refused with LifetimeMismatch and charges
    nothing, in reserve and in state; the message names the field, both values and the
    command that changes a pin, and the exception survives pickling."""
    ledger.reserve(reservation(0.9), 1.0, 1e-6)
    assert ledger.pinned_lifetime("ratings", "user_id") == (1.0, 1e-6)
    with pytest.raises(LifetimeMismatch) as mismatch:
        ledger.reserve(reservation(0.9), 10.0, 1e-6)
    error = mismatch.value
    assert (error.dataset, error.privacy_unit) == ("ratings", "user_id")
    assert (error.configured, error.pinned) == ((10.0, 1e-6), (1.0, 1e-6))
    message = str(error)
    assert "ledger.lifetime_budget" in message
    assert "ε=10.0, δ=1e-06" in message and "ε=1.0, δ=1e-06" in message
    assert "dprelease ledger set-lifetime CONFIG --epsilon E --delta D --reason TEXT" in message
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.configured, copy.pinned) == (message, error.configured, error.pinned)
    assert len(ledger.entries()) == 1
    with pytest.raises(LifetimeMismatch):
        ledger.state("ratings", "user_id", 10.0, 1e-6)
    with pytest.raises(LifetimeMismatch):
        ledger.reserve(reservation(0.01), 1.0, 1e-5)  # δ alone differs
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(0.9), 1.0, 1e-6)  # the pinned lifetime is checked
    assert ledger.state("ratings", "user_id", 1.0, 1e-6).spent_epsilon == 0.9


def test_state_of_an_uncharged_budget_pins_nothing(ledger: LedgerStore) -> None:
    """state() of a budget never charged reports the configured lifetime and pins nothing;
    a refused first reservation pins nothing either."""
    state = ledger.state("ratings", "user_id", 3.0, 0.0)
    assert (state.lifetime_epsilon, state.spent_epsilon, state.charges) == (3.0, 0.0, 0)
    assert ledger.state("ratings", "user_id", 4.0, 0.0).lifetime_epsilon == 4.0
    assert ledger.pinned_lifetime("ratings", "user_id") is None
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(5.0), 4.0, 0.0)
    assert ledger.pinned_lifetime("ratings", "user_id") is None
    ledger.reserve(reservation(1.0), 2.0, 0.0)
    assert ledger.pinned_lifetime("ratings", "user_id") == (2.0, 0.0)
    assert ledger.pinned_lifetime("ratings", "household_id") is None


def test_set_lifetime_admits_the_new_lifetime_and_records_the_change(
    ledger: LedgerStore,
) -> None:
    """set_lifetime is the only way to a larger lifetime: after it the new lifetime is
    admitted, the old one is refused, and lifetime_changes holds who, why, when and the
    old and new values; the same value again is a no-op."""
    ledger.reserve(reservation(1.0), 1.0, 0.0)
    with pytest.raises(LifetimeMismatch):
        ledger.reserve(reservation(1.0), 2.0, 0.0)
    ledger.set_lifetime("ratings", "user_id", 2.0, 1e-6, "approved by the DP board", "alice")
    state = ledger.reserve(reservation(1.0), 2.0, 1e-6)
    assert (state.lifetime_epsilon, state.spent_epsilon, state.remaining_epsilon) == (2, 2, 0)
    with pytest.raises(LifetimeMismatch):
        ledger.state("ratings", "user_id", 1.0, 0.0)
    ledger.set_lifetime("ratings", "user_id", 2.0, 1e-6, "repeated", "alice")
    [change] = ledger.lifetime_changes()
    assert change == LifetimeChange(
        "ratings",
        "user_id",
        1.0,
        0.0,
        2.0,
        1e-6,
        "approved by the DP board",
        "alice",
        change.changed_at,
    )
    assert datetime.fromisoformat(change.changed_at).utcoffset() == timedelta(0)
    assert ledger.pinned_lifetime("ratings", "user_id") == (2.0, 1e-6)


def test_set_lifetime_pins_before_first_use_and_needs_a_reason(ledger: LedgerStore) -> None:
    """A lifetime can be pinned before any run (old values None); a blank reason or actor
    or an invalid lifetime is refused and records nothing; the history is append-only."""
    for reason, actor in (("", "alice"), ("   ", "alice"), ("why", " ")):
        with pytest.raises(ValueError, match=r"reason|actor"):
            ledger.set_lifetime("sessions", "device", 1.0, 0.0, reason, actor)
    with pytest.raises(ValueError, match="lifetime_delta"):
        ledger.set_lifetime("sessions", "device", 1.0, 1.0, "why", "alice")
    assert ledger.lifetime_changes() == []
    ledger.set_lifetime("Sessions", "device", 0.5, 0.0, "initial budget", "bob")
    ledger.set_lifetime("ratings", "user_id", 1.0, 0.0, "initial budget", "bob")
    [change] = ledger.lifetime_changes(" SESSIONS ")
    assert (change.dataset, change.old_epsilon, change.old_delta) == ("sessions", None, None)
    assert len(ledger.lifetime_changes()) == 2
    with pytest.raises(LifetimeMismatch):
        ledger.reserve(reservation(0.1, dataset="sessions", privacy_unit="device"), 1.0, 0.0)
    ledger.reserve(reservation(0.1), 1.0, 0.0)
    refusals = {
        "DELETE FROM lifetime_changes": "append-only",
        "UPDATE lifetime_changes SET actor = 'x'": "append-only",
        "DELETE FROM lifetimes": "set_lifetime",
        "DELETE FROM ledger_entries": "never goes away",
        "UPDATE ledger_entries SET epsilon = 0": "never changes",
        "DELETE FROM registrations": "never goes away",
        "UPDATE ledger_meta SET identity = identity": "identity is fixed",
    }
    for statement, why in refusals.items():
        with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match=why):
            execute_raw(ledger, statement)
    assert len(ledger.entries()) == 1


def test_spellings_of_a_dataset_name_share_one_budget(ledger: LedgerStore) -> None:
    """' MovieLens ' and 'movielens' are one dataset: entries store the canonical name and
    state, entries, set_lifetime and lifetime_changes accept any spelling of it."""
    assert dataset_name(" MovieLens ") == "movielens"
    ledger.reserve(reservation(0.6, dataset=" MovieLens "), 1.0, 0.0)
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(0.6, dataset="movielens"), 1.0, 0.0)
    assert [e.dataset for e in ledger.entries("MOVIELENS")] == ["movielens"]
    assert ledger.state(" movieLens", "user_id", 1.0, 0.0).spent_epsilon == 0.6
    ledger.set_lifetime("MovieLens ", "user_id", 2.0, 0.0, "more", "alice")
    ledger.reserve(reservation(0.6, dataset="movielens"), 2.0, 0.0)
    assert len(ledger.lifetime_changes("movielens")) == 1
    with pytest.raises(ValueError, match="dataset name"):
        reservation(dataset="movie lens")
    with pytest.raises(ValueError, match="dataset name"):
        ledger.entries("movie\tlens")


def test_published_entries_record_the_digests_of_manifest_and_readme(
    ledger: LedgerStore,
) -> None:
    """mark(published) needs both digests (64 lowercase hex); failed takes none; the same
    mark again is a no-op, other digests are refused; published_versions_of maps version
    names to their entries."""
    first, second, failed = reservation(0.1), reservation(0.1), reservation(0.1)
    for entry in (first, second, failed):
        ledger.reserve(entry, 1.0, 0.0)
    with pytest.raises(ValueError, match="manifest_sha256"):
        ledger.mark(first.run_id, "published", "v0001")
    bad = DIGESTS | {"readme_sha256": DIGESTS["readme_sha256"].upper()}
    with pytest.raises(ValueError, match="readme_sha256"):
        ledger.mark(first.run_id, "published", "v0001", **bad)
    with pytest.raises(ValueError, match="digests"):
        ledger.mark(failed.run_id, "failed", **DIGESTS)
    ledger.mark(first.run_id, "published", "v0001", **DIGESTS)
    ledger.mark(first.run_id, "published", "v0001", **DIGESTS)
    other = DIGESTS | {"manifest_sha256": hashlib.sha256(b"edited").hexdigest()}
    with pytest.raises(ValueError, match="already published"):
        ledger.mark(first.run_id, "published", "v0001", **other)
    ledger.mark(second.run_id, "published", "v0002", **other)
    ledger.mark(failed.run_id, "failed")
    versions = ledger.published_versions_of("weekly")
    assert sorted(versions) == ["v0001", "v0002"]
    assert versions["v0001"].manifest_sha256 == DIGESTS["manifest_sha256"]
    assert versions["v0002"].run_id == second.run_id
    assert ledger.published_versions_of("daily") == {}
    with pytest.raises(ValueError, match="digests"):
        LedgerEntry("r", "d", "u", "rel", "p", 0.1, 0.0, "reserved", T0, None, *DIGESTS.values())
    with pytest.raises(ValueError, match="both"):
        LedgerEntry(
            "r", "d", "u", "rel", "p", 0.1, 0.0, "published", T0, "v1", DIGESTS["manifest_sha256"]
        )


def test_exports_made_before_the_digest_fields_still_parse(ledger: LedgerStore) -> None:
    """A version 1 export (no digest fields) parses, digests None, in both formats."""
    entry = reservation()
    ledger.reserve(entry, 1.0, 0.0)
    ledger.mark(entry.run_id, "published", "v0001", **DIGESTS)
    [published] = ledger.entries()
    old = LedgerEntry(**{k: v for k, v in published.to_dict().items() if k not in DIGESTS})  # type: ignore[arg-type]
    line = json.dumps({k: v for k, v in old.to_dict().items() if k not in DIGESTS})
    assert parse_entries(line) == [old]
    header, row = export_entries([old], "csv").splitlines()
    columns = header.split(",")
    keep = [i for i, name in enumerate(columns) if name not in DIGESTS]
    csv_text = "\n".join(",".join(part.split(",")[i] for i in keep) for part in (header, row))
    assert parse_entries(csv_text, "csv") == [old]


def _job_config(tmp_path: Path, lifetime_epsilon: float) -> str:
    """A job config whose ledger lives under ``tmp_path`` (its input is never read)."""
    raw = {
        "release": {"name": "weekly", "output_root": str(tmp_path / "out"), "data_period": "W1"},
        "input": {"path": str(tmp_path / "in.parquet")},
        "privacy_unit": {"column": "user_id"},
        "partition_columns": ["key"],
        "contribution_bounds": {"max_partitions_per_unit": 1, "max_rows_per_unit_per_partition": 1},
        "metrics": [{"metric": "count"}],
        "budget": {"epsilon": 1.0, "delta": 1e-6},
        "ledger": {
            "dataset": " Ratings ",
            "lifetime_budget": {"epsilon": lifetime_epsilon, "delta": 1e-5},
        },
    }
    path = tmp_path / f"job-{lifetime_epsilon}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return str(path)


def test_cli_set_lifetime_and_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ledger set-lifetime` pins the config's budget, recording the OS user and the reason,
    and prints one JSON line; `ledger show` prints the identity, the pinned lifetime (and
    that the config disagrees) and the change history; bad arguments are exit 2."""
    monkeypatch.setattr(getpass, "getuser", lambda: "tester")
    config = _job_config(tmp_path, 10.0)
    args = ["ledger", "set-lifetime", config, "--epsilon", "12", "--delta", "1e-5"]
    assert main([*args, "--reason", " "]) == ExitCode.CONFIG_ERROR
    assert main([*args[:4], "0", "--delta", "0", "--reason", "x"]) == ExitCode.CONFIG_ERROR
    assert not (tmp_path / "out").exists()  # nothing created for a refused change
    assert main([*args, "--reason", "board approval"]) == ExitCode.OK
    [line] = capsys.readouterr().out.splitlines()
    printed = json.loads(line)
    assert (printed["dataset"], printed["epsilon"], printed["actor"]) == ("ratings", 12.0, "tester")
    ledger = SqliteLedger(tmp_path / "out" / "_ledger" / "ledger.sqlite")
    assert printed["ledger"] == ledger.identity
    [change] = ledger.lifetime_changes("ratings")
    assert (change.new_epsilon, change.reason, change.actor) == (12.0, "board approval", "tester")
    with pytest.raises(LifetimeMismatch):
        ledger.reserve(reservation(0.5), 10.0, 1e-5)
    assert main(["ledger", "show", config]) == ExitCode.OK
    out = capsys.readouterr().out
    assert ledger.identity in out.splitlines()[0]
    assert "pinned ε=12.0, δ=1e-05; the config's ledger.lifetime_budget ε=10.0" in out
    assert "board approval" in out and "unpinned -> 12.0" in out
    assert json.loads(out.splitlines()[-1])["lifetime_epsilon"] == 12.0
    assert main(["ledger", "show", _job_config(tmp_path, 12.0)]) == ExitCode.OK
    assert "differs" not in capsys.readouterr().out
