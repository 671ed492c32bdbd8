"""The persistent privacy budget ledger: every spend per (dataset, privacy unit).

Across releases of the same dataset and privacy unit composition is sequential and
basic (docs/privacy.md, composition across releases): ε adds and δ adds. Every run
that could have published noise is charged, including retries, failed runs and
superseded versions.

Invariants:

- A run reserves its full (ε, δ) before any data is read or noise drawn; the check
  and the insert are one transaction, so concurrent jobs cannot both take the last
  piece of a budget. A refused run leaves no row and reads no data.
- A charge never goes away: ``mark`` only moves ``reserved`` to ``published`` or
  ``failed``, and all three statuses count as spent.
- After any admitted reservation, the spend of a (dataset, privacy unit) is at most
  ``lifetime · (1 + 1e-12)`` (exact arithmetic; see below), where ``lifetime`` is the
  lifetime *pinned in the ledger*, never the one a job config happens to state.
- Pinned lifetimes: the first reservation of a (dataset, privacy unit) pins the lifetime
  it was given, in the same transaction. A later call with another lifetime raises
  ``LifetimeMismatch`` and charges nothing; ``set_lifetime`` is the only way to change
  a pin, and every change is appended to ``lifetime_changes`` (never updated, never
  deleted).
- Identity: each ledger file has a random identity, created once with the file. A
  deleted or replaced ledger has another identity (or none), so a release whose
  manifests record the identity exposes it; an open ``SqliteLedger`` refuses to go on
  with a file that was deleted or whose identity changed under it.
- Dataset names are canonical (``dataset_name``): spellings that differ only by case or
  surrounding whitespace are one budget.
- A published entry records the SHA-256 of its version's ``manifest.json`` and
  ``README.md`` as published, so a later edit of either is detectable.

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

Schema versions (``PRAGMA user_version``): 1 held ``ledger_entries`` only; 2 adds
``ledger_meta`` (identity), ``lifetimes`` (pins), ``lifetime_changes`` (their history)
and the two digest columns of ``ledger_entries``. Opening a version 1 file migrates it
forward in one transaction. A file of a newer version than the code is refused: so a
version 1 dprelease refuses a version 2 file and cannot write around the pins.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Literal, Protocol, get_args

from pipelines.errors import BudgetError

__all__ = [
    "BUDGET_TOLERANCE",
    "BudgetRefused",
    "BudgetState",
    "EntryStatus",
    "ExportFormat",
    "LedgerEntry",
    "LedgerStore",
    "LifetimeChange",
    "LifetimeMismatch",
    "SqliteLedger",
    "dataset_name",
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

_SCHEMA_VERSION = 2

# The command that changes a pinned lifetime, as the messages name it.
_SET_LIFETIME_COMMAND = "dprelease ledger set-lifetime CONFIG --epsilon E --delta D --reason TEXT"


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


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _check_sha256(name: str, value: object) -> None:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise ValueError(f"{name} must be a SHA-256 digest in 64 lowercase hex digits")


_DATASET = re.compile(r"^[a-z0-9][a-z0-9_.:/-]{0,127}$")


def dataset_name(text: str) -> str:
    """The canonical name of a dataset: the key its lifetime budget is kept under.

    Invariant: names that differ only by case or by surrounding whitespace are one
    dataset (one budget); anything else that could make two spellings of one name
    (inner whitespace, control characters) is refused rather than silently merged.
    Raises ValueError naming the rule.
    """
    canonical = text.strip().casefold()
    if not _DATASET.match(canonical):
        raise ValueError(
            "a dataset name must be 1-128 characters of letters, digits and '_.:/-', "
            "starting with a letter or digit (case and surrounding spaces are ignored)"
        )
    return canonical


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _check_utc(name: str, value: object) -> None:
    try:
        stamp = datetime.fromisoformat(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be ISO 8601, got {value!r}") from None
    if stamp.utcoffset() != timedelta(0):
        raise ValueError(f"{name} must be in UTC, got {value!r}")


def _check_publication(
    status: str, version: object, manifest_sha256: object, readme_sha256: object
) -> None:
    """A version, and digests, only on published entries; both digests or neither."""
    if status != "published":
        if version is not None:
            raise ValueError(f"only a published entry has a version, status is {status!r}")
        if manifest_sha256 is not None or readme_sha256 is not None:
            raise ValueError(f"only a published entry has digests, status is {status!r}")
        return
    _check_text("version of a published entry", version)
    if (manifest_sha256 is None) != (readme_sha256 is None):
        raise ValueError("a published entry has both manifest_sha256 and readme_sha256, or neither")
    if manifest_sha256 is not None:
        _check_sha256("manifest_sha256", manifest_sha256)
        _check_sha256("readme_sha256", readme_sha256)


@dataclass(frozen=True)
class LedgerEntry:
    """One charged run: (epsilon, delta) spent on (dataset, privacy_unit) by a release run.

    ``dataset`` is stored canonical (``dataset_name``). ``version`` is the published
    version name (e.g. ``v0003``) and is set exactly when ``status`` is ``published``.
    ``manifest_sha256`` and ``readme_sha256`` are the digests of that version's
    ``manifest.json`` and ``README.md`` as published: only on published entries, both or
    neither (entries published before schema version 2 have none). ``created_at`` is the
    reservation time, ISO 8601 in UTC.
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
    manifest_sha256: str | None = None
    readme_sha256: str | None = None

    def __post_init__(self) -> None:
        for name in ("run_id", "dataset", "privacy_unit", "release", "data_period"):
            _check_text(name, getattr(self, name))
        _check_epsilon("epsilon", self.epsilon)
        _check_delta("delta", self.delta)
        if self.status not in _STATUSES:
            raise ValueError(f"status must be one of {sorted(_STATUSES)}, got {self.status!r}")
        _check_utc("created_at", self.created_at)
        _check_publication(self.status, self.version, self.manifest_sha256, self.readme_sha256)
        object.__setattr__(self, "dataset", dataset_name(self.dataset))
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
class LifetimeChange:
    """One change of a pinned lifetime, as ``set_lifetime`` appended it.

    ``old_*`` are None when the change pinned a lifetime that was not pinned before.
    ``changed_at`` is ISO 8601 in UTC; ``actor`` is who made the change (the OS user
    name for the CLI). Rows of this kind are append-only (docs/privacy.md, lifetime
    budgets): the history of a lifetime is never rewritten.
    """

    dataset: str
    privacy_unit: str
    old_epsilon: float | None
    old_delta: float | None
    new_epsilon: float
    new_delta: float
    reason: str
    actor: str
    changed_at: str

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


