"""The registry record of a charged run: its policy tier, purpose, owner and approval.

A ``Registration`` is written in the same transaction as the charge it describes
(``LedgerStore.reserve``), so the ledger never holds a charge registered differently
from how it was admitted. Invariant (docs/privacy.md §12): a dataset charged under a
policy tier is bound to that tier; a later reservation under another tier, or under no
tier, raises ``TierMismatch`` and charges nothing.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

from pipelines.errors import PolicyViolation

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Free text of the registry: one line, bounded, so exports and tables stay readable.
_MAX_TEXT = 500


def _check_optional_text(name: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string or None")
    if len(value) > _MAX_TEXT or "\n" in value or "\r" in value:
        raise ValueError(f"{name} must be one line of at most {_MAX_TEXT} characters")


@dataclass(frozen=True)
class Registration:
    """Who charged a run and why: the registry fields of one release run.

    ``tier`` is the policy tier the run was checked against (None: no policy applied);
    ``policy_sha256`` is the SHA-256 of the policy file as read (set exactly when
    ``tier`` is). ``purpose``, ``owner`` and ``approval`` are the config's
    ``registry.*`` fields (None when not given).
    """

    tier: str | None = None
    policy_sha256: str | None = None
    purpose: str | None = None
    owner: str | None = None
    approval: str | None = None

    def __post_init__(self) -> None:
        for name in ("tier", "purpose", "owner", "approval"):
            _check_optional_text(name, getattr(self, name))
        if (self.tier is None) != (self.policy_sha256 is None):
            raise ValueError("a registration has both tier and policy_sha256, or neither")
        if self.policy_sha256 is not None and not _SHA256.match(self.policy_sha256):
            raise ValueError("policy_sha256 must be a SHA-256 digest in 64 lowercase hex digits")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view, all fields in declaration order."""
        return asdict(self)


_REGISTRATION_COLUMNS = tuple(f.name for f in fields(Registration))


class TierMismatch(PolicyViolation):
    """The dataset is bound to another policy tier in the ledger than this run's.

    Invariant: a dataset's tier is the one its first tiered charge recorded; a config
    cannot move it to a laxer tier, nor drop its policy (docs/privacy.md §12).
    """

    def __init__(self, dataset: str, bound: str, given: str | None) -> None:
        self.dataset = dataset
        self.bound = bound
        self.given = given
        stated = f"tier {given!r}" if given is not None else "no policy (ledger.policy unset)"
        super().__init__(
            f"policy tier mismatch for dataset {dataset!r}: the ledger binds it to tier "
            f"{bound!r} (its earlier charges were made under it) but this run has {stated}; "
            "bind the dataset to that tier in the policy file and set ledger.policy"
        )

    def __reduce__(self) -> tuple[type[TierMismatch], tuple[str, str, str | None]]:
        return (type(self), (self.dataset, self.bound, self.given))
