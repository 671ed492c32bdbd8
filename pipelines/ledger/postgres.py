"""The server ledger: ``PostgresLedger``, the ledger in a PostgreSQL database (psycopg 3).

For drivers that may run on any node (cluster deploy mode) and for many teams: the same
``LedgerStore`` semantics as ``SqliteLedger``, from the same statements (``SqlLedger``).

How the invariants hold on a server (docs/privacy.md §10):

- Atomic reservation: each write runs in one transaction that first takes a
  transaction-scoped advisory lock on its dataset (``pg_advisory_xact_lock``), then,
  at READ COMMITTED, reads the pin, the tier and the spend and inserts the charge. Two
  reservations of one dataset therefore run one after the other, and the second sees the
  first's commit: no budget is overspent under any concurrency.
- A connection lost mid-transaction (a killed backend, a restarted server, a network
  cut) rolls back on the server: the ledger then holds either no charge or the whole
  one (entry, pin and registration commit together). The advisory lock dies with the
  session, so nobody waits for a dead run.
- Every call opens its own connection, so a ledger object can be shared by threads
  and passed to child processes, and a server restarted between two calls is simply
  reconnected to (a run charged before a restart is marked, or reconciled, after it).
- Identity: the random identity in ``ledger_meta`` is checked at every call; a
  database that was dropped and re-created under the ledger is an OSError.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import conninfo

from pipelines.ledger.postgres_schema import prepare_schema
from pipelines.ledger.sql_store import SqlLedger, Transaction

_SCHEMES = ("postgresql://", "postgres://")
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10


def redacted_url(url: str) -> str:
    """``url`` without its password or options: ``postgresql://user@host:port/dbname``.

    Invariant: messages, logs and `ledger show` name the server with this, never the
    URL as configured (which could hold a secret).
    """
    try:
        parts = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = str(parts.get("host") or "localhost")
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"


def _first_line(error: BaseException) -> str:
    """The first line of a driver error (libpq's messages name the server, never data)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _lock_key(dataset: str) -> int:
    """A stable signed 64-bit advisory-lock key per dataset (a collision only serializes
    two datasets' writes more than needed)."""
    digest = hashlib.sha256(b"dprelease-ledger:" + dataset.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresLedger(SqlLedger):
    """A ``LedgerStore`` in a PostgreSQL database, safe for concurrent jobs on many hosts.

    ``url`` is a libpq connection URI (``postgresql://user@host:5432/dbname``); the
    ledger's tables live in the connection's current schema (set ``options=-csearch_path=
    NAME`` in the URL for several ledgers in one database). Passwords belong in
    ``PGPASSWORD`` or ``~/.pgpass``, which libpq reads, not in the URL.
    """

    def __init__(
        self, url: str, *, connect_timeout_seconds: int = DEFAULT_CONNECT_TIMEOUT_SECONDS
    ) -> None:
        """Connect, and create the schema in an empty database schema (one transaction).

        Raises OSError naming the server (never its password) if it cannot be reached or
        holds something that is not a dprelease ledger of this schema version.
        """
        if not url.startswith(_SCHEMES):
            raise ValueError(f"a PostgreSQL ledger URL starts with {' or '.join(_SCHEMES)}")
        self.url = url
        self._timeout = connect_timeout_seconds
        self._identity: str | None = None
        with self._connection() as connection:
            try:
                with connection.transaction():
                    cursor = connection.cursor()
                    self._identity, self._created_at = prepare_schema(cursor, self.location)
            except psycopg.Error as error:
                raise OSError(
                    f"cannot open the ledger in {self.location} ({type(error).__name__}: "
                    f"{_first_line(error)}); nothing was charged"
                ) from None

    def __repr__(self) -> str:
        return f"PostgresLedger({self.location!r})"

    @property
    def location(self) -> str:
        """Where the ledger lives, for messages: the server and database, no password."""
        return redacted_url(self.url)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        defaults: dict[str, Any] = {"application_name": "dprelease"}
        try:
            if "connect_timeout" not in conninfo.conninfo_to_dict(self.url):
                defaults["connect_timeout"] = self._timeout
            connection = psycopg.connect(self.url, **defaults)
        except (psycopg.OperationalError, psycopg.ProgrammingError) as error:
            raise OSError(
                f"cannot connect to the ledger server {self.location} ({_first_line(error)}); "
                "nothing was charged"
            ) from None
        try:
            yield connection
        finally:
            connection.close()

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[Transaction]:
        # Writes: READ COMMITTED, serialized per dataset by ``lock_dataset``; every
        # statement after the lock sees what the previous holder committed. Reads: one
        # REPEATABLE READ snapshot, so a listing and its sums agree.
        with self._connection() as connection, connection.transaction():
            if not write:
                connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            transaction = _PostgresTransaction(connection)
            self._check_identity(transaction)
            yield transaction

    def _check_identity(self, transaction: _PostgresTransaction) -> None:
        try:
            rows = transaction.rows("SELECT identity FROM ledger_meta")
        except psycopg.errors.UndefinedTable:
            rows = []
        if not rows or rows[0][0] != self._identity:
            raise OSError(
                f"the ledger {self.location} is no longer the ledger {self._identity} opened "
                f"(found {rows[0][0] if rows else 'none'}): it was dropped or replaced; "
                "restore it from backup"
            )


class _PostgresTransaction:
    """A ``Transaction`` on an open psycopg connection (``?`` becomes ``%s``)."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection

    def rows(self, sql: str, parameters: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        cursor = self._connection.execute(sql.replace("?", "%s"), tuple(parameters))
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    def run(self, sql: str, parameters: Sequence[object] = ()) -> None:
        self._connection.execute(sql.replace("?", "%s"), tuple(parameters))

    def lock_dataset(self, dataset: str) -> None:
        """Wait for, then hold until commit or rollback, the dataset's advisory lock."""
        self._connection.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(dataset),))
