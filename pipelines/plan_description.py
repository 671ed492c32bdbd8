"""The plan as `dprelease plan` prints it and the manifest records it (configuration only).

Invariant: every number here is derived from the config; nothing comes from the data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from dp_ops.accounting import GroupPrivacy
from dp_ops.grid import Grid, count_grid
from dp_ops.noise import DiscreteGaussian, DiscreteLaplace, NoiseDistribution
from dp_ops.selection_rules import ThresholdRule
from pipelines.plan import NoisyAggregate, OutputMetric, PublicPartitions, ReleasePlan, TreePlan
from pipelines.plan_metrics import RANK_ERROR_PARTITION_SIZE
from pipelines.plan_selection import Selection

PLAN_UNIT_COUNTS = (1, 2, 5, 10, 20, 50, 100)


def noise_params(noise: NoiseDistribution) -> dict[str, object]:
    """A noise distribution's kind and parameters (float and exact)."""
    if isinstance(noise, DiscreteLaplace):
        return {"kind": noise.kind, "scale": float(noise.scale), "scale_exact": str(noise.scale)}
    assert isinstance(noise, DiscreteGaussian)
    return {
        "kind": noise.kind,
        "sigma": math.sqrt(noise.sigma_squared),
        "sigma_squared_exact": str(noise.sigma_squared),
    }


def grid_of(plan: ReleasePlan, aggregate: NoisyAggregate) -> Grid:
    """Grid of an aggregate's released units (counts are on the unit grid)."""
    for output in plan.outputs:
        if output.encoding is None or not output.aggregates_column:
            continue
        if any(role != "count" and name == aggregate.name for role, name in output.sources):
            return output.encoding.grid
    return count_grid()


def describe_selection(
    selection: Selection, reuses: str | None = None, reason: str | None = None
) -> dict[str, object]:
    """The selection rule as printed by `plan` and stored in the manifest: with
    ``reuses``, the privacy_id_count it thresholds; with ``reason``, why this rule."""
    if isinstance(selection, PublicPartitions):
        return {
            "mechanism": "public",
            "provenance": selection.provenance,
            "epsilon": 0.0,
            "delta": 0.0,
        }
    out: dict[str, object] = {
        "mechanism": selection.spend().mechanism,
        "epsilon": selection.epsilon,
        "delta": selection.delta,
        "epsilon_per_partition": selection.epsilon_p,
        "delta_per_partition": selection.delta_p,
        "min_units": selection.min_units,
        "keep_probability_by_units": {
            str(n): selection.keep_probability(n) for n in PLAN_UNIT_COUNTS
        },
    }
    if isinstance(selection, ThresholdRule):
        out["threshold"] = selection.threshold
        out["threshold_noise"] = noise_params(selection.noise)
        out["post_aggregation"] = reuses is not None
        if reuses is not None:
            out["thresholds_released"] = reuses
    if reason is not None:
        out["choice"] = reason
    return out


def _mechanism(plan: ReleasePlan, aggregate: NoisyAggregate) -> dict[str, object]:
    grid = grid_of(plan, aggregate)
    return {
        "name": aggregate.name,
        "noise": noise_params(aggregate.noise),
        "grid": grid.step,
        "l1_sensitivity": float(aggregate.sensitivity.l1),
        "l2_sensitivity": aggregate.sensitivity.l2,
        "per_partition_sensitivity": aggregate.sensitivity.per_partition,
        "std": aggregate.noise.std() * grid.step,
        "ci_half_width": aggregate.ci_half_width * grid.step,
        "spend": aggregate.spend.to_dict(),
    }


def shared_sum_entry(output: OutputMetric) -> dict[str, object]:
    """A shared sum's derivation: the output whose parts it reads, the mechanisms, and
    its noise std and interval half-width in value units (post-processing, no spend)."""
    shared, encoding = output.shared, output.encoding
    assert shared is not None and encoding is not None
    step = encoding.grid.step
    return {
        "output": shared.lender,
        "mechanisms": [shared.value, shared.count],
        "rule": (
            f"grid/2 * (noisy '{shared.value}' + noisy '{shared.count}' * {shared.offset}): "
            "the sum of the values the mean's normalised sum and count describe"
        ),
        "std": shared.noise.std() * step,
        "ci_half_width": shared.half_width * step,
    }


