"""Policy tiers: a parameter standard per data sensitivity, enforced before Spark starts.

A policy file (YAML, ``ledger.policy``) names tiers, each with caps, and binds each
ledger dataset to one tier::

    tiers:
      internal:
        max_epsilon: 1.0            # per release (the charge), ε
        max_delta: 1.0e-6           # per release, δ
        max_lifetime_epsilon: 10.0  # ledger.lifetime_budget.epsilon at most this
        max_lifetime_delta: 1.0e-5
        noise: [laplace, gaussian]  # allowed values of `noise`
        min_units: 10               # smallest partition_selection.min_units (private selection)
        require: [purpose, owner]   # registry.* fields that must be given
    datasets:
      ratings: internal

Invariants (docs/privacy.md §12): ``govern`` is pure (no Spark, no ledger, no data) and
runs before the ledger is opened, so a config outside its tier is refused with
``PolicyViolation`` (its own exit code), naming every broken rule and its config field,
and nothing is charged; the tier and the policy file's SHA-256 are recorded with the
charge and in the manifest; once charged under a tier, a dataset is bound to it in the
ledger (``TierMismatch``), so dropping ``ledger.policy`` does not escape it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from pipelines.config import ConfigError, JobConfig, parse_yaml
from pipelines.config.fields import _Frozen
from pipelines.config.limits import Delta, Integer, LifetimeDelta, LifetimeEpsilon, Number
from pipelines.config.yaml_loading import DuplicateKeyError, _field_path
from pipelines.errors import PolicyViolation
from pipelines.ledger import BUDGET_TOLERANCE, Registration, dataset_name
from pipelines.plan import ReleasePlan
from pipelines.release_plan import ReleasePlans

_TIER = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
RegistryField = Literal["purpose", "owner", "approval"]
NoiseKind = Literal["laplace", "gaussian"]
_ALL_NOISE: tuple[NoiseKind, ...] = ("laplace", "gaussian")


class TierConfig(_Frozen):
    """The caps of one tier: what any release of a dataset bound to it must stay within."""

    max_epsilon: Annotated[Number, Field(gt=0)] = Field(description="Largest ε one release spends.")
    max_delta: Delta = Field(default=0.0, description="Largest δ one release spends.")
    max_lifetime_epsilon: LifetimeEpsilon = Field(
        description="Largest ledger.lifetime_budget.epsilon."
    )
    max_lifetime_delta: LifetimeDelta = Field(
        default=0.0, description="Largest ledger.lifetime_budget.delta."
    )
    noise: Annotated[list[NoiseKind], Field(min_length=1)] = Field(
        default_factory=lambda: list(_ALL_NOISE), description="Allowed noise kinds."
    )
    min_units: Annotated[Integer, Field(ge=1)] = Field(
        default=1, description="Smallest partition_selection.min_units (private selection)."
    )
    require: list[RegistryField] = Field(
        default_factory=list, description="registry.* fields every release must give."
    )


class PolicyConfig(_Frozen):
    """A policy file: the tiers, and the tier of each ledger dataset."""

    tiers: Annotated[dict[str, TierConfig], Field(min_length=1)]
    datasets: dict[str, str] = Field(description="Ledger dataset name -> tier name.")

    @field_validator("tiers")
    @classmethod
    def _tier_names(cls, value: dict[str, TierConfig]) -> dict[str, TierConfig]:
        bad = sorted(name for name in value if not _TIER.match(name))
        if bad:
            raise ValueError(f"tier names must be lowercase letters, digits, '_' or '-': {bad}")
        return value

    @model_validator(mode="after")
    def _datasets_name_tiers(self) -> PolicyConfig:
        canonical: dict[str, str] = {}
        for name, tier in self.datasets.items():
            if tier not in self.tiers:
                raise ValueError(f"datasets.{name}: no tier {tier!r} (tiers: {sorted(self.tiers)})")
            key = dataset_name(name)
            if canonical.setdefault(key, tier) != tier:
                raise ValueError(f"datasets: {key!r} is bound to two tiers")
        object.__setattr__(self, "datasets", canonical)
        return self


@dataclass(frozen=True)
class Policy:
    """A validated policy file, with where it was read from and its SHA-256."""

    config: PolicyConfig
    path: str
    sha256: str


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; ConfigError naming the file and field on any problem
    (unknown keys, repeated keys, a dataset bound to an unknown tier)."""
    file = Path(path)
    try:
        data = file.read_bytes()
        raw = parse_yaml(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"ledger.policy: cannot read {file} ({type(error).__name__})") from None
    except DuplicateKeyError as error:
        raise ConfigError(f"ledger.policy {file}: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"ledger.policy {file}: the top level must be a mapping")
    try:
        config = PolicyConfig.model_validate(raw)
    except ValidationError as error:
        lines = [
            f"{_field_path(tuple(item['loc']))}: "
            + (
                "unknown field"
                if item["type"] == "extra_forbidden"
                else str(item["msg"]).removeprefix("Value error, ")
            )
            for item in error.errors(include_url=False, include_input=False)
        ]
        raise ConfigError(
            f"ledger.policy {file}: invalid policy\n  " + "\n  ".join(lines)
        ) from None
    return Policy(config, str(file), hashlib.sha256(data).hexdigest())


def _within(value: float, cap: float) -> bool:
    """value ≤ cap, exactly, with the ledger's representation slack (1e-12 relative)."""
    return Fraction(value) <= Fraction(cap) * (1 + BUDGET_TOLERANCE)


def broken_rules(tier: TierConfig, config: JobConfig, charge: tuple[float, float]) -> list[str]:
    """Every rule of ``tier`` the job breaks, each naming the rule, the config field and
    both values (configuration values only, never data). ``charge``: the run's whole
    (epsilon, delta), over every table of the release."""
    lifetime = config.ledger.lifetime_budget
    caps = (
        ("max_epsilon", "budget.epsilon (the charge)", charge[0], tier.max_epsilon),
        ("max_delta", "budget.delta (the charge)", charge[1], tier.max_delta),
        (
            "max_lifetime_epsilon",
            "ledger.lifetime_budget.epsilon",
            lifetime.epsilon,
            tier.max_lifetime_epsilon,
        ),
        (
            "max_lifetime_delta",
            "ledger.lifetime_budget.delta",
            lifetime.delta,
            tier.max_lifetime_delta,
        ),
    )
    broken = [
        f"{rule}: {field} is {value!r}, the tier allows at most {cap!r}"
        for rule, field, value, cap in caps
        if not _within(value, cap)
    ]
    if config.noise not in tier.noise:
        broken.append(f"noise: noise is {config.noise!r}, the tier allows {tier.noise}")
    selection = config.partition_selection
    if selection.mechanism != "public" and selection.min_units < tier.min_units:
        broken.append(
            f"min_units: partition_selection.min_units is {selection.min_units}, the tier "
            f"needs at least {tier.min_units}"
        )
    for name in tier.require:
        if getattr(config.registry, name) is None:
            broken.append(f"require: registry.{name} is required by the tier")
    return broken


def _broken(tier: TierConfig, plans: ReleasePlan | ReleasePlans, config: JobConfig) -> list[str]:
    """The broken rules of one table, or of every table of a release (named), once each."""
    if isinstance(plans, ReleasePlan):
        charge = (plans.composition.epsilon, plans.composition.delta)
        return broken_rules(tier, config, charge)
    charge = (plans.epsilon, plans.delta)
    out: list[str] = []
    for table in plans.tables:
        for rule in broken_rules(tier, table.config, charge):
            shared = rule.startswith(("max_", "require"))  # release-level fields
            named = rule if shared else f"tables ({table.spec.name}) {rule}"
            if named not in out:
                out.append(named)
    return out


def govern(config: JobConfig, plan: ReleasePlan | ReleasePlans) -> Registration:
    """The registration of a run of ``config``: its tier (if ``ledger.policy`` is set) and
    registry fields. Raises PolicyViolation naming every broken rule, or a dataset the
    policy binds to no tier; ConfigError for an unreadable or invalid policy file. With
    the plans of a release of several tables, every table obeys the tier and the charge
    caps apply to the release's total."""
    registry = config.registry
    fields = {"purpose": registry.purpose, "owner": registry.owner, "approval": registry.approval}
    if config.ledger.policy is None:
        return Registration(**fields)
    policy = load_policy(config.ledger.policy)
    dataset = config.ledger.dataset
    tier_name = policy.config.datasets.get(dataset)
    if tier_name is None:
        raise PolicyViolation(
            f"policy {policy.path}: dataset {dataset!r} (ledger.dataset) is bound to no tier; "
            "bind it under 'datasets' in the policy file"
        )
    broken = _broken(policy.config.tiers[tier_name], plan, config)
    if broken:
        raise PolicyViolation(
            f"policy tier {tier_name!r} of dataset {dataset!r} ({policy.path}) refuses the "
            f"release: {'; '.join(broken)}; nothing was charged"
        )
    return Registration(tier=tier_name, policy_sha256=policy.sha256, **fields)


def governance_statement(registration: Registration) -> dict[str, object]:
    """The manifest's ``governance`` record: the tier, the policy digest and the registry
    fields (configuration only)."""
    return registration.to_dict()
