"""The persistent privacy budget ledger: charges, refusals, persistence, concurrency."""

from __future__ import annotations

import multiprocessing
import pickle
import sqlite3
import uuid
from fractions import Fraction
from pathlib import Path

import pytest

from pipelines.ledger import (
    BudgetRefused,
    BudgetState,
    LedgerEntry,
    LedgerStore,
    SqliteLedger,
    export_entries,
    parse_entries,
    published_entry,
)


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


@pytest.fixture
def ledger(tmp_path: Path) -> SqliteLedger:
    return SqliteLedger(tmp_path / "ledger.sqlite")


def test_sqlite_ledger_is_a_ledger_store(ledger: SqliteLedger) -> None:
    """SqliteLedger satisfies the LedgerStore seam the release job is written against."""
    store: LedgerStore = ledger
    assert store.entries() == []


def test_reserve_charges_and_returns_the_state_after_the_charge(ledger: SqliteLedger) -> None:
    """A reservation is charged at once; ε and δ add up across runs (basic composition)."""
    first = ledger.reserve(reservation(0.25, 1e-7), 1.0, 1e-5)
    assert (first.spent_epsilon, first.spent_delta) == (0.25, 1e-7)
    second = ledger.reserve(reservation(0.5, 2e-7), 1.0, 1e-5)
    assert second.spent_epsilon == 0.75
    assert second.spent_delta == pytest.approx(3e-7, rel=1e-15)
    assert second.remaining_epsilon == 0.25
    assert ledger.state("ratings", "user_id", 1.0, 1e-5) == second
    assert [entry.status for entry in ledger.entries()] == ["reserved", "reserved"]


def test_lifetime_admits_exactly_five_runs_of_a_fifth(ledger: SqliteLedger) -> None:
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


def test_ten_tenths_fit_where_float_addition_would_drift(ledger: SqliteLedger) -> None:
    """Amounts are summed exactly: ten runs of 0.1 fit 1.0 though float addition gives 0.999…9."""
    assert sum([0.1] * 10) != 1.0  # the hazard this guards against
    for _ in range(10):
        ledger.reserve(reservation(0.1), 1.0, 0.0)
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(1e-9), 1.0, 0.0)


def test_the_slack_never_admits_more_than_lifetime_times_one_plus_1e12(
    ledger: SqliteLedger,
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


def test_delta_is_budgeted_like_epsilon(ledger: SqliteLedger) -> None:
    """δ adds across runs and a run that would pass the lifetime δ is refused, even with ε left."""
    ledger.reserve(reservation(0.1, 6e-6), 10.0, 1e-5)
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(0.1, 6e-6), 10.0, 1e-5)
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(0.1, 1e-7), 10.0, 0.0)


def test_refusal_names_the_budget_and_charges_nothing(ledger: SqliteLedger) -> None:
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


def test_failed_and_published_runs_stay_charged(ledger: SqliteLedger) -> None:
    """mark only changes the status: failed and published runs keep their charge."""
    failed = reservation(0.4)
    published = reservation(0.4)
    ledger.reserve(failed, 1.0, 0.0)
    ledger.reserve(published, 1.0, 0.0)
    ledger.mark(failed.run_id, "failed")
    ledger.mark(published.run_id, "published", "v0001")
    assert ledger.state("ratings", "user_id", 1.0, 0.0).spent_epsilon == 0.8
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(0.4), 1.0, 0.0)
    statuses = {entry.run_id: (entry.status, entry.version) for entry in ledger.entries()}
    assert statuses == {failed.run_id: ("failed", None), published.run_id: ("published", "v0001")}