def _tree_mechanism(tree: TreePlan) -> dict[str, object]:
    """A quantile tree as a mechanism: node-count noise in counts (grid 1), its public
    shape and the expected rank error at RANK_ERROR_PARTITION_SIZE values (§4b)."""
    shape, nodes = tree.shape, tree.nodes
    return {
        "name": nodes.name,
        "noise": noise_params(nodes.noise),
        "grid": 1.0,
        "l1_sensitivity": float(nodes.sensitivity.l1),
        "l2_sensitivity": nodes.sensitivity.l2,
        "per_partition_sensitivity": nodes.sensitivity.per_partition,
        "std": nodes.noise.std(),
        "ci_half_width": float(nodes.ci_half_width),
        "spend": nodes.spend.to_dict(),
        "tree": {
            "column": tree.column,
            "lower": shape.lower,
            "upper": shape.upper,
            "height": shape.height,
            "branching": shape.branching,
            "leaves": shape.leaves,
            "leaf_width": (shape.upper - shape.lower) / shape.leaves,
            "ranks": list(tree.ranks),
            "expected_rank_error": tree.expected_rank_error,
            "rank_error_partition_size": RANK_ERROR_PARTITION_SIZE,
        },
    }


def _public_key_count(selection: Selection) -> dict[str, object]:
    """How many public keys the release lists, as far as the config alone tells."""
    if not isinstance(selection, PublicPartitions) or selection.generated_keys is None:
        return {}  # a keys file alone: its count is known only once it is read
    generated = selection.generated_keys
    return {
        "public_keys": {
            "count": generated if not selection.keys_file else None,
            "generated": generated,
            "times_keys_file": selection.keys_file,
        }
    }


def group_privacy_rows(table: Iterable[GroupPrivacy]) -> list[dict[str, object]]:
    """The group-privacy table as JSON rows: group size, epsilon, delta."""
    return [{"group_size": g.group_size, "epsilon": g.epsilon, "delta": g.delta} for g in table]


def describe_plan(plan: ReleasePlan) -> dict[str, object]:
    """The plan as a JSON-ready mapping: budget split, mechanisms, selection, totals.

    Invariant: holds configuration-derived numbers only, nothing from the data.
    """
    composition, facts = plan.composition, plan.facts
    shares: dict[str, float] = {o.name: o.budget_share for o in plan.outputs}
    if not isinstance(plan.selection, PublicPartitions):
        shares["selection"] = plan.split.weights["selection"]
    return {
        "budget": {
            "epsilon": facts.budget_epsilon,
            "delta": facts.budget_delta,
            "noise": facts.noise,
            "shares": shares,
        },
        "contribution_bounds": {
            "max_partitions_per_unit": plan.bounds.max_partitions_per_unit,
            "max_rows_per_unit_per_partition": plan.bounds.max_rows_per_unit_per_partition,
        },
        "selection": describe_selection(
            plan.selection, plan.selection_reuses, plan.selection_reason
        )
        | _public_key_count(plan.selection),
        "mechanisms": [_mechanism(plan, a) for a in plan.aggregates]
        + [_tree_mechanism(o.tree) for o in plan.trees if o.tree is not None],
        "shared_parts": {o.name: shared_sum_entry(o) for o in plan.outputs if o.shared},
        "confidence_level": plan.confidence_level,
        "totals": {
            "epsilon": composition.epsilon,
            "epsilon_exact": composition.epsilon_exact,  # the exact rational total (§8)
            "delta": composition.delta,
            "rho": composition.rho,
            "conversion_delta": composition.conversion_delta,
        },
        "group_privacy": group_privacy_rows(plan.group_privacy),
    }
