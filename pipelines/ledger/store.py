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
        """Atomically check the lifetime budget and charge ``entry``; the state after it.

        ``registration`` (tier and registry fields) is recorded with the charge; a
        dataset bound to another tier raises TierMismatch, charging nothing.

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

    def registrations(self) -> dict[str, Registration]:
        """Run id -> the registration recorded with its charge."""
        ...

    def bound_tier(self, dataset: str) -> str | None:
        """The policy tier the dataset is bound to, None if it has no tiered charge."""
        ...

    def published_versions_of(self, release: str) -> dict[str, LedgerEntry]:
        """Version name -> the published entry of that version of ``release``."""
        ...
