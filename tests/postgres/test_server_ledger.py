"""The server ledger against a real PostgreSQL server: concurrency across processes, killed
connections, a dropped database, a restarted server and a stopped one."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from jobs.cli import main
from pipelines.errors import ExitCode
from pipelines.ledger import BudgetRefused, LedgerEntry, LifetimeMismatch
from pipelines.ledger.postgres import PostgresLedger, _lock_key
from tests.pg_server import PostgresServer, wait_until


def reservation(epsilon: float = 0.2) -> LedgerEntry:
    return LedgerEntry.reservation(
        run_id=uuid.uuid4().hex,
        dataset="ratings",
        privacy_unit="user_id",
        release="weekly",
        data_period="W1",
        epsilon=epsilon,
        delta=0.0,
    )


def _reserve_in_child(url: str, lifetime: float, barrier: Any, results: Any) -> None:
    """Child process body: its own ledger object and connections; reserve ε=0.2."""
    ledger = PostgresLedger(url)
    entry = reservation()
    barrier.wait(timeout=60)
    try:
        ledger.reserve(entry, lifetime, 0.0)
        outcome = "admitted"
    except BudgetRefused:
        outcome = "refused"
    except LifetimeMismatch:
        outcome = "mismatch"
    except Exception as error:  # reported to the parent, which fails the test
        outcome = f"error: {type(error).__name__}: {error}"
    results.put((entry.run_id, lifetime, outcome))


def _race(url: str, lifetimes: list[float]) -> list[tuple[str, float, str]]:
    """One spawned process per lifetime, released together by a barrier."""
    PostgresLedger(url)  # the schema exists before the race (its creation is tested below)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(lifetimes))
    results = context.Queue()
    processes = [
        context.Process(target=_reserve_in_child, args=(url, lifetime, barrier, results))
        for lifetime in lifetimes
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return outcomes


def test_eight_concurrent_processes_against_a_lifetime_for_five_admit_exactly_five(
    postgres_url: str,
) -> None:
    outcomes = _race(postgres_url, [1.0] * 8)
    admitted = {run_id for run_id, _, outcome in outcomes if outcome == "admitted"}
    refused = [run_id for run_id, _, outcome in outcomes if outcome == "refused"]
    assert (len(admitted), len(refused)) == (5, 3), outcomes
    ledger = PostgresLedger(postgres_url)
    assert {entry.run_id for entry in ledger.entries()} == admitted
    assert ledger.state("ratings", "user_id", 1.0, 0.0).spent_epsilon == 1.0


def test_concurrent_first_reservations_pin_exactly_one_lifetime(postgres_url: str) -> None:
    outcomes = _race(postgres_url, [1.0, 2.0] * 4)
    ledger = PostgresLedger(postgres_url)
    pinned = ledger.pinned_lifetime("ratings", "user_id")
    assert pinned is not None
    for _, lifetime, outcome in outcomes:
        assert outcome == ("admitted" if lifetime == pinned[0] else "mismatch"), outcomes
    assert len(ledger.entries()) == 4


def test_concurrent_first_opens_create_one_schema(postgres_url: str) -> None:
    """Eight threads open a fresh database at once: one identity, no error."""
    identities: list[str] = []
    threads = [
        threading.Thread(target=lambda: identities.append(PostgresLedger(postgres_url).identity))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(identities) == 8 and len(set(identities)) == 1


def _waiting_backend(server: PostgresServer, dbname: str) -> tuple[int, str] | None:
    """The (pid, statement) of the ledger's backend waiting for a lock, if any."""
    with server.admin() as admin:
        row = admin.execute(
            "SELECT pid, query FROM pg_stat_activity WHERE datname = %s AND application_name = "
            "'dprelease' AND wait_event_type = 'Lock'",
            (dbname,),
        ).fetchone()
    return None if row is None else (int(str(row[0])), str(row[1]))


def _kill_while_blocked(
    server: PostgresServer, url: str, block: str, waits_at: str, entry: LedgerEntry
) -> BaseException | None:
    """Reserve ``entry`` while another session runs ``block`` (which makes the reservation
    wait at a known point of its transaction), terminate the reserving backend there
    (pg_terminate_backend), then end the blocking session; the reservation's error."""
    ledger = PostgresLedger(url)
    dbname = url.rsplit("/", 1)[1]
    errors: list[BaseException] = []

    def reserve() -> None:
        try:
            ledger.reserve(entry, 1.0, 0.0)
        except BaseException as error:
            errors.append(error)

    with psycopg.connect(url) as blocker:
        blocker.execute(block)
        thread = threading.Thread(target=reserve)
        thread.start()
        wait_until(lambda: _waiting_backend(server, dbname) is not None)
        waiting = _waiting_backend(server, dbname)
        assert waiting is not None
        pid, statement = waiting
        assert statement.startswith(waits_at), statement
        with server.admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        thread.join(timeout=60)
        blocker.rollback()
    return errors[0] if errors else None


