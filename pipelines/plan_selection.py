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
from pipelines.config import JobConfig
from pipelines.config.key_generators import describe_generated, generated_key_count
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


def plan_selection(config: JobConfig, bounds: ContributionBounds, split: BudgetSplit) -> Selection:
    """The selection rule of ``config``, built and within its limits (docs/privacy.md §6)."""
    if not split.private:
        return public_partitions(config)
    rule_epsilon = split.selection_epsilon()
    check_share(rule_epsilon, "selection")
    min_units = config.partition_selection.min_units
    mechanism = config.partition_selection.mechanism
    l0 = bounds.max_partitions_per_unit
    delta = split.selection_delta
    if mechanism == "truncated_geometric":
        rule = TruncatedGeometricSelection(rule_epsilon, delta, l0, min_units)
        check_keep_table(rule, "budget.delta / 2" if split.gaussian else "budget.delta")
        return rule
    threshold: LaplaceThresholdSelection | GaussianThresholdSelection = (
        LaplaceThresholdSelection(rule_epsilon, delta, l0, min_units)
        if mechanism == "laplace_threshold"
        else GaussianThresholdSelection(rule_epsilon, delta, l0, min_units)
    )
    check_threshold(threshold)
    return threshold