def test_mark_allows_only_reserved_to_final_and_repeats_are_no_ops(ledger: SqliteLedger) -> None:
    """Status moves once, reserved → published|failed; the same mark again is a no-op
    (orchestrator retry); changing a final status or marking an unknown run is an error."""
    entry = reservation()
    ledger.reserve(entry, 1.0, 0.0)
    with pytest.raises(ValueError, match="version"):
        ledger.mark(entry.run_id, "published")
    ledger.mark(entry.run_id, "published", "v0002")
    ledger.mark(entry.run_id, "published", "v0002")
    with pytest.raises(ValueError, match="already published"):
        ledger.mark(entry.run_id, "failed")
    with pytest.raises(ValueError, match="already published"):
        ledger.mark(entry.run_id, "published", "v0003")
    with pytest.raises(ValueError, match="status"):
        ledger.mark(entry.run_id, "reserved")  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        ledger.mark("no-such-run", "failed")
    assert ledger.entries()[0].version == "v0002"


def test_a_retried_reservation_is_not_charged_twice(ledger: SqliteLedger) -> None:
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


def test_datasets_and_privacy_units_have_separate_budgets(ledger: SqliteLedger) -> None:
    """A budget belongs to one (dataset, privacy unit): spending one leaves the others whole."""
    ledger.reserve(reservation(1.0), 1.0, 0.0)
    ledger.reserve(reservation(1.0, privacy_unit="household_id"), 1.0, 0.0)
    ledger.reserve(reservation(1.0, dataset="sessions"), 1.0, 0.0)
    with pytest.raises(BudgetRefused):
        ledger.reserve(reservation(0.1), 1.0, 0.0)
    assert ledger.state("sessions", "household_id", 1.0, 0.0).spent_epsilon == 0.0
    assert [entry.dataset for entry in ledger.entries("sessions")] == ["sessions"]
    assert len(ledger.entries()) == 3


def test_remaining_is_clamped_when_the_lifetime_is_lowered(ledger: SqliteLedger) -> None:
    """The lifetime comes from config at each call; lowering it below the spend refuses
    every further run and reports 0 remaining, never a negative budget."""
    ledger.reserve(reservation(0.8), 1.0, 0.0)
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
    first.mark(entries[1].run_id, "published", "v0001")
    reopened = SqliteLedger(path)
    assert [entry.run_id for entry in reopened.entries()] == [entry.run_id for entry in entries]
    assert reopened.entries()[1].version == "v0001"
    assert [entry.epsilon for entry in reopened.entries()] == [0.1, 0.2, 0.3]
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_invalid_entries_and_lifetimes_are_rejected(ledger: SqliteLedger) -> None:
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


def test_published_entry_finds_the_latest_version_of_a_period(ledger: SqliteLedger) -> None:
    """Idempotency support: the latest published run of (release, period), ignoring failed
    and reserved runs; a supersede is a new run and is charged again."""
    old, failed, newer = reservation(0.2), reservation(0.2), reservation(0.2)
    for entry in (old, failed, newer):
        ledger.reserve(entry, 1.0, 0.0)
    assert published_entry(ledger.entries(), "weekly", "2026-W47") is None
    ledger.mark(old.run_id, "published", "v0001")
    ledger.mark(failed.run_id, "failed")
    ledger.mark(newer.run_id, "published", "v0002")
    latest = published_entry(ledger.entries(), "weekly", "2026-W47")
    assert latest is not None
    assert latest.version == "v0002"
    assert published_entry(ledger.entries(), "weekly", "2026-W48") is None
    assert ledger.state("ratings", "user_id", 1.0, 0.0).spent_epsilon == pytest.approx(0.6)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_round_trips_exactly(ledger: SqliteLedger, fmt: str) -> None:
    """export_entries then parse_entries gives back equal entries, bit-exact amounts,
    including awkward text (commas, quotes, non-ASCII) and a missing version."""
    ledger.reserve(reservation(0.1, 1e-7, release='a,"b"', data_period="Q1 — ü"), 1.0, 1e-5)
    ledger.reserve(reservation(1 / 3, 1.2345678901234567e-9), 1.0, 1e-5)
    ledger.mark(ledger.entries()[1].run_id, "published", "v0001")
    entries = ledger.entries()
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