class BudgetRefused(BudgetError):  # noqa: N818 (the name the CLI and docs use)
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


Lifetime = tuple[float, float]


class LifetimeMismatch(BudgetError):  # noqa: N818 (the name the CLI and docs use)
    """The configured lifetime differs from the one pinned in the ledger.

    Invariant: the pinned lifetime is authoritative (docs/privacy.md, lifetime budgets);
    a config cannot raise it. ``configured`` and ``pinned`` are (ε, δ). The message
    names ``ledger.lifetime_budget``, both values (exactly, as shortest round-tripping
    decimals) and the command that changes a pin: accounting values only.
    """

    def __init__(
        self, dataset: str, privacy_unit: str, configured: Lifetime, pinned: Lifetime
    ) -> None:
        self.dataset = dataset
        self.privacy_unit = privacy_unit
        self.configured = configured
        self.pinned = pinned
        super().__init__(
            f"lifetime budget mismatch for dataset {dataset!r}, privacy unit "
            f"{privacy_unit!r}: the config's ledger.lifetime_budget is "
            f"ε={configured[0]!r}, δ={configured[1]!r} but the ledger has pinned "
            f"ε={pinned[0]!r}, δ={pinned[1]!r}; set ledger.lifetime_budget to the pinned "
            f"values, or change the pin (recorded in the ledger) with `{_SET_LIFETIME_COMMAND}`"
        )

    def __reduce__(
        self,
    ) -> tuple[type[LifetimeMismatch], tuple[str, str, Lifetime, Lifetime]]:
        return (type(self), (self.dataset, self.privacy_unit, self.configured, self.pinned))


