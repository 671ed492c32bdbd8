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

- Policy tiers: a dataset charged under a policy tier is bound to it; a reservation
  under another tier, or none, raises ``TierMismatch`` and charges nothing. Each charge
  records its ``Registration`` (tier, purpose, owner, approval) in the same transaction.

The package: ``model`` (entries, budget states, the errors, dataset names),
``registration`` (the registry record of a charge), ``accounting`` (exact sums against
the lifetime), ``store`` (the ``LedgerStore`` seam), ``sql_store`` (the semantics, once,
in SQL), ``schema`` and ``sqlite`` (the default store), ``postgres_schema`` and
``postgres`` (the server store, imported on use: it needs psycopg) and ``exchange``
(export and import of entries).
"""

from __future__ import annotations

from pipelines.ledger.accounting import BUDGET_TOLERANCE
from pipelines.ledger.exchange import ExportFormat, export_entries, parse_entries, published_entry
from pipelines.ledger.model import (
    BudgetRefused,
    BudgetState,
    EntryStatus,
    LedgerEntry,
    LifetimeChange,
    LifetimeMismatch,
    dataset_name,
)
from pipelines.ledger.model import FinalStatus as FinalStatus
from pipelines.ledger.model import Lifetime as Lifetime
from pipelines.ledger.registration import Registration, TierMismatch
from pipelines.ledger.sqlite import SqliteLedger
from pipelines.ledger.store import LedgerStore

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
    "Registration",
    "SqliteLedger",
    "TierMismatch",
    "dataset_name",
    "export_entries",
    "parse_entries",
    "published_entry",
]
