"""The ``LedgerStore`` protocol: the seam between the release job and where the ledger lives."""

from __future__ import annotations

from typing import Protocol

from pipelines.ledger.model import BudgetState, FinalStatus, LedgerEntry, Lifetime, LifetimeChange
from pipelines.ledger.registration import Registration


class LedgerStore(Protocol):
    """The seam between the release job and where the ledger lives.

    Invariants of every store (docs/privacy.md §10, §12): charges never go away; the
    lifetime a budget is checked against is the pinned one; a pin changes only through
    ``set_lifetime``, which records the change; a dataset charged under a policy tier
    stays bound to it; dataset arguments are taken through ``dataset_name``. The two
    stores, ``SqliteLedger`` and ``PostgresLedger``, share one implementation of these
    (``SqlLedger``) and one contract test suite.
    """

    @property
    def location(self) -> str:
        """Where the ledger lives, for messages (a path, or a server URL without secrets)."""
        ...

    @property
    def created_at(self) -> str:
        """When the ledger's identity was created (ISO 8601, UTC)."""
        ...

    @property
    def identity(self) -> str:
        """The ledger's random identity (32 hex digits), fixed when it was created."""
        ...

    def reserve(
        self,
        entry: LedgerEntry,
        lifetime_epsilon: float,
        lifetime_delta: float,
        registration: Registration | None = None,
    ) -> BudgetState:
        """Atomically check the lifetime budget and the policy tier, and charge ``entry``;
        the state after it.

        In one write transaction: raises TierMismatch if the dataset is bound to
        another tier than ``registration.tier`` (no registration: no tier); the first
        reservation of a (dataset, privacy unit) pins the lifetime given, and a later one
        raises LifetimeMismatch if it differs from the pin; BudgetRefused if the spend
        plus the entry would pass ``pinned lifetime · (1 + BUDGET_TOLERANCE)`` in ε or δ.
        Any error inserts and pins nothing. ``registration`` (tier and registry fields) is
        recorded with the charge. Reserving an identical reserved entry again (a retried
        call whose first commit went through) returns the state without charging again;
        any other reuse of a run id is a ValueError.
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
        """Move a reserved run to ``published`` or ``failed``.

        ``published`` requires the version and the SHA-256 (64 lowercase hex digits) of
        its ``manifest.json`` and ``README.md`` as published; ``failed`` takes none of
        them. The charge stays either way. Repeating the same mark is a no-op; any other
        change of a final status is a ValueError, an unknown run id a KeyError.
        """
        ...

    def entries(self, dataset: str | None = None) -> list[LedgerEntry]:
        """All entries in reservation (commit) order, optionally of one dataset (any
        spelling ``dataset_name`` maps to it)."""
        ...

    def state(
        self, dataset: str, privacy_unit: str, lifetime_epsilon: float, lifetime_delta: float
    ) -> BudgetState:
        """The budget of (dataset, privacy_unit) under its pinned lifetime.

        Raises LifetimeMismatch if a pinned lifetime differs from the one given. A
        budget with no pin (never charged, or charged before schema version 2) is shown
        under the given lifetime, and nothing is pinned: ``state`` never writes.
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
        """Pin (dataset, privacy_unit) to the lifetime (ε, δ) and record the change.

        The only way to change a pinned lifetime, or to pin one before the first
        reservation. In one transaction it sets the pin and appends a row (old values or
        None, new values, reason, actor, UTC time) to ``lifetime_changes``. ``reason``
        and ``actor`` must be non-blank. Setting the pinned value again changes and
        records nothing. A lifetime below the spend is allowed: the budget then has 0
        remaining and refuses every run (docs/privacy.md §10).
        """
        ...

    def lifetime_changes(self, dataset: str | None = None) -> list[LifetimeChange]:
        """Every recorded lifetime change in order, optionally of one dataset."""
        ...

    def registrations(self) -> dict[str, Registration]:
        """Run id -> the registration recorded with its charge (runs charged before
        registrations existed have none)."""
        ...

    def bound_tier(self, dataset: str) -> str | None:
        """The policy tier the dataset is bound to, None if it has no tiered charge."""
        ...

    def published_versions_of(self, release: str) -> dict[str, LedgerEntry]:
        """Version name -> the published entry of that version of ``release``.

        The release's visible versions can be checked against it: a version the ledger
        does not know, or whose manifest or README digest differs from the recorded one,
        was not published through this ledger as it is now. Should two published entries
        name one version (not possible through ``mark`` of one release directory), the
        later one is returned.
        """
        ...
