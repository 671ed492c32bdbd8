"""The default ledger store: ``SqliteLedger``, one SQLite file on a local file system.

The default store is one SQLite file in WAL mode on a local file system (WAL does
not work over network file systems): reservations use ``BEGIN IMMEDIATE`` so
concurrent processes on one machine serialize, and a busy timeout makes waiters wait
rather than fail. Every check and charge is ``SqlLedger``'s, shared with the server
ledger (``pipelines.ledger.postgres``).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipelines.ledger.schema import _prepare_schema
from pipelines.ledger.sql_store import SqlLedger, Transaction


class SqliteLedger(SqlLedger):
    """The default ``LedgerStore``: one SQLite file, safe for concurrent jobs on one machine.

    Each call opens its own connection (so a ledger object can be shared by threads
    and passed to child processes) and runs in one transaction. Amounts are REAL
    columns holding the exact doubles; sums are exact (see ``pipelines.ledger.accounting``).

    Invariant: after ``__init__`` every call works on the file of the identity seen
    at open; a file that was deleted or replaced since is an OSError, never a fresh
    ledger that forgot the charges (docs/privacy.md, lifetime budgets).
    """

    def __init__(self, path: str | Path, *, busy_timeout_seconds: float = 60.0) -> None:
        """Open the ledger at ``path``, creating the file, its directory and the schema,
        or migrating a version 1 file to version 2 (one transaction)."""
        if not (math.isfinite(busy_timeout_seconds) and busy_timeout_seconds > 0):
            raise ValueError(f"busy_timeout_seconds must be > 0, got {busy_timeout_seconds!r}")
        self.path = Path(path).expanduser().resolve()
        self._timeout = busy_timeout_seconds
        self._identity: str | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + busy_timeout_seconds
        while True:
            try:
                self._identity = self._open_schema()
                return
            except sqlite3.OperationalError as error:
                # Switching a new file to WAL while other processes create it can report
                # "locked" without waiting on the busy handler: wait here instead.
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _open_schema(self) -> str:
        """Set WAL, then create or migrate the schema in one transaction; the identity."""
        with self._connection(create=True) as connection:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OSError(f"cannot use the WAL journal for the ledger {self.path} (got {mode})")
            with self._begin(connection, write=True):
                identity, self._created_at = _prepare_schema(connection, self.path)
        return identity

    def __repr__(self) -> str:
        return f"SqliteLedger({str(self.path)!r})"

    @contextmanager
    def _connection(self, *, create: bool = False) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: no implicit transactions; each method opens its own.
        # timeout sets SQLite's busy handler: a locked database is waited for.
        # Only __init__ may create the file: later, a missing file is an error.
        uri = f"{self.path.as_uri()}?mode={'rwc' if create else 'rw'}"
        try:
            connection = sqlite3.connect(uri, uri=True, timeout=self._timeout, isolation_level=None)
        except sqlite3.OperationalError as error:
            raise OSError(
                f"cannot open the ledger {self.path} ({error}); if it was deleted, restore "
                "it from backup: a new ledger would not know the charges"
            ) from None
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            # A lost charge is a privacy failure: fsync every commit, also in WAL mode.
            connection.execute("PRAGMA synchronous = FULL")
            if self._identity is not None:
                self._check_identity(connection)
            yield connection
        finally:
            connection.close()

    def _check_identity(self, connection: sqlite3.Connection) -> None:
        try:
            row = connection.execute("SELECT identity FROM ledger_meta").fetchone()
        except sqlite3.DatabaseError:
            row = None
        if row is None or row[0] != self._identity:
            raise OSError(
                f"the ledger {self.path} is no longer the ledger {self._identity} opened "
                f"(found {row[0] if row else 'none'}): it was deleted or replaced; "
                "restore it from backup"
            )

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[Transaction]:
        # IMMEDIATE takes the write lock up front, so read-check-write cannot interleave
        # (it serializes every write, so ``lock_dataset`` has nothing left to do); a
        # read-only transaction (DEFERRED) still reads one consistent snapshot.
        with self._connection() as connection, self._begin(connection, write=write):
            yield _SqliteTransaction(connection)

    @staticmethod
    @contextmanager
    def _begin(connection: sqlite3.Connection, *, write: bool) -> Iterator[None]:
        connection.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
        try:
            yield
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    @property
    def location(self) -> str:
        """Where the ledger lives, for messages: the file's path."""
        return str(self.path)


class _SqliteTransaction:
    """A ``Transaction`` on an open SQLite connection (``?`` is SQLite's placeholder)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def rows(self, sql: str, parameters: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._connection.execute(sql, tuple(parameters))]

    def run(self, sql: str, parameters: Sequence[object] = ()) -> None:
        self._connection.execute(sql, tuple(parameters))

    def lock_dataset(self, dataset: str) -> None:
        """Nothing to do: BEGIN IMMEDIATE already holds the database's write lock."""
