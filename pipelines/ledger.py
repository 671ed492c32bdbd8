"""The persistent privacy budget ledger: every spend per (dataset, privacy unit).

Across releases of the same dataset and privacy unit composition is sequential and
basic (DP_REFERENCE §5): ε adds and δ adds. Every run that could have published noise
is charged, including retries, failed runs and superseded versions.

Invariants:

- A run reserves its full (ε, δ) before any data is read or noise drawn; the check
  and the insert are one transaction, so concurrent jobs cannot both take the last
  piece of a budget. A refused run leaves no row and reads no data.
- A charge never goes away: ``mark`` only moves ``reserved`` to ``published`` or
  ``failed``, and all three statuses count as spent.
- After any admitted reservation, the spend of a (dataset, privacy unit) is at most
  ``lifetime · (1 + 1e-12)`` (exact arithmetic; see below).

Amounts. Each charge is stored as the IEEE-754 double the release was calibrated
with; SQLite REAL holds a double bit-exactly, so storing rounds nothing. Sums are
taken in exact rationals (``fractions.Fraction``), never by float addition, so no
charge is ever rounded down, and the comparison with the lifetime is exact. The
configured amounts are decimals whose doubles are slightly off (five doubles 0.2 sum
exactly to 1 + 5.6e-17, not 1), so the check admits ``spent + requested ≤ lifetime ·
(1 + 1e-12)``: that slack absorbs representation error, so that a lifetime of 1.0
admits exactly five runs of ε = 0.2, and bounds any over-spend at 1e-12 relative.
The slack is against the total, not per run: it never accumulates.

The default store is one SQLite file in WAL mode on a local file system (WAL does
not work over network file systems): reservations use ``BEGIN IMMEDIATE`` so
concurrent processes on one machine serialize, and a busy timeout makes waiters wait
rather than fail. A server database can implement ``LedgerStore`` later.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Literal, Protocol, get_args

__all__ = [
    "BUDGET_TOLERANCE",
    "BudgetRefused",
    "BudgetState",
    "EntryStatus",
    "ExportFormat",
    "LedgerEntry",
    "LedgerStore",
    "SqliteLedger",
    "export_entries",
    "parse_entries",
    "published_entry",
]

EntryStatus = Literal["reserved", "published", "failed"]
FinalStatus = Literal["published", "failed"]
ExportFormat = Literal["jsonl", "csv"]

_STATUSES: frozenset[str] = frozenset(get_args(EntryStatus))
_FINAL_STATUSES: frozenset[str] = frozenset(get_args(FinalStatus))

# Relative slack of the lifetime check, in the admitting direction only.
BUDGET_TOLERANCE = Fraction(1, 10**12)

_SCHEMA_VERSION = 1


def _format(value: float) -> str:
    return f"{value:.6g}"


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")


def _check_epsilon(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")


def _check_delta(name: str, value: object) -> None:
    _check_epsilon(name, value)
    assert isinstance(value, int | float)  # narrowed by the check above
    if value >= 1:
        raise ValueError(f"{name} must be < 1, got {value!r}")


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class LedgerEntry:
    """One charged run: (epsilon, delta) spent on (dataset, privacy_unit) by a release run.

    ``version`` is the published version name (e.g. ``v0003``) and is set exactly when
    ``status`` is ``published``. ``created_at`` is the reservation time, ISO 8601 in UTC.
    """

    run_id: str
    dataset: str
    privacy_unit: str
    release: str
    data_period: str
    epsilon: float
    delta: float
    status: EntryStatus
    created_at: str
    version: str | None = None

    def __post_init__(self) -> None:
        for name in ("run_id", "dataset", "privacy_unit", "release", "data_period"):
            _check_text(name, getattr(self, name))
        _check_epsilon("epsilon", self.epsilon)
        _check_delta("delta", self.delta)
        if self.status not in _STATUSES:
            raise ValueError(f"status must be one of {sorted(_STATUSES)}, got {self.status!r}")
        try:
            stamp = datetime.fromisoformat(self.created_at)
        except (TypeError, ValueError):
            raise ValueError(f"created_at must be ISO 8601, got {self.created_at!r}") from None
        if stamp.utcoffset() != timedelta(0):
            raise ValueError(f"created_at must be in UTC, got {self.created_at!r}")
        if self.status == "published":
            _check_text("version of a published entry", self.version)
        elif self.version is not None:
            raise ValueError(f"only a published entry has a version, status is {self.status!r}")
        # Stored as the exact double the release used (ints become floats).
        object.__setattr__(self, "epsilon", float(self.epsilon))
        object.__setattr__(self, "delta", float(self.delta))

    @classmethod
    def reservation(
        cls,
        *,
        run_id: str,
        dataset: str,
        privacy_unit: str,
        release: str,
        data_period: str,
        epsilon: float,
        delta: float,
    ) -> LedgerEntry:
        """A new ``reserved`` entry stamped now (UTC), ready for ``LedgerStore.reserve``."""
        return cls(
            run_id=run_id,
            dataset=dataset,
            privacy_unit=privacy_unit,
            release=release,
            data_period=data_period,
            epsilon=epsilon,
            delta=delta,
            status="reserved",
            created_at=_utc_now(),
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view, all fields in declaration order."""
        return asdict(self)


