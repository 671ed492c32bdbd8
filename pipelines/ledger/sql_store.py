"""The ledger's semantics, written once in SQL for every backend: ``SqlLedger``.

``SqliteLedger`` and ``PostgresLedger`` differ only in how they connect, open a
transaction and create their schema; every check, pin, charge and record is made here,
in the same statements (``?`` placeholders; a backend translates them), so both
backends keep exactly one set of invariants (docs/privacy.md §10, §12):

- a reservation checks the pinned lifetime, the dataset's policy tier and the exact
  spend, and inserts its entry (and registration), in one write transaction that
  serializes with every other write to the same dataset;
- charges never go away, pins change only through ``set_lifetime`` (recorded);
- every read of a list is in reservation order (the ``rowid`` of each table).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

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
from pipelines.ledger.registration import _REGISTRATION_COLUMNS, Registration, TierMismatch

_ENTRY_LIST = ", ".join(_COLUMNS)


def _placeholders(count: int) -> str:
    return ", ".join("?" for _ in range(count))


class Transaction(Protocol):
    """One open transaction of a backend: statements with ``?`` placeholders."""

    def rows(self, sql: str, parameters: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run a query; all its rows."""
        ...

    def run(self, sql: str, parameters: Sequence[object] = ()) -> None:
        """Run a statement that returns no rows."""
        ...

    def lock_dataset(self, dataset: str) -> None:
        """Serialize with every other write transaction of ``dataset`` until commit."""
        ...


def _entry(row: Sequence[object]) -> LedgerEntry:
    values = dict(zip(_COLUMNS, row, strict=True))
    for name in ("epsilon", "delta"):
        values[name] = float(values[name])  # type: ignore[arg-type]
    return LedgerEntry(**values)  # type: ignore[arg-type]


def _charges(tx: Transaction, dataset: str, privacy_unit: str) -> _Spent:
    # Every status is charged: reserved, published and failed.
    rows = tx.rows(
        "SELECT epsilon, delta FROM ledger_entries WHERE dataset = ? AND privacy_unit = ?",
        (dataset, privacy_unit),
    )
    return _spent((float(row[0]), float(row[1])) for row in rows)


def _pinned(tx: Transaction, dataset: str, privacy_unit: str) -> Lifetime | None:
    rows = tx.rows(
        "SELECT epsilon, delta FROM lifetimes WHERE dataset = ? AND privacy_unit = ?",
        (dataset, privacy_unit),
    )
    return None if not rows else (float(rows[0][0]), float(rows[0][1]))


def _pin(tx: Transaction, dataset: str, privacy_unit: str, configured: Lifetime) -> Lifetime:
    """The lifetime to check against: the pinned one, pinning ``configured`` if none is.

    Raises LifetimeMismatch if the pin differs from ``configured``. Runs inside the
    caller's write transaction, so a rolled-back reservation pins nothing.
    """
    pinned = _pinned(tx, dataset, privacy_unit)
    if pinned is None:
        tx.run(
            "INSERT INTO lifetimes (dataset, privacy_unit, epsilon, delta, pinned_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (dataset, privacy_unit, *configured, _utc_now()),
        )
        return configured
    if pinned != configured:
        raise LifetimeMismatch(dataset, privacy_unit, configured, pinned)
    return pinned


def _bound_tier(tx: Transaction, dataset: str) -> str | None:
    """The tier the dataset's latest tiered charge recorded, None if it has none."""
    rows = tx.rows(
        "SELECT r.tier FROM registrations r JOIN ledger_entries e ON e.run_id = r.run_id "
        "WHERE e.dataset = ? AND r.tier IS NOT NULL ORDER BY e.rowid DESC LIMIT 1",
        (dataset,),
    )
    return None if not rows else str(rows[0][0])


def _registration_of(tx: Transaction, run_id: str) -> Registration | None:
    rows = tx.rows(
        f"SELECT {', '.join(_REGISTRATION_COLUMNS)} FROM registrations WHERE run_id = ?",
        (run_id,),
    )
    return None if not rows else Registration(*rows[0])


def _already_reserved(tx: Transaction, entry: LedgerEntry, registration: Registration) -> bool:
    """True if this very reservation is in the ledger (a retried call whose commit went
    through); a ValueError if its run id is taken by anything else."""
    rows = tx.rows(f"SELECT {_ENTRY_LIST} FROM ledger_entries WHERE run_id = ?", (entry.run_id,))
    if not rows:
        return False
    if _entry(rows[0]) != entry or _registration_of(tx, entry.run_id) not in (registration, None):
        raise ValueError(
            f"run id {entry.run_id!r} is already in the ledger with other values "
            "or a final status; every run attempt needs a fresh run id"
        )
    return True


