"""The PostgreSQL schema of the server ledger: the SQLite ledger's tables, in PostgreSQL.

The tables and columns are those of SQLite schema version 3 (``pipelines.ledger.schema``)
with the same names, so ``SqlLedger``'s statements run on both: amounts are ``double
precision`` (the exact doubles, as SQLite REAL holds them) and ``rowid`` is an identity
column giving reservation order. Triggers refuse what SQLite's refuse (deleting a charge,
changing an amount, the identity or the history) and TRUNCATE as well. The schema is
created once, under an advisory lock, by the first process that opens an empty schema;
``ledger_meta.schema_version`` lets a later dprelease migrate it and an older one refuse it.
"""

from __future__ import annotations

import uuid
from typing import Any

from pipelines.ledger.model import _utc_now
from pipelines.ledger.schema import REFUSALS_V2, REFUSALS_V3

SCHEMA_VERSION = 3
# Any constant: the key of the advisory lock that serializes schema creation.
_SCHEMA_LOCK = 0x64707265_6C656467

_REFUSE = """
CREATE OR REPLACE FUNCTION dprelease_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'dprelease ledger: %', TG_ARGV[0];
END
$$
"""

_TABLES = (
    """
    CREATE TABLE ledger_meta (
        singleton      integer PRIMARY KEY CHECK (singleton = 1),
        identity       text NOT NULL CHECK (length(identity) = 32),
        created_at     text NOT NULL,
        schema_version integer NOT NULL
    )
    """,
    """
    CREATE TABLE ledger_entries (
        rowid           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        run_id          text PRIMARY KEY,
        dataset         text NOT NULL,
        privacy_unit    text NOT NULL,
        release         text NOT NULL,
        data_period     text NOT NULL,
        epsilon         double precision NOT NULL CHECK (epsilon >= 0),
        delta           double precision NOT NULL CHECK (delta >= 0 AND delta < 1),
        status          text NOT NULL CHECK (status IN ('reserved', 'published', 'failed')),
        created_at      text NOT NULL,
        version         text,
        manifest_sha256 text,
        readme_sha256   text
    )
    """,
    "CREATE INDEX ledger_entries_budget ON ledger_entries (dataset, privacy_unit)",
    """
    CREATE TABLE lifetimes (
        dataset      text NOT NULL,
        privacy_unit text NOT NULL,
        epsilon      double precision NOT NULL CHECK (epsilon >= 0),
        delta        double precision NOT NULL CHECK (delta >= 0 AND delta < 1),
        pinned_at    text NOT NULL,
        PRIMARY KEY (dataset, privacy_unit)
    )
    """,
    """
    CREATE TABLE lifetime_changes (
        rowid        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        dataset      text NOT NULL,
        privacy_unit text NOT NULL,
        old_epsilon  double precision,
        old_delta    double precision,
        new_epsilon  double precision NOT NULL CHECK (new_epsilon >= 0),
        new_delta    double precision NOT NULL CHECK (new_delta >= 0 AND new_delta < 1),
        reason       text NOT NULL,
        actor        text NOT NULL,
        changed_at   text NOT NULL
    )
    """,
    """
    CREATE TABLE registrations (
        run_id        text PRIMARY KEY REFERENCES ledger_entries (run_id),
        tier          text,
        policy_sha256 text,
        purpose       text,
        owner         text,
        approval      text
    )
    """,
)


_TABLE_NAMES = ("ledger_meta", "ledger_entries", "lifetimes", "lifetime_changes", "registrations")


def _refusing(table: str, event: str, why: str, *, columns: str = "") -> str:
    name = f"{table}_no_{event.lower()}{'_charge' if columns else ''}"
    level = "STATEMENT" if event == "TRUNCATE" else "ROW"
    of = f" OF {columns}" if columns else ""
    return (
        f"CREATE TRIGGER {name} BEFORE {event}{of} ON {table} "
        f"FOR EACH {level} EXECUTE FUNCTION dprelease_refuse('{why}')"
    )


_GUARDS = (
    # Guards against bugs and careless SQL, not against the database owner (the identity,
    # backups and the manifests' records are the defence there; docs/privacy.md §10).
    *(_refusing(*refusal) for refusal in REFUSALS_V2),
    _refusing(
        "ledger_entries",
        "UPDATE",
        "a charge never changes",
        columns="run_id, dataset, privacy_unit, epsilon, delta",
    ),
    *(_refusing(*refusal) for refusal in REFUSALS_V3),
    *(_refusing(table, "TRUNCATE", "the ledger is append-only") for table in _TABLE_NAMES),
)


def prepare_schema(cursor: Any, location: str) -> tuple[str, str]:
    """Create the schema in an empty database schema, or check the existing one; its
    (identity, created_at). Runs inside the caller's transaction, under an advisory lock,
    so concurrent first opens create it once."""
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
    cursor.execute("SELECT to_regclass('ledger_meta'), to_regclass('ledger_entries')")
    meta, entries = cursor.fetchone()
    if meta is None:
        if entries is not None:
            raise OSError(f"{location} is not a dprelease ledger (entries without ledger_meta)")
        cursor.execute(_REFUSE)
        for statement in _TABLES + _GUARDS:
            cursor.execute(statement)
        cursor.execute(
            "INSERT INTO ledger_meta (singleton, identity, created_at, schema_version) "
            "VALUES (1, %s, %s, %s)",
            (uuid.uuid4().hex, _utc_now(), SCHEMA_VERSION),
        )
    cursor.execute("SELECT identity, created_at, schema_version FROM ledger_meta")
    rows = cursor.fetchall()
    if len(rows) != 1:
        raise OSError(f"ledger {location} has no identity: it is damaged; restore it from backup")
    identity, created_at, version = rows[0]
    if version != SCHEMA_VERSION:
        raise OSError(
            f"ledger {location} has schema version {version}, "
            f"this dprelease reads version {SCHEMA_VERSION}"
        )
    return str(identity), str(created_at)
