"""The SQLite schema of the ledger file: creation, and migration from older versions.

Schema versions (``PRAGMA user_version``): 1 held ``ledger_entries`` only; 2 adds
``ledger_meta`` (identity), ``lifetimes`` (pins), ``lifetime_changes`` (their history)
and the two digest columns of ``ledger_entries``; 3 adds ``registrations`` (the policy
tier and registry fields of each charge). Opening an older file migrates it forward in
one transaction. A file of a newer version than the code is refused: so an older
dprelease refuses a newer file and cannot write around the pins or the tiers.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from pipelines.ledger.model import _utc_now, dataset_name

_SCHEMA_VERSION = 3

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


# What the guard triggers refuse, (table, statement, why), in both backends' schemas
# (``pipelines.ledger.postgres_schema`` writes the same rules in its trigger syntax).
REFUSALS_V2 = (
    ("ledger_meta", "UPDATE", "the ledger identity is fixed"),
    ("ledger_meta", "DELETE", "the ledger identity is fixed"),
    ("lifetimes", "DELETE", "a pinned lifetime changes only by set_lifetime"),
    ("lifetime_changes", "UPDATE", "lifetime_changes is append-only"),
    ("lifetime_changes", "DELETE", "lifetime_changes is append-only"),
    ("ledger_entries", "DELETE", "a charge never goes away"),
)
REFUSALS_V3 = (
    ("registrations", "UPDATE", "a registration never changes"),
    ("registrations", "DELETE", "a registration never goes away"),
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
    *(_trigger_refusing(*refusal) for refusal in REFUSALS_V2),
    """
    CREATE TRIGGER ledger_entries_charge_fixed
    BEFORE UPDATE OF run_id, dataset, privacy_unit, epsilon, delta ON ledger_entries
    BEGIN SELECT RAISE(ABORT, 'a charge never changes'); END
    """,
)


# Version 2 -> 3: the registry record of each charge, written with it (append-only).
_V3_TABLES = (
    """
    CREATE TABLE registrations (
        run_id        TEXT PRIMARY KEY REFERENCES ledger_entries (run_id),
        tier          TEXT,
        policy_sha256 TEXT,
        purpose       TEXT,
        owner         TEXT,
        approval      TEXT
    )
    """,
    *(_trigger_refusing(*refusal) for refusal in REFUSALS_V3),
)


def _create_schema(connection: sqlite3.Connection, path: Path) -> None:
    """Version 0 (a new, empty file) -> the current version, with a fresh identity."""
    if connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise OSError(f"{path} is not a dprelease ledger (tables without a schema version)")
    connection.execute(_CREATE_ENTRIES)
    connection.execute(_CREATE_INDEX)
    for statement in _V2_TABLES + _V3_TABLES:
        connection.execute(statement)
    _create_identity(connection)


def _migrate_v1(connection: sqlite3.Connection, path: Path) -> None:
    """Version 1 -> 3: digest columns, canonical dataset names, the new tables, an identity.

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
    for statement in _V2_TABLES + _V3_TABLES:
        connection.execute(statement)
    _create_identity(connection)


def _migrate_v2(connection: sqlite3.Connection) -> None:
    """Version 2 -> 3: the registrations table; earlier charges have no registration."""
    for statement in _V3_TABLES:
        connection.execute(statement)
    connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")


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
    elif found == 2:
        _migrate_v2(connection)
    elif found != _SCHEMA_VERSION:
        raise OSError(
            f"ledger {path} has schema version {found}, "
            f"this dprelease reads versions 1 to {_SCHEMA_VERSION}"
        )
    rows = connection.execute("SELECT identity, created_at FROM ledger_meta").fetchall()
    if len(rows) != 1:
        raise OSError(f"ledger {path} has no identity: it is damaged; restore it from backup")
    return str(rows[0][0]), str(rows[0][1])