@pytest.mark.parametrize(
    ("block", "waits_at"),
    [
        # Waits for the dataset's lock: killed before it read or wrote anything.
        (f"SELECT pg_advisory_xact_lock({_lock_key('ratings')})", "SELECT pg_advisory_xact_lock"),
        # Waits at the registration insert: killed after its entry row was written.
        ("LOCK TABLE registrations IN SHARE MODE", "INSERT INTO registrations"),
    ],
    ids=["before-the-charge", "after-the-entry-insert"],
)
def test_a_connection_killed_mid_reservation_leaves_no_charge(
    postgres_server: PostgresServer, postgres_url: str, block: str, waits_at: str
) -> None:
    """A backend terminated inside the reservation's transaction rolls back: no entry, no
    pin, no registration; the error reaches the caller; the same entry retried is then
    charged once, whole (entry, pin and registration)."""
    entry = reservation()
    error = _kill_while_blocked(postgres_server, postgres_url, block, waits_at, entry)
    assert isinstance(error, psycopg.OperationalError), error
    ledger = PostgresLedger(postgres_url)
    assert ledger.entries() == []
    assert ledger.pinned_lifetime("ratings", "user_id") is None
    assert ledger.registrations() == {}
    ledger.reserve(entry, 1.0, 0.0)
    ledger.reserve(entry, 1.0, 0.0)  # a retry after a lost acknowledgement: a no-op
    assert [e.run_id for e in ledger.entries()] == [entry.run_id]
    assert list(ledger.registrations()) == [entry.run_id]
    assert ledger.state("ratings", "user_id", 1.0, 0.0).spent_epsilon == 0.2


def test_a_dropped_and_recreated_ledger_is_refused_not_restarted(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    ledger = PostgresLedger(postgres_url)
    ledger.reserve(reservation(), 1.0, 0.0)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("DROP SCHEMA public CASCADE")
        admin.execute("CREATE SCHEMA public")
    with pytest.raises(OSError, match="no longer the ledger"):
        ledger.entries()
    fresh = PostgresLedger(postgres_url)
    assert fresh.identity != ledger.identity
    with pytest.raises(OSError, match="no longer the ledger"):
        ledger.reserve(reservation(), 1.0, 0.0)


def test_the_ledger_survives_a_server_restart(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    """Committed charges are durable; the same ledger object reconnects after a restart."""
    ledger = PostgresLedger(postgres_url)
    first = reservation()
    ledger.reserve(first, 1.0, 0.0)
    postgres_server.restart()
    assert [e.run_id for e in ledger.entries()] == [first.run_id]
    ledger.mark(first.run_id, "failed")
    assert ledger.reserve(reservation(), 1.0, 0.0).spent_epsilon == pytest.approx(0.4)


def test_a_stopped_server_is_one_line_exit_2_and_reads_no_data(
    postgres_server: PostgresServer,
    postgres_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The server is down before the run: `run` fails at the ledger, before Spark and
    before the input (which does not exist: a read would be exit 4), with one stderr
    line naming the server (no password) and exit 2; `ledger show` likewise."""
    PostgresLedger(postgres_url)
    raw = {
        "release": {"name": "weekly", "output_root": str(tmp_path / "out"), "data_period": "W1"},
        "input": {"path": str(tmp_path / "missing.parquet")},
        "privacy_unit": {"column": "user_id"},
        "partition_columns": ["key"],
        "contribution_bounds": {"max_partitions_per_unit": 1, "max_rows_per_unit_per_partition": 1},
        "metrics": [{"metric": "count"}],
        "budget": {"epsilon": 1.0, "delta": 1e-6},
        "ledger": {"dataset": "ratings", "lifetime_budget": {"epsilon": 4.0}, "url": postgres_url},
    }
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    postgres_server.stop()
    try:
        for command in (["run", str(config)], ["ledger", "show", str(config)]):
            assert main(command) == ExitCode.CONFIG_ERROR
            out, err = capsys.readouterr()
            assert out == ""
            [line] = err.strip().splitlines()
            assert f"ledger.url: cannot connect to the ledger server {postgres_url}" in line
            assert "nothing was charged" in line and "[exit 2:" in line
        assert not (tmp_path / "out").exists()
    finally:
        postgres_server.start()
    assert PostgresLedger(postgres_url).entries() == []


def test_ledger_show_export_and_registry_read_the_server_ledger(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI's ledger commands work on `ledger.url` as on a file, naming the server
    without secrets; set-lifetime is recorded there."""
    raw = {
        "release": {"name": "weekly", "output_root": str(tmp_path / "out"), "data_period": "W1"},
        "input": {"path": str(tmp_path / "missing.parquet")},
        "privacy_unit": {"column": "user_id"},
        "partition_columns": ["key"],
        "contribution_bounds": {"max_partitions_per_unit": 1, "max_rows_per_unit_per_partition": 1},
        "metrics": [{"metric": "count"}],
        "budget": {"epsilon": 1.0, "delta": 1e-6},
        "ledger": {"dataset": "ratings", "lifetime_budget": {"epsilon": 1.0}, "url": postgres_url},
    }
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    ledger = PostgresLedger(postgres_url)
    charged = reservation(0.25)
    ledger.reserve(charged, 1.0, 0.0)

    assert main(["ledger", "show", str(config)]) == ExitCode.OK
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"ledger {postgres_url}, dataset 'ratings'")
    assert charged.run_id in out
    assert main(["ledger", "export", str(config), "--format", "csv"]) == ExitCode.OK
    assert charged.run_id in capsys.readouterr().out
    assert main(["registry", "--config", str(config), "--format", "jsonl"]) == ExitCode.OK
    assert '"spent_epsilon": 0.25' in capsys.readouterr().out
    assert main(["registry", "--ledger", postgres_url]) == ExitCode.OK
    assert "ratings" in capsys.readouterr().out
    args = ["ledger", "set-lifetime", str(config), "--epsilon", "2", "--delta", "0"]
    assert main([*args, "--reason", "board"]) == ExitCode.OK
    assert ledger.pinned_lifetime("ratings", "user_id") == (2.0, 0.0)
    assert [c.reason for c in ledger.lifetime_changes()] == ["board"]