class LedgerStore(Protocol):
    """The seam between the release job and where the ledger lives.

    Invariants of every store (docs/privacy.md, lifetime budgets): charges never go
    away; the lifetime a budget is checked against is the pinned one; a pin changes only
    through ``set_lifetime``, which records the change; dataset arguments are taken
    through ``dataset_name``.
    """

    @property
    def identity(self) -> str:
        """The ledger's random identity (32 hex digits), fixed when it was created."""
        ...

    def reserve(
        self, entry: LedgerEntry, lifetime_epsilon: float, lifetime_delta: float
    ) -> BudgetState:
        """Atomically check the lifetime budget and charge ``entry``; the state after it.

        The first reservation of a (dataset, privacy unit) pins the lifetime given;
        later ones raise LifetimeMismatch, charging nothing, if it differs from the pin.
        Raises BudgetRefused, and charges nothing, if the spend would pass
        ``pinned lifetime · (1 + BUDGET_TOLERANCE)`` in ε or δ. Reserving the same
        entry again (a retried call) is a no-op that returns the state.
        """
        ...

    def mark(
        self,
        run_id: str,
        status: FinalStatus,
        version: str | None = None,
        *,
        manifest_sha256: str | None = None,
        readme_sha256: str | None = None,
    ) -> None:
        """Move a reserved run to ``published`` (with its version and the digests of its
        manifest and README, all required) or ``failed``.

        The charge stays either way. Repeating the same mark is a no-op.
        """
        ...

    def entries(self, dataset: str | None = None) -> list[LedgerEntry]:
        """All entries in reservation order, optionally of one dataset."""
        ...

    def state(
        self, dataset: str, privacy_unit: str, lifetime_epsilon: float, lifetime_delta: float
    ) -> BudgetState:
        """The budget of (dataset, privacy_unit) under its pinned lifetime.

        Raises LifetimeMismatch if a pinned lifetime differs from the one given; with no
        pin, the given lifetime is used and nothing is pinned.
        """
        ...

    def pinned_lifetime(self, dataset: str, privacy_unit: str) -> Lifetime | None:
        """The pinned (ε, δ) lifetime of (dataset, privacy_unit), None if none is pinned."""
        ...

    def set_lifetime(
        self,
        dataset: str,
        privacy_unit: str,
        epsilon: float,
        delta: float,
        reason: str,
        actor: str,
    ) -> None:
        """Pin (dataset, privacy_unit) to the lifetime (ε, δ) and record the change."""
        ...

    def lifetime_changes(self, dataset: str | None = None) -> list[LifetimeChange]:
        """Every recorded lifetime change in order, optionally of one dataset."""
        ...

    def published_versions_of(self, release: str) -> dict[str, LedgerEntry]:
        """Version name -> the published entry of that version of ``release``."""
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
    dataset: str, privacy_unit: str, lifetime: Lifetime, spent: _Spent
) -> BudgetState:
    return BudgetState(
        dataset=dataset,
        privacy_unit=privacy_unit,
        lifetime_epsilon=float(lifetime[0]),
        lifetime_delta=float(lifetime[1]),
        spent_epsilon=float(spent.epsilon),
        spent_delta=float(spent.delta),
        charges=spent.charges,
    )


def _lifetime(lifetime_epsilon: float, lifetime_delta: float) -> Lifetime:
    """The validated lifetime as exact doubles (ints become floats)."""
    _check_epsilon("lifetime_epsilon", lifetime_epsilon)
    _check_delta("lifetime_delta", lifetime_delta)
    return (float(lifetime_epsilon), float(lifetime_delta))


_COLUMNS = tuple(f.name for f in fields(LedgerEntry))
_CHANGE_COLUMNS = tuple(f.name for f in fields(LifetimeChange))
# Optional entry fields: '' in CSV; the digests may be missing from version 1 exports.
_OPTIONAL = ("version", "manifest_sha256", "readme_sha256")
_DIGESTS = ("manifest_sha256", "readme_sha256")

_CREATE_ENTRIES = """
CREATE TABLE ledger_entries (
    run_id          TEXT PRIMARY KEY,
    dataset         TEXT NOT NULL,
    privacy_unit    TEXT NOT NULL,
    release         TEXT NOT NULL,
    data_period     TEXT NOT NULL,
    epsilon         REAL NOT NULL CHECK (epsilon >= 0),
    delta           REAL NOT NULL CHECK (delta >= 0 AND delta < 1),
    status          TEXT NOT NULL CHECK (status IN ('reserved', 'published', 'failed')),
    created_at      TEXT NOT NULL,
    version         TEXT,
    manifest_sha256 TEXT,
    readme_sha256   TEXT
)
"""
_CREATE_INDEX = (
    "CREATE INDEX IF NOT EXISTS ledger_entries_budget ON ledger_entries (dataset, privacy_unit)"
)
# Version 1 -> 2 on the existing entries table (the new tables follow from _V2_TABLES).
_V1_TO_V2 = (
    "ALTER TABLE ledger_entries ADD COLUMN manifest_sha256 TEXT",
    "ALTER TABLE ledger_entries ADD COLUMN readme_sha256 TEXT",
)


def _trigger_refusing(table: str, action: str, why: str) -> str:
    return (
        f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{why}'); END"
    )


