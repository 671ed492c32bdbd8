"""The default ledger store: ``SqliteLedger``, one SQLite file on a local file system.

The default store is one SQLite file in WAL mode on a local file system (WAL does
not work over network file systems): reservations use ``BEGIN IMMEDIATE`` so
concurrent processes on one machine serialize, and a busy timeout makes waiters wait
rather than fail. A server database can implement ``LedgerStore`` later.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pipelines.ledger.accounting import _admits, _budget_state, _lifetime, _Spent, _spent
from pipelines.ledger.model import (
    _CHANGE_COLUMNS,
    _COLUMNS,
    _FINAL_STATUSES,
    BudgetRefused,
    BudgetState,
    FinalStatus,
    LedgerEntry,
    Lifetime,
    LifetimeChange,
    LifetimeMismatch,
    _check_publication,
    _check_sha256,
    _check_text,
    _utc_now,
    dataset_name,
)
from pipelines.ledger.schema import _prepare_schema


class SqliteLedger:
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
            with self._transaction(connection):
                identity, self._created_at = _prepare_schema(connection, self.path)
        return identity

    def __repr__(self) -> str:
        return f"SqliteLedger({str(self.path)!r})"

    @property
    def identity(self) -> str:
        """The ledger's random identity (``uuid4().hex``), created once with the file."""
        assert self._identity is not None  # set by __init__
        return self._identity

    @property
    def created_at(self) -> str:
        """When the identity was created (ISO 8601, UTC): the file's creation, or its
        migration to schema version 2."""
        return self._created_at

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
    def _transaction(self, connection: sqlite3.Connection, *, write: bool = True) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so read-check-write cannot interleave;
        # a read-only transaction (DEFERRED) still reads one consistent snapshot.
        connection.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
        try:
            yield
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    @staticmethod
    def _charges(connection: sqlite3.Connection, dataset: str, privacy_unit: str) -> _Spent:
        # Every status is charged: reserved, published and failed.
        rows = connection.execute(
            "SELECT epsilon, delta FROM ledger_entries WHERE dataset = ? AND privacy_unit = ?",
            (dataset, privacy_unit),
        ).fetchall()
        return _spent((float(row[0]), float(row[1])) for row in rows)

    @staticmethod
    def _pinned(connection: sqlite3.Connection, dataset: str, privacy_unit: str) -> Lifetime | None:
        row = connection.execute(
            "SELECT epsilon, delta FROM lifetimes WHERE dataset = ? AND privacy_unit = ?",
            (dataset, privacy_unit),
        ).fetchone()
        return None if row is None else (float(row[0]), float(row[1]))

    @classmethod
    def _pin(
        cls, connection: sqlite3.Connection, dataset: str, privacy_unit: str, configured: Lifetime
    ) -> Lifetime:
        """The lifetime to check against: the pinned one, pinning ``configured`` if none is.

        Raises LifetimeMismatch if the pin differs from ``configured``. Runs inside the
        caller's write transaction, so a rolled-back reservation pins nothing.
        """
        pinned = cls._pinned(connection, dataset, privacy_unit)
        if pinned is None:
            connection.execute(
                "INSERT INTO lifetimes (dataset, privacy_unit, epsilon, delta, pinned_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (dataset, privacy_unit, *configured, _utc_now()),
            )
            return configured
        if pinned != configured:
            raise LifetimeMismatch(dataset, privacy_unit, configured, pinned)
        return pinned

    @staticmethod
    def _entry(row: Sequence[object]) -> LedgerEntry:
        values = dict(zip(_COLUMNS, row, strict=True))
        return LedgerEntry(**values)  # type: ignore[arg-type]

    def _select(self, where: str, parameters: tuple[str, ...]) -> list[LedgerEntry]:
        query = f"SELECT {', '.join(_COLUMNS)} FROM ledger_entries {where} ORDER BY rowid"
        with self._connection() as connection:
            rows = connection.execute(query, parameters).fetchall()
        return [self._entry(row) for row in rows]

    def reserve(
        self, entry: LedgerEntry, lifetime_epsilon: float, lifetime_delta: float
    ) -> BudgetState:
        """Atomically check the lifetime budget and charge ``entry``; the state after it.

        In one ``BEGIN IMMEDIATE`` transaction: the first reservation of (dataset,
        privacy unit) pins the lifetime given; if a pin exists and differs, raises
        LifetimeMismatch. Raises BudgetRefused if the spend plus the entry would pass
        ``pinned lifetime · (1 + BUDGET_TOLERANCE)`` in ε or δ. Either error inserts
        nothing and pins nothing. A run id is one attempt: reserving an identical
        reserved entry again (a retried call whose first commit went through) returns
        the state without charging again; any other reuse of a run id is a ValueError.
        """
        configured = _lifetime(lifetime_epsilon, lifetime_delta)
        if entry.status != "reserved":
            raise ValueError(f"a reservation must have status 'reserved', got {entry.status!r}")
        dataset, unit = entry.dataset, entry.privacy_unit
        with self._connection() as connection, self._transaction(connection):
            lifetime = self._pin(connection, dataset, unit, configured)
            row = connection.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM ledger_entries WHERE run_id = ?",
                (entry.run_id,),
            ).fetchone()
            spent = self._charges(connection, dataset, unit)
            if row is not None:
                if self._entry(row) != entry:
                    raise ValueError(
                        f"run id {entry.run_id!r} is already in the ledger with other values "
                        "or a final status; every run attempt needs a fresh run id"
                    )
                return _budget_state(dataset, unit, lifetime, spent)
            if not (
                _admits(spent.epsilon, entry.epsilon, lifetime[0])
                and _admits(spent.delta, entry.delta, lifetime[1])
            ):
                state = _budget_state(dataset, unit, lifetime, spent)
                raise BudgetRefused(state, entry.epsilon, entry.delta)
            connection.execute(
                f"INSERT INTO ledger_entries ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
                tuple(getattr(entry, name) for name in _COLUMNS),
            )
            return _budget_state(dataset, unit, lifetime, spent.plus(entry.epsilon, entry.delta))

    def mark(
        self,
        run_id: str,
        status: FinalStatus,
        version: str | None = None,
        *,
        manifest_sha256: str | None = None,
        readme_sha256: str | None = None,
    ) -> None:
        """Move a reserved run to ``published`` or ``failed``.

        ``published`` requires the version and the SHA-256 (64 lowercase hex digits) of
        its ``manifest.json`` and ``README.md`` as published; ``failed`` takes none of
        them. The charge stays either way. Repeating the same mark is a no-op; any other
        change of a final status is a ValueError, an unknown run id a KeyError.
        """
        if status not in _FINAL_STATUSES:
            raise ValueError(f"status must be one of {sorted(_FINAL_STATUSES)}, got {status!r}")
        if status == "published":
            _check_text("version of a published run", version)
            _check_sha256("manifest_sha256 of a published run", manifest_sha256)
            _check_sha256("readme_sha256 of a published run", readme_sha256)
        _check_publication(status, version, manifest_sha256, readme_sha256)
        wanted = (status, version, manifest_sha256, readme_sha256)
        with self._connection() as connection, self._transaction(connection):
            row = connection.execute(
                "SELECT status, version, manifest_sha256, readme_sha256 "
                "FROM ledger_entries WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                raise KeyError(f"run id {run_id!r} is not in the ledger")
            if tuple(row) == wanted:
                return
            current, current_version = row[0], row[1]
            if current != "reserved":
                raise ValueError(
                    f"run {run_id!r} is already {current}"
                    + (f" as {current_version}" if current_version else "")
                    + f"; cannot mark it {status}"
                    + (f" as {version}" if version else "")
                )
            connection.execute(
                "UPDATE ledger_entries SET status = ?, version = ?, manifest_sha256 = ?, "
                "readme_sha256 = ? WHERE run_id = ?",
                (*wanted, run_id),
            )

    def entries(self, dataset: str | None = None) -> list[LedgerEntry]:
        """All entries in reservation (commit) order, optionally of one dataset (any
        spelling ``dataset_name`` maps to it)."""
        if dataset is None:
            return self._select("", ())
        return self._select("WHERE dataset = ?", (dataset_name(dataset),))

    def published_versions_of(self, release: str) -> dict[str, LedgerEntry]:
        """Version name -> the published entry of that version of ``release``.

        The release's visible versions can be checked against it: a version the ledger
        does not know, or whose manifest or README digest differs from the recorded one,
        was not published through this ledger as it is now. Should two published entries
        name one version (not possible through ``mark`` of one release directory), the
        later one is returned.
        """
        _check_text("release", release)
        published = self._select("WHERE release = ? AND status = 'published'", (release,))
        return {entry.version: entry for entry in published if entry.version is not None}

    def state(
        self, dataset: str, privacy_unit: str, lifetime_epsilon: float, lifetime_delta: float
    ) -> BudgetState:
        """The budget of (dataset, privacy_unit) under its pinned lifetime.

        Raises LifetimeMismatch if a pinned lifetime differs from the one given. A
        budget with no pin (never charged, or charged before schema version 2) is shown
        under the given lifetime, and nothing is pinned: ``state`` never writes.
        """
        dataset = dataset_name(dataset)
        configured = _lifetime(lifetime_epsilon, lifetime_delta)
        with self._connection() as connection, self._transaction(connection, write=False):
            pinned = self._pinned(connection, dataset, privacy_unit)
            spent = self._charges(connection, dataset, privacy_unit)
        if pinned is not None and pinned != configured:
            raise LifetimeMismatch(dataset, privacy_unit, configured, pinned)
        return _budget_state(dataset, privacy_unit, configured, spent)

    def pinned_lifetime(self, dataset: str, privacy_unit: str) -> Lifetime | None:
        """The pinned (ε, δ) lifetime of (dataset, privacy_unit), None if none is pinned."""
        dataset = dataset_name(dataset)
        with self._connection() as connection:
            return self._pinned(connection, dataset, privacy_unit)

    def set_lifetime(
        self,
        dataset: str,
        privacy_unit: str,
        epsilon: float,
        delta: float,
        reason: str,
        actor: str,
    ) -> None:
        """Pin (dataset, privacy_unit) to the lifetime (ε, δ) and record the change.

        The only way to change a pinned lifetime, or to pin one before the first
        reservation. In one transaction it sets the pin and appends a row (old values or
        None, new values, reason, actor, UTC time) to ``lifetime_changes``. ``reason``
        and ``actor`` must be non-blank. Setting the pinned value again changes and
        records nothing. A lifetime below the spend is allowed: the budget then has 0
        remaining and refuses every run (docs/privacy.md, lifetime budgets).
        """
        dataset = dataset_name(dataset)
        _check_text("privacy_unit", privacy_unit)
        new = _lifetime(epsilon, delta)
        _check_text("reason", reason)
        _check_text("actor", actor)
        with self._connection() as connection, self._transaction(connection):
            old = self._pinned(connection, dataset, privacy_unit)
            if old == new:
                return
            now = _utc_now()
            connection.execute(
                "INSERT INTO lifetimes (dataset, privacy_unit, epsilon, delta, pinned_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (dataset, privacy_unit) DO UPDATE SET "
                "epsilon = excluded.epsilon, delta = excluded.delta, "
                "pinned_at = excluded.pinned_at",
                (dataset, privacy_unit, *new, now),
            )
            change = LifetimeChange(
                dataset=dataset,
                privacy_unit=privacy_unit,
                old_epsilon=None if old is None else old[0],
                old_delta=None if old is None else old[1],
                new_epsilon=new[0],
                new_delta=new[1],
                reason=reason.strip(),
                actor=actor.strip(),
                changed_at=now,
            )
            connection.execute(
                f"INSERT INTO lifetime_changes ({', '.join(_CHANGE_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _CHANGE_COLUMNS)})",
                tuple(getattr(change, name) for name in _CHANGE_COLUMNS),
            )

    def lifetime_changes(self, dataset: str | None = None) -> list[LifetimeChange]:
        """Every recorded lifetime change in order, optionally of one dataset."""
        query = f"SELECT {', '.join(_CHANGE_COLUMNS)} FROM lifetime_changes"
        parameters: tuple[str, ...] = ()
        if dataset is not None:
            query += " WHERE dataset = ?"
            parameters = (dataset_name(dataset),)
        with self._connection() as connection:
            rows = connection.execute(query + " ORDER BY rowid", parameters).fetchall()
        return [LifetimeChange(*row) for row in rows]
