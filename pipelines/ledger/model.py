"""Ledger records and their validation: entries, lifetime changes, budget states, the errors.

Each charge is stored as the IEEE-754 double the release was calibrated with (ints
become floats); dataset names are canonical (``dataset_name``). Every record checks its
fields on construction and raises ValueError naming the field.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Literal, get_args

from dp_ops.checks import check_delta, check_nonnegative
from pipelines.errors import BudgetError

EntryStatus = Literal["reserved", "published", "failed"]
FinalStatus = Literal["published", "failed"]

_STATUSES: frozenset[str] = frozenset(get_args(EntryStatus))
_FINAL_STATUSES: frozenset[str] = frozenset(get_args(FinalStatus))

# The command that changes a pinned lifetime, as the messages name it.
_SET_LIFETIME_COMMAND = "dprelease ledger set-lifetime CONFIG --epsilon E --delta D --reason TEXT"


def _format(value: float) -> str:
    return f"{value:.6g}"


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")


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
        check_nonnegative("epsilon", self.epsilon)
        check_delta("delta", self.delta, allow_zero=True)
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


_COLUMNS = tuple(f.name for f in fields(LedgerEntry))
_CHANGE_COLUMNS = tuple(f.name for f in fields(LifetimeChange))