_V2_TABLES = (
    """
    CREATE TABLE ledger_meta (
        singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
        identity   TEXT NOT NULL CHECK (length(identity) = 32),
        created_at TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE lifetimes (
        dataset      TEXT NOT NULL,
        privacy_unit TEXT NOT NULL,
        epsilon      REAL NOT NULL CHECK (epsilon >= 0),
        delta        REAL NOT NULL CHECK (delta >= 0 AND delta < 1),
        pinned_at    TEXT NOT NULL,
        PRIMARY KEY (dataset, privacy_unit)
    )
    """,
    """
    CREATE TABLE lifetime_changes (
        dataset      TEXT NOT NULL,
        privacy_unit TEXT NOT NULL,
        old_epsilon  REAL,
        old_delta    REAL,
        new_epsilon  REAL NOT NULL CHECK (new_epsilon >= 0),
        new_delta    REAL NOT NULL CHECK (new_delta >= 0 AND new_delta < 1),
        reason       TEXT NOT NULL,
        actor        TEXT NOT NULL,
        changed_at   TEXT NOT NULL
    )
    """,
    # Guards against bugs, not against someone who can edit the file (the identity,
    # backups and the manifests' records are the defence there).
    _trigger_refusing("ledger_meta", "UPDATE", "the ledger identity is fixed"),
    _trigger_refusing("ledger_meta", "DELETE", "the ledger identity is fixed"),
    _trigger_refusing("lifetimes", "DELETE", "a pinned lifetime changes only by set_lifetime"),
    _trigger_refusing("lifetime_changes", "UPDATE", "lifetime_changes is append-only"),
    _trigger_refusing("lifetime_changes", "DELETE", "lifetime_changes is append-only"),
    _trigger_refusing("ledger_entries", "DELETE", "a charge never goes away"),
    """
    CREATE TRIGGER ledger_entries_charge_fixed
    BEFORE UPDATE OF run_id, dataset, privacy_unit, epsilon, delta ON ledger_entries
    BEGIN SELECT RAISE(ABORT, 'a charge never changes'); END
    """,
)


def _create_schema(connection: sqlite3.Connection, path: Path) -> None:
    """Version 0 (a new, empty file) -> version 2, with a fresh identity."""
    if connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise OSError(f"{path} is not a dprelease ledger (tables without a schema version)")
    connection.execute(_CREATE_ENTRIES)
    connection.execute(_CREATE_INDEX)
    for statement in _V2_TABLES:
        connection.execute(statement)
    _create_identity(connection)


def _migrate_v1(connection: sqlite3.Connection, path: Path) -> None:
    """Version 1 -> 2: digest columns, canonical dataset names, the new tables, an identity.

    Entries and charges are kept as they are; spellings of one dataset name merge into
    one budget (the sum of their charges). No lifetime is pinned: a version 1 file does
    not know them, so the first reservation of each budget pins it.
    """
    for statement in _V1_TO_V2:
        connection.execute(statement)
    names = [row[0] for row in connection.execute("SELECT DISTINCT dataset FROM ledger_entries")]
    for name in names:
        try:
            canonical = dataset_name(str(name))
        except ValueError as error:
            raise OSError(
                f"cannot migrate the ledger {path} to schema version {_SCHEMA_VERSION}: "
                f"its dataset {name!r}: {error}"
            ) from None
        if canonical != name:
            connection.execute(
                "UPDATE ledger_entries SET dataset = ? WHERE dataset = ?", (canonical, name)
            )
    for statement in _V2_TABLES:
        connection.execute(statement)
    _create_identity(connection)


def _create_identity(connection: sqlite3.Connection) -> None:
    connection.execute(
        "INSERT INTO ledger_meta (singleton, identity, created_at) VALUES (1, ?, ?)",
        (uuid.uuid4().hex, _utc_now()),
    )
    connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")


def _prepare_schema(connection: sqlite3.Connection, path: Path) -> tuple[str, str]:
    """Bring the file to the current schema (inside the caller's transaction); its
    (identity, created_at)."""
    found = connection.execute("PRAGMA user_version").fetchone()[0]
    if found == 0:
        _create_schema(connection, path)
    elif found == 1:
        _migrate_v1(connection, path)
    elif found != _SCHEMA_VERSION:
        raise OSError(
            f"ledger {path} has schema version {found}, "
            f"this dprelease reads versions 1 to {_SCHEMA_VERSION}"
        )
    rows = connection.execute("SELECT identity, created_at FROM ledger_meta").fetchall()
    if len(rows) != 1:
        raise OSError(f"ledger {path} has no identity: it is damaged; restore it from backup")
    return str(rows[0][0]), str(rows[0][1])


class SqliteLedger:
    """The default ``LedgerStore``: one SQLite file, safe for concurrent jobs on one machine.

    Each call opens its own connection (so a ledger object can be shared by threads
    and passed to child processes) and runs in one transaction. Amounts are REAL
    columns holding the exact doubles; sums are exact (see the module docstring).

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
        with self._connection(create=True) as connection:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OSError(f"cannot use the WAL journal for the ledger {self.path} (got {mode})")
            with self._transaction(connection):
                identity, self._created_at = _prepare_schema(connection, self.path)
        self._identity = identity

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
    ``parse_entries`` gives back the exact doubles. CSV writes a missing version or
    digest as ''.
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
    # Exports made before schema version 2 have no digest fields: read them as None.
    values = {name: None for name in _DIGESTS} | values
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
            for name in _OPTIONAL:
                if fields_of_row.get(name) == "":
                    fields_of_row[name] = None
            parsed.append(_entry_from_mapping(fields_of_row, f"row {number}"))
        return parsed
    raise ValueError(f"export format must be 'jsonl' or 'csv', got {fmt!r}")