@dataclass(frozen=True)
class BudgetState:
    """Lifetime budget and total charged spend of one (dataset, privacy unit).

    ``spent_*`` are the exact sums of all charges (reserved, published and failed),
    rounded to the nearest double for display; ``charges`` is how many runs they are.
    """

    dataset: str
    privacy_unit: str
    lifetime_epsilon: float
    lifetime_delta: float
    spent_epsilon: float
    spent_delta: float
    charges: int = 0

    @property
    def remaining_epsilon(self) -> float:
        """Lifetime minus spent ε, at least 0 (a lowered lifetime can be overspent)."""
        return max(0.0, float(Fraction(self.lifetime_epsilon) - Fraction(self.spent_epsilon)))

    @property
    def remaining_delta(self) -> float:
        """Lifetime minus spent δ, at least 0."""
        return max(0.0, float(Fraction(self.lifetime_delta) - Fraction(self.spent_delta)))

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view including the remaining budget."""
        return asdict(self) | {
            "remaining_epsilon": self.remaining_epsilon,
            "remaining_delta": self.remaining_delta,
        }


class BudgetRefused(Exception):  # noqa: N818 (the name the CLI and docs use)
    """The run would pass the lifetime budget of its dataset and privacy unit.

    The message names the dataset, the privacy unit, the requested and the remaining
    budget: configuration and accounting values only, never data values.
    """

    def __init__(self, state: BudgetState, epsilon: float, delta: float) -> None:
        self.state = state
        self.requested_epsilon = epsilon
        self.requested_delta = delta
        super().__init__(
            f"privacy budget refused for dataset {state.dataset!r}, privacy unit "
            f"{state.privacy_unit!r}: requested ε={_format(epsilon)}, δ={_format(delta)}; "
            f"remaining ε={_format(state.remaining_epsilon)}, "
            f"δ={_format(state.remaining_delta)} of the lifetime "
            f"ε={_format(state.lifetime_epsilon)}, δ={_format(state.lifetime_delta)}"
        )

    def __reduce__(self) -> tuple[type[BudgetRefused], tuple[BudgetState, float, float]]:
        return (type(self), (self.state, self.requested_epsilon, self.requested_delta))


class LedgerStore(Protocol):
    """The seam between the release job and where the ledger lives."""

    def reserve(
        self, entry: LedgerEntry, lifetime_epsilon: float, lifetime_delta: float
    ) -> BudgetState:
        """Atomically check the lifetime budget and charge ``entry``; the state after it.

        Raises BudgetRefused, and charges nothing, if the spend would pass
        ``lifetime · (1 + BUDGET_TOLERANCE)`` in ε or δ. Reserving the same entry
        again (a retried call) is a no-op that returns the state.
        """
        ...

    def mark(self, run_id: str, status: FinalStatus, version: str | None = None) -> None:
        """Move a reserved run to ``published`` (with its version) or ``failed``.

        The charge stays either way. Repeating the same mark is a no-op.
        """
        ...

    def entries(self, dataset: str | None = None) -> list[LedgerEntry]:
        """All entries in reservation order, optionally of one dataset."""
        ...

    def state(
        self, dataset: str, privacy_unit: str, lifetime_epsilon: float, lifetime_delta: float
    ) -> BudgetState:
        """The budget of (dataset, privacy_unit) under the given lifetime."""
        ...


@dataclass(frozen=True)
class _Spent:
    """Exact sums of (ε, δ) charges and how many charges they are."""

    epsilon: Fraction
    delta: Fraction
    charges: int

    def plus(self, epsilon: float, delta: float) -> _Spent:
        return _Spent(
            self.epsilon + Fraction(epsilon), self.delta + Fraction(delta), self.charges + 1
        )


def _spent(amounts: Iterable[tuple[float, float]]) -> _Spent:
    """Exact sums of (ε, δ) charges: no float addition, nothing rounded."""
    total = _Spent(Fraction(0), Fraction(0), 0)
    for entry_epsilon, entry_delta in amounts:
        total = total.plus(entry_epsilon, entry_delta)
    return total


def _admits(spent: Fraction, requested: float, lifetime: float) -> bool:
    return spent + Fraction(requested) <= Fraction(lifetime) * (1 + BUDGET_TOLERANCE)


def _budget_state(
    dataset: str,
    privacy_unit: str,
    lifetime_epsilon: float,
    lifetime_delta: float,
    spent: _Spent,
) -> BudgetState:
    return BudgetState(
        dataset=dataset,
        privacy_unit=privacy_unit,
        lifetime_epsilon=float(lifetime_epsilon),
        lifetime_delta=float(lifetime_delta),
        spent_epsilon=float(spent.epsilon),
        spent_delta=float(spent.delta),
        charges=spent.charges,
    )


def _check_lifetime(lifetime_epsilon: float, lifetime_delta: float) -> None:
    _check_epsilon("lifetime_epsilon", lifetime_epsilon)
    _check_delta("lifetime_delta", lifetime_delta)


_COLUMNS = tuple(f.name for f in fields(LedgerEntry))

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS ledger_entries (
    run_id       TEXT PRIMARY KEY,
    dataset      TEXT NOT NULL,
    privacy_unit TEXT NOT NULL,
    release      TEXT NOT NULL,
    data_period  TEXT NOT NULL,
    epsilon      REAL NOT NULL CHECK (epsilon >= 0),
    delta        REAL NOT NULL CHECK (delta >= 0 AND delta < 1),
    status       TEXT NOT NULL CHECK (status IN ('reserved', 'published', 'failed')),
    created_at   TEXT NOT NULL,
    version      TEXT
)
"""
_CREATE_INDEX = (
    "CREATE INDEX IF NOT EXISTS ledger_entries_budget ON ledger_entries (dataset, privacy_unit)"
)