class SqlLedger:
    """The ``LedgerStore`` semantics over an abstract SQL transaction.

    Subclasses provide ``_transaction`` (a write transaction serializes with other
    writes; a read-only one reads one consistent snapshot) and set ``_identity`` and
    ``_created_at`` when they open their schema (SQLite: the file's creation, or its
    migration to schema version 2; PostgreSQL: the schema's creation).
    """

    _identity: str | None
    _created_at: str

    @property
    def identity(self) -> str:
        """The ledger's random identity (``uuid4().hex``), created once with its schema."""
        assert self._identity is not None  # set by the backend's __init__
        return self._identity

    @property
    def created_at(self) -> str:
        """When the identity was created (ISO 8601, UTC)."""
        return self._created_at

    def _transaction(self, *, write: bool = True) -> AbstractContextManager[Transaction]:
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[Transaction]:
        return self._transaction(write=False)

    def reserve(
        self,
        entry: LedgerEntry,
        lifetime_epsilon: float,
        lifetime_delta: float,
        registration: Registration | None = None,
    ) -> BudgetState:
        """Check the lifetime, the tier and the spend, and charge ``entry``, in one transaction."""
        configured = _lifetime(lifetime_epsilon, lifetime_delta)
        if entry.status != "reserved":
            raise ValueError(f"a reservation must have status 'reserved', got {entry.status!r}")
        registration = registration or Registration()
        dataset, unit = entry.dataset, entry.privacy_unit
        with self._transaction() as tx:
            tx.lock_dataset(dataset)
            if _already_reserved(tx, entry, registration):
                lifetime = _pin(tx, dataset, unit, configured)
                return _budget_state(dataset, unit, lifetime, _charges(tx, dataset, unit))
            bound = _bound_tier(tx, dataset)
            if bound is not None and bound != registration.tier:
                raise TierMismatch(dataset, bound, registration.tier)
            lifetime = _pin(tx, dataset, unit, configured)
            spent = _charges(tx, dataset, unit)
            if not (
                _admits(spent.epsilon, entry.epsilon, lifetime[0])
                and _admits(spent.delta, entry.delta, lifetime[1])
            ):
                raise BudgetRefused(
                    _budget_state(dataset, unit, lifetime, spent), entry.epsilon, entry.delta
                )
            tx.run(
                f"INSERT INTO ledger_entries ({_ENTRY_LIST}) "
                f"VALUES ({_placeholders(len(_COLUMNS))})",
                tuple(getattr(entry, name) for name in _COLUMNS),
            )
            tx.run(
                f"INSERT INTO registrations (run_id, {', '.join(_REGISTRATION_COLUMNS)}) "
                f"VALUES (?, {_placeholders(len(_REGISTRATION_COLUMNS))})",
                (entry.run_id, *(getattr(registration, n) for n in _REGISTRATION_COLUMNS)),
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
        """Move a reserved run to ``published`` or ``failed`` (``LedgerStore.mark``)."""
        if status not in _FINAL_STATUSES:
            raise ValueError(f"status must be one of {sorted(_FINAL_STATUSES)}, got {status!r}")
        if status == "published":
            _check_text("version of a published run", version)
            _check_sha256("manifest_sha256 of a published run", manifest_sha256)
            _check_sha256("readme_sha256 of a published run", readme_sha256)
        _check_publication(status, version, manifest_sha256, readme_sha256)
        wanted = (status, version, manifest_sha256, readme_sha256)
        with self._transaction() as tx:
            rows = tx.rows(
                "SELECT status, version, manifest_sha256, readme_sha256 "
                "FROM ledger_entries WHERE run_id = ?",
                (run_id,),
            )
            if not rows:
                raise KeyError(f"run id {run_id!r} is not in the ledger")
            if tuple(rows[0]) == wanted:
                return
            current, current_version = rows[0][0], rows[0][1]
            if current != "reserved":
                raise ValueError(
                    f"run {run_id!r} is already {current}"
                    + (f" as {current_version}" if current_version else "")
                    + f"; cannot mark it {status}"
                    + (f" as {version}" if version else "")
                )
            tx.run(
                "UPDATE ledger_entries SET status = ?, version = ?, manifest_sha256 = ?, "
                "readme_sha256 = ? WHERE run_id = ?",
                (*wanted, run_id),
            )

    def _select(self, where: str, parameters: tuple[str, ...]) -> list[LedgerEntry]:
        query = f"SELECT {_ENTRY_LIST} FROM ledger_entries {where} ORDER BY rowid"
        with self._read() as tx:
            rows = tx.rows(query, parameters)
        return [_entry(row) for row in rows]

    def entries(self, dataset: str | None = None) -> list[LedgerEntry]:
        """All entries in reservation order, optionally of one dataset."""
        if dataset is None:
            return self._select("", ())
        return self._select("WHERE dataset = ?", (dataset_name(dataset),))

    def registrations(self) -> dict[str, Registration]:
        """Run id -> the registration recorded with its charge."""
        with self._read() as tx:
            rows = tx.rows(f"SELECT run_id, {', '.join(_REGISTRATION_COLUMNS)} FROM registrations")
        return {str(row[0]): Registration(*row[1:]) for row in rows}

    def bound_tier(self, dataset: str) -> str | None:
        """The policy tier the dataset is bound to (its latest tiered charge), or None."""
        with self._read() as tx:
            return _bound_tier(tx, dataset_name(dataset))

    def published_versions_of(self, release: str) -> dict[str, LedgerEntry]:
        """Version name -> the published entry of that version of ``release``."""
        _check_text("release", release)
        published = self._select("WHERE release = ? AND status = 'published'", (release,))
        return {entry.version: entry for entry in published if entry.version is not None}

    def state(
        self, dataset: str, privacy_unit: str, lifetime_epsilon: float, lifetime_delta: float
    ) -> BudgetState:
        """The budget of (dataset, privacy_unit) under its pinned lifetime; never writes."""
        dataset = dataset_name(dataset)
        configured = _lifetime(lifetime_epsilon, lifetime_delta)
        with self._read() as tx:
            pinned = _pinned(tx, dataset, privacy_unit)
            spent = _charges(tx, dataset, privacy_unit)
        if pinned is not None and pinned != configured:
            raise LifetimeMismatch(dataset, privacy_unit, configured, pinned)
        return _budget_state(dataset, privacy_unit, configured, spent)

    def pinned_lifetime(self, dataset: str, privacy_unit: str) -> Lifetime | None:
        """The pinned (ε, δ) lifetime of (dataset, privacy_unit), None if none is pinned."""
        with self._read() as tx:
            return _pinned(tx, dataset_name(dataset), privacy_unit)

    def set_lifetime(
        self,
        dataset: str,
        privacy_unit: str,
        epsilon: float,
        delta: float,
        reason: str,
        actor: str,
    ) -> None:
        """Pin (dataset, privacy_unit) to (ε, δ) and record the change, in one transaction."""
        dataset = dataset_name(dataset)
        _check_text("privacy_unit", privacy_unit)
        new = _lifetime(epsilon, delta)
        _check_text("reason", reason)
        _check_text("actor", actor)
        with self._transaction() as tx:
            tx.lock_dataset(dataset)
            old = _pinned(tx, dataset, privacy_unit)
            if old == new:
                return
            now = _utc_now()
            tx.run(
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
            tx.run(
                f"INSERT INTO lifetime_changes ({', '.join(_CHANGE_COLUMNS)}) "
                f"VALUES ({_placeholders(len(_CHANGE_COLUMNS))})",
                tuple(getattr(change, name) for name in _CHANGE_COLUMNS),
            )

    def lifetime_changes(self, dataset: str | None = None) -> list[LifetimeChange]:
        """Every recorded lifetime change in order, optionally of one dataset."""
        query = f"SELECT {', '.join(_CHANGE_COLUMNS)} FROM lifetime_changes"
        parameters: tuple[str, ...] = ()
        if dataset is not None:
            query += " WHERE dataset = ?"
            parameters = (dataset_name(dataset),)
        with self._read() as tx:
            rows = tx.rows(query + " ORDER BY rowid", parameters)
        return [LifetimeChange(*_floats(row, (2, 3, 4, 5))) for row in rows]


def _floats(row: Sequence[Any], positions: tuple[int, ...]) -> list[Any]:
    """The row with the values at ``positions`` as floats (None stays None)."""
    return [
        float(value) if index in positions and value is not None else value
        for index, value in enumerate(row)
    ]
