"""The two ledger backends the contract suite runs against, and raw access to their storage.

``open_backend`` opens a fresh, empty ledger of either backend; ``execute_raw`` runs one
SQL statement on a ledger's storage behind its back (as a careless operator could), so
the tests can check that the storage itself refuses to lose a charge.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

from pipelines.ledger import LedgerStore, SqliteLedger
from pipelines.ledger.postgres import PostgresLedger

BACKENDS = ("sqlite", "postgres")


def open_backend(backend: str, tmp_path: Path, postgres_url: str | None) -> LedgerStore:
    """A fresh, empty ledger: a SQLite file under ``tmp_path``, or a new database."""
    if backend == "sqlite":
        return SqliteLedger(tmp_path / "ledger.sqlite")
    assert postgres_url is not None
    return PostgresLedger(postgres_url)


def execute_raw(ledger: LedgerStore, statement: str) -> None:
    """Run ``statement`` on the ledger's storage in its own transaction; the backend's
    error propagates (sqlite3.DatabaseError or psycopg.Error)."""
    if isinstance(ledger, SqliteLedger):
        connection = sqlite3.connect(ledger.path)
        try:
            with connection:
                connection.execute(statement)
        finally:
            connection.close()
        return
    assert isinstance(ledger, PostgresLedger)
    with psycopg.connect(ledger.url) as server:
        server.execute(statement)