class SqliteLedger:
    """The default ``LedgerStore``: one SQLite file, safe for concurrent jobs on one machine.

    Each call opens its own connection (so a ledger object can be shared by threads
    and passed to child processes) and runs in one transaction. Amounts are REAL
    columns holding the exact doubles; sums are exact (see the module docstring).
    """

    def __init__(self, path: str | Path, *, busy_timeout_seconds: float = 60.0) -> None:
        """Open the ledger at ``path``, creating the file, its directory and the schema."""
        if not (math.isfinite(busy_timeout_seconds) and busy_timeout_seconds > 0):
            raise ValueError(f"busy_timeout_seconds must be > 0, got {busy_timeout_seconds!r}")
        self.path = Path(path).expanduser().resolve()
        self._timeout = busy_timeout_seconds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as connection:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OSError(f"cannot use the WAL journal for the ledger {self.path} (got {mode})")
            with self._transaction(connection):
                connection.execute(_CREATE_TABLE)
                connection.execute(_CREATE_INDEX)
                found = connection.execute("PRAGMA user_version").fetchone()[0]
                if found == 0:
                    connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                elif found != _SCHEMA_VERSION:
                    raise OSError(
                        f"ledger {self.path} has schema version {found}, "
                        f"this dprelease reads version {_SCHEMA_VERSION}"
                    )

    def __repr__(self) -> str:
        return f"SqliteLedger({str(self.path)!r})"

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: no implicit transactions; each method opens its own.
        # timeout sets SQLite's busy handler: a locked database is waited for.
        connection = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            # A lost charge is a privacy failure: fsync every commit, also in WAL mode.
            connection.execute("PRAGMA synchronous = FULL")
            yield connection
        finally:
            connection.close()

    @contextmanager
    def _transaction(self, connection: sqlite3.Connection) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so read-check-write cannot interleave.
        connection.execute("BEGIN IMMEDIATE")
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
    def _entry(row: Sequence[object]) -> LedgerEntry:
        values = dict(zip(_COLUMNS, row, strict=True))
        return LedgerEntry(**values)  # type: ignore[arg-type]

    def reserve(
        self, entry: LedgerEntry, lifetime_epsilon: float, lifetime_delta: float
    ) -> BudgetState:
        """Atomically check the lifetime budget and charge ``entry``; the state after it.

        Raises BudgetRefused, inserting nothing, if the spend of (dataset, privacy
        unit) plus the entry would pass ``lifetime · (1 + BUDGET_TOLERANCE)`` in ε or δ.
        A run id is one attempt: reserving an identical reserved entry again (a retried
        call whose first commit went through) returns the state without charging again;
        any other reuse of a run id is a ValueError.
        """
        _check_lifetime(lifetime_epsilon, lifetime_delta)
        if entry.status != "reserved":
            raise ValueError(f"a reservation must have status 'reserved', got {entry.status!r}")
        with self._connection() as connection, self._transaction(connection):
            row = connection.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM ledger_entries WHERE run_id = ?",
                (entry.run_id,),
            ).fetchone()
            if row is not None:
                if self._entry(row) != entry:
                    raise ValueError(
                        f"run id {entry.run_id!r} is already in the ledger with other values "
                        "or a final status; every run attempt needs a fresh run id"
                    )
                spent = self._charges(connection, entry.dataset, entry.privacy_unit)
                return _budget_state(
                    entry.dataset, entry.privacy_unit, lifetime_epsilon, lifetime_delta, spent
                )
            spent = self._charges(connection, entry.dataset, entry.privacy_unit)
            if not (
                _admits(spent.epsilon, entry.epsilon, lifetime_epsilon)
                and _admits(spent.delta, entry.delta, lifetime_delta)
            ):
                state = _budget_state(
                    entry.dataset, entry.privacy_unit, lifetime_epsilon, lifetime_delta, spent
                )
                raise BudgetRefused(state, entry.epsilon, entry.delta)
            connection.execute(
                f"INSERT INTO ledger_entries ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
                tuple(getattr(entry, name) for name in _COLUMNS),
            )
            after = spent.plus(entry.epsilon, entry.delta)
            return _budget_state(
                entry.dataset, entry.privacy_unit, lifetime_epsilon, lifetime_delta, after
            )

    def mark(self, run_id: str, status: FinalStatus, version: str | None = None) -> None:
        """Move a reserved run to ``published`` (with its version) or ``failed``.

        The charge stays either way. Repeating the same mark is a no-op; any other
        change of a final status is a ValueError, an unknown run id a KeyError.
        """
        if status not in _FINAL_STATUSES:
            raise ValueError(f"status must be one of {sorted(_FINAL_STATUSES)}, got {status!r}")
        if status == "published":
            _check_text("version of a published run", version)
        elif version is not None:
            raise ValueError("only a published run has a version")
        with self._connection() as connection, self._transaction(connection):
            row = connection.execute(
                "SELECT status, version FROM ledger_entries WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                raise KeyError(f"run id {run_id!r} is not in the ledger")
            current, current_version = row
            if current == status and current_version == version:
                return
            if current != "reserved":
                raise ValueError(
                    f"run {run_id!r} is already {current}"
                    + (f" as {current_version}" if current_version else "")
                    + f"; cannot mark it {status}"
                    + (f" as {version}" if version else "")
                )
            connection.execute(
                "UPDATE ledger_entries SET status = ?, version = ? WHERE run_id = ?",
                (status, version, run_id),
            )

    def entries(self, dataset: str | None = None) -> list[LedgerEntry]:
        """All entries in reservation (commit) order, optionally of one dataset."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM ledger_entries"
        parameters: tuple[str, ...] = ()
        if dataset is not None:
            query += " WHERE dataset = ?"
            parameters = (dataset,)
        with self._connection() as connection:
            rows = connection.execute(query + " ORDER BY rowid", parameters).fetchall()
        return [self._entry(row) for row in rows]

    def state(
        self, dataset: str, privacy_unit: str, lifetime_epsilon: float, lifetime_delta: float
    ) -> BudgetState:
        """The budget of (dataset, privacy_unit) under the given lifetime."""
        _check_lifetime(lifetime_epsilon, lifetime_delta)
        with self._connection() as connection:
            spent = self._charges(connection, dataset, privacy_unit)
        return _budget_state(dataset, privacy_unit, lifetime_epsilon, lifetime_delta, spent)


def published_entry(
    entries: Iterable[LedgerEntry], release: str, data_period: str
) -> LedgerEntry | None:
    """The latest published entry of (release, data_period), if any.

    A run for a period that already has one is an idempotent no-op unless it
    supersedes (and is then charged again, as a new run).
    """
    found = None
    for entry in entries:
        if entry.status == "published" and (entry.release, entry.data_period) == (
            release,
            data_period,
        ):
            found = entry
    return found


def export_entries(entries: Iterable[LedgerEntry], fmt: ExportFormat = "jsonl") -> str:
    """The entries as JSON lines (one object per line) or CSV with a header row.

    Amounts are written with ``repr`` (shortest round-tripping decimal), so
    ``parse_entries`` gives back the exact doubles. CSV writes a missing version as ''.
    """
    if fmt == "jsonl":
        return "".join(
            json.dumps(entry.to_dict(), ensure_ascii=False, allow_nan=False) + "\n"
            for entry in entries
        )
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(_COLUMNS)
        for entry in entries:
            writer.writerow(
                [
                    repr(value) if isinstance(value, float) else ("" if value is None else value)
                    for value in (getattr(entry, name) for name in _COLUMNS)
                ]
            )
        return buffer.getvalue()
    raise ValueError(f"export format must be 'jsonl' or 'csv', got {fmt!r}")


def _entry_from_mapping(values: dict[str, object], where: str) -> LedgerEntry:
    names = {str(name) for name in values}
    if names != set(_COLUMNS) or len(values) != len(_COLUMNS):
        missing = sorted(set(_COLUMNS) - names)
        unknown = sorted(names - set(_COLUMNS))
        raise ValueError(f"{where}: missing fields {missing}, unknown fields {unknown}")
    return LedgerEntry(**values)  # type: ignore[arg-type]


def parse_entries(text: str, fmt: ExportFormat = "jsonl") -> list[LedgerEntry]:
    """The entries of an ``export_entries`` text, validated (the inverse of the export)."""
    if fmt == "jsonl":
        parsed = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            values = json.loads(line)
            if not isinstance(values, dict):
                raise ValueError(f"line {number}: expected a JSON object")
            parsed.append(_entry_from_mapping(values, f"line {number}"))
        return parsed
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        parsed = []
        for number, row in enumerate(reader, start=2):
            fields_of_row: dict[str, object] = dict(row)
            for name in ("epsilon", "delta"):
                if name in fields_of_row:
                    fields_of_row[name] = float(str(fields_of_row[name]))
            if fields_of_row.get("version") == "":
                fields_of_row["version"] = None
            parsed.append(_entry_from_mapping(fields_of_row, f"row {number}"))
        return parsed
    raise ValueError(f"export format must be 'jsonl' or 'csv', got {fmt!r}")
