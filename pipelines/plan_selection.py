"""The partition-selection part of the plan: a private rule, or public keys.

Every selection object decides for itself: ``keep(units, draws)`` gives one vectorised
keep decision per candidate partition (docs/privacy.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from dp_ops.calibration import ContributionBounds
from dp_ops.selection_rules import (
    GaussianThresholdSelection,
    LaplaceThresholdSelection,
    RandomDraws,
    SelectionRule,
    TruncatedGeometricSelection,
)
from pipelines.config import ConfigError, JobConfig
from pipelines.config.key_generators import describe_generated, generated_key_count
from pipelines.metric_kinds import kind_of
from pipelines.plan_limits import check_keep_table, check_share, check_threshold

if TYPE_CHECKING:
    from pipelines.budget_split import BudgetSplit


@dataclass(frozen=True)
class PublicPartitions:
    """Partition keys from a public source: every key is released, no budget is spent."""

    provenance: str
    generated_keys: int | None = None  # the product of the config's values, if any
    keys_file: bool = True  # whether a keys file's keys are part of the product
    mechanism: Literal["public"] = "public"

    def keep(self, units: NDArray[np.int64], draws: RandomDraws) -> NDArray[np.bool_]:
        """Every public key is kept (it is released whether or not the data has it)."""
        return np.ones(len(units), dtype=bool)


Selection = SelectionRule | PublicPartitions


def public_partitions(config: JobConfig) -> PublicPartitions:
    """The public keys' provenance: the keys file, the generated values, or their product.

    Generated keys are public by construction (a function of the config alone).
    """
    keys = config.partition_selection.public_keys
    assert keys is not None  # guaranteed by the config validator
    file_text = keys.path or keys.table or ""
    if keys.values is None:
        return PublicPartitions(provenance=keys.provenance or file_text)
    generated = f"generated from the config: {describe_generated(keys.values)}"
    parts = [f"{file_text} × {generated}" if keys.has_file else generated]
    parts += [keys.provenance] if keys.provenance else []
    return PublicPartitions(
        provenance="; ".join(parts),
        generated_keys=generated_key_count(keys.values),
        keys_file=keys.has_file,
    )


@dataclass(frozen=True)
class SelectionChoice:
    """The selection of a plan: its rule, the released privacy_id_count it thresholds
    (post-aggregation thresholding; None: the rule draws its own noisy count), and why
    this rule (``auto`` compares the candidates on the plan alone)."""

    rule: Selection
    reuses: str | None
    reason: str


#: The rules ``auto`` compares, in the order that wins ties.
AUTO_CANDIDATES = ("truncated_geometric", "laplace_threshold", "gaussian_threshold")


def reusable_count(config: JobConfig) -> str | None:
    """The privacy_id_count output a threshold rule may select on, if the config allows."""
    if not config.partition_selection.post_aggregation:
        return None
    return next((m.output_name for m in config.metrics if kind_of(m.metric).selection_count), None)


def units_for_half(rule: SelectionRule) -> int:
    """The fewest units at which ``rule`` keeps a partition with probability >= 1/2.

    Keep probabilities grow with the unit count, so a doubling then a bisection finds it.
    """
    high = 1
    while rule.keep_probability(high) < 0.5:
        high *= 2
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if rule.keep_probability(middle) >= 0.5 else (middle, high)
    return high


def _rule(
    mechanism: str, config: JobConfig, bounds: ContributionBounds, split: BudgetSplit
) -> tuple[SelectionRule, str | None]:
    """One rule at its share (a threshold rule that reuses the privacy_id_count adds the
    count's share to selection's), checked against its limits."""
    reuses = None if mechanism == "truncated_geometric" else reusable_count(config)
    names = ["selection"] if reuses is None else ["selection", reuses]
    rule_epsilon = split.selection_epsilon(names)
    check_share(rule_epsilon, "selection")
    min_units = config.partition_selection.min_units
    l0, delta = bounds.max_partitions_per_unit, split.selection_delta
    if mechanism == "truncated_geometric":
        rule = TruncatedGeometricSelection(rule_epsilon, delta, l0, min_units)
        check_keep_table(rule, "budget.delta / 2" if split.gaussian else "budget.delta")
        return rule, None
    threshold: LaplaceThresholdSelection | GaussianThresholdSelection = (
        LaplaceThresholdSelection(rule_epsilon, delta, l0, min_units)
        if mechanism == "laplace_threshold"
        else GaussianThresholdSelection(rule_epsilon, delta, l0, min_units)
    )
    check_threshold(threshold)
    return threshold, reuses


def _auto(config: JobConfig, bounds: ContributionBounds, split: BudgetSplit) -> SelectionChoice:
    """The candidate that keeps half at the fewest units (ties: the earlier candidate)."""
    found: list[tuple[int, str, SelectionRule, str | None]] = []
    refusals: list[str] = []
    for mechanism in AUTO_CANDIDATES:
        try:
            rule, reuses = _rule(mechanism, config, bounds, split)
        except ConfigError as error:
            refusals.append(str(error))
            continue
        found.append((units_for_half(rule), mechanism, rule, reuses))
    if not found:
        raise ConfigError(f"partition_selection.mechanism (auto): no rule fits: {refusals[0]}")
    best = min(found, key=lambda item: (item[0], AUTO_CANDIDATES.index(item[1])))
    compared = ", ".join(f"{name} {units:,}" for units, name, _, _ in found)
    reason = (
        f"auto: {best[1]} keeps a partition with probability 1/2 at the fewest units "
        f"(units for 1/2: {compared})"
    )
    return SelectionChoice(best[2], best[3], reason)


def plan_selection(
    config: JobConfig, bounds: ContributionBounds, split: BudgetSplit
) -> SelectionChoice:
    """The selection of ``config``, built and within its limits (docs/privacy.md §6)."""
    if not split.private:
        return SelectionChoice(public_partitions(config), None, "public keys")
    mechanism = config.partition_selection.mechanism
    if mechanism == "auto":
        return _auto(config, bounds, split)
    rule, reuses = _rule(mechanism, config, bounds, split)
    return SelectionChoice(rule, reuses, "configured")
