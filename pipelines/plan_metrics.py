"""The metrics' part of the plan: encodings, sensitivities and calibrated noise.

Invariant: every sensitivity is ``sensitivity_for_partition_bound`` of a part's
per-partition bound (``pipelines.metric_kinds``), which follows from the contribution
bounds and the value bounds alone; every noise scale is calibrated from the metric's
budget share, split evenly over the parts it spends on (docs/privacy.md §4, §5). A tree
kind (quantiles) spends its whole share on one noisy quantile tree: its node counts have
``tree_sensitivity`` (L1 = L0·Linf·height), all its ranks are read from the one tree
(docs/privacy.md §4b).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from dp_ops.accounting import MechanismSpend
from dp_ops.calibration import (
    ContributionBounds,
    Sensitivity,
    gaussian_for_rho,
    laplace_for_epsilon,
    sensitivity_for_partition_bound,
)
from dp_ops.grid import MAX_ABS_UNITS, Grid, choose_grid
from dp_ops.noise import DiscreteLaplace, LinearNoise, NoiseDistribution
from dp_ops.quantile_tree import TreeShape, expected_rank_error, tree_sensitivity
from dp_ops.selection_rules import ThresholdRule
from pipelines.budget_split import BudgetSplit
from pipelines.config import ConfigError, MetricConfig
from pipelines.derivation import Encoding, Role
from pipelines.metric_kinds import UNITS, MetricKind
from pipelines.plan_limits import check_noise


@dataclass(frozen=True)
class NoisyAggregate:
    """One integer aggregate column that receives noise once per partition."""

    name: str  # mechanism name in the manifest, e.g. "count", "mean_rating.normalized_sum"
    source: str  # column of the aggregated table
    noise: NoiseDistribution
    sensitivity: Sensitivity
    spend: MechanismSpend
    ci_half_width: int  # grid units, at the plan's confidence level


#: The partition size (values) at which the plan states a tree's expected rank error.
RANK_ERROR_PARTITION_SIZE = 1000


@dataclass(frozen=True)
class TreePlan:
    """One quantile metric's noisy tree: its public shape, ranks and node-count noise.

    ``nodes`` is the noise of every node count (one mechanism named after the metric, not in
    the plan's ``aggregates``: no aggregated column receives it); ``expected_rank_error`` is
    the expected |released rank - true rank| at RANK_ERROR_PARTITION_SIZE values.
    """

    column: str
    shape: TreeShape
    ranks: tuple[float, ...]
    nodes: NoisyAggregate
    expected_rank_error: float


@dataclass(frozen=True)
class CalibratedMetric:
    """One metric's own noisy aggregates, its encoding, and its parts' mechanism names."""

    aggregates: tuple[NoisyAggregate, ...]
    encoding: Encoding | None
    sources: tuple[tuple[Role, str], ...]  # (role, mechanism name)
    tree: TreePlan | None = None  # a tree kind's noisy tree (then no aggregates)


def _spend(name: str, noise: NoiseDistribution, sensitivity: Sensitivity) -> MechanismSpend:
    if isinstance(noise, DiscreteLaplace):
        return MechanismSpend(
            name=name,
            mechanism=noise.kind,
            epsilon=float(sensitivity.l1 / noise.scale),
            delta=0.0,
            exact_epsilon=sensitivity.l1 / noise.scale,  # exact rational (docs/privacy.md §8)
            l1_sensitivity=float(sensitivity.l1),
            l2_sensitivity=sensitivity.l2,
            noise_scale=float(noise.scale),
        )
    return MechanismSpend(
        name=name,
        mechanism=noise.kind,
        epsilon=0.0,
        delta=0.0,
        rho=float(sensitivity.l2_squared / (2 * noise.sigma_squared)),
        l1_sensitivity=float(sensitivity.l1),
        l2_sensitivity=sensitivity.l2,
        noise_scale=math.sqrt(noise.sigma_squared),
    )


def _calibrate(
    name: str,
    source: str,
    sensitivity: Sensitivity,
    budget: tuple[str, Fraction, float, float],
    metric: tuple[int, str],
) -> NoisyAggregate:
    """Noise for one aggregate: Laplace from an epsilon share, Gaussian from a rho share.

    ``budget`` is (noise kind, epsilon, rho, alpha); ``metric`` is the (index, output name)
    of the config metric the aggregate serves: a refusal by the noise limits names it.
    """
    noise_kind, epsilon, rho, alpha = budget
    noise: NoiseDistribution = (
        laplace_for_epsilon(sensitivity, epsilon)
        if noise_kind == "laplace"
        else gaussian_for_rho(sensitivity, rho)
    )
    index, output = metric
    check_noise(
        noise,
        f"metrics[{index}] ({output})",
        f"raise budget.epsilon or budget.weights.{output}, or lower "
        "contribution_bounds.max_partitions_per_unit or "
        "contribution_bounds.max_rows_per_unit_per_partition",
    )
    spend = _spend(name, noise, sensitivity)
    return NoisyAggregate(name, source, noise, sensitivity, spend, noise.ci_half_width(alpha))


def _value_noise_scale(
    noise_kind: str, l0: int, per_partition_value: float, epsilon: Fraction, rho: float
) -> float:
    """Noise scale in value units before gridding (public: bounds and budget only)."""
    if noise_kind == "laplace":
        return l0 * per_partition_value / float(epsilon)
    return math.sqrt(l0) * per_partition_value / math.sqrt(2 * rho)


def _grid(index: int, name: str, kind: MetricKind, lower: float, upper: float, res: float) -> Grid:
    """The grid of metric ``index``, refusing bounds its aggregates cannot resolve.

    Every encoded value must stay within MAX_ABS_UNITS (2**40) grid units, so bounds that are
    narrow for their magnitude (or for the finest grid, 2**-1000) round to one grid point:
    a mean or variance then has width 0, a sum of 0 and 0 no unit at all, and no
    sensitivity to calibrate noise to (docs/privacy.md §3).
    """
    narrow = ConfigError(
        f"metrics[{index}] ({name}): bounds [{lower!r}, {upper!r}] fall on a single point of "
        f"their grid (every encoded value must stay within 2**40 grid units, MAX_ABS_UNITS "
        f"= {MAX_ABS_UNITS}): widen the bounds, or shift or rescale the column"
    )
    if not (math.isfinite(res) and res > 0):
        raise narrow
    try:
        grid = choose_grid(lower, upper, res)
    except ValueError:
        raise narrow from None
    assert kind.measure is not None
    if kind.measure.degenerate(*grid.units_range(lower, upper)):
        raise narrow
    return grid


def _encoding(
    index: int,
    metric: MetricConfig,
    kind: MetricKind,
    bounds: ContributionBounds,
    budget: tuple[str, Fraction, float],
) -> Encoding:
    """The metric's grid: it resolves both the noise and the value range (both public)."""
    assert kind.measure is not None and metric.column is not None
    assert metric.lower is not None and metric.upper is not None
    lower, upper = metric.lower, metric.upper
    noise_kind, eps, rho = budget
    value_bound = bounds.max_rows_per_unit_per_partition * kind.measure.value_bound(lower, upper)
    scale = _value_noise_scale(noise_kind, bounds.max_partitions_per_unit, value_bound, eps, rho)
    resolution = min(scale, kind.measure.span(lower, upper))
    grid = _grid(index, metric.output_name, kind, lower, upper, resolution)
    lo_units, hi_units = grid.units_range(lower, upper)
    return Encoding(metric.column, lower, upper, grid, lo_units, hi_units)


def calibrate_metric(
    index: int,
    metric: MetricConfig,
    kind: MetricKind,
    bounds: ContributionBounds,
    split: BudgetSplit,
    alpha: float,
    count_name: str | None,
    share: Fraction | None = None,
) -> CalibratedMetric:
    """Calibrate metric ``index``: its share split evenly over the parts it spends on.

    A part that is a shared count reads the released COUNT ``count_name`` when there is
    one (no extra spend); otherwise the metric calibrates its own count. ``share``: the
    metric's share when it differs from its weight's (a lender also spends the weights of
    the sums derived from it).
    """
    name = metric.output_name
    parts = kind.parts_for(count_name is not None)
    share = split.shares[name] if share is None else share
    eps, rho = split.share_budget(share / len(parts), name)
    encoding = (
        _encoding(index, metric, kind, bounds, (split.noise, eps, rho)) if kind.measured else None
    )
    linf = bounds.max_rows_per_unit_per_partition
    aggregates: list[NoisyAggregate] = []
    sources: list[tuple[Role, str]] = []
    for part in kind.parts:
        if part not in parts:
            assert count_name is not None
            sources.append((part.role, count_name))
            continue
        sensitivity = sensitivity_for_partition_bound(bounds, part.per_partition(linf, encoding))
        mechanism = part.mechanism(name)
        aggregates.append(
            _calibrate(
                mechanism,
                part.source(name),
                sensitivity,
                (split.noise, eps, rho, alpha),
                (index, name),
            )
        )
        sources.append((part.role, mechanism))
    return CalibratedMetric(tuple(aggregates), encoding, tuple(sources))


def calibrate_tree(
    index: int,
    metric: MetricConfig,
    bounds: ContributionBounds,
    split: BudgetSplit,
    alpha: float,
    share: Fraction,
) -> CalibratedMetric:
    """Calibrate quantile metric ``index``: its whole ``share`` on one tree's node counts."""
    assert metric.column is not None and metric.lower is not None and metric.upper is not None
    assert metric.ranks is not None
    name = metric.output_name
    shape = TreeShape(metric.lower, metric.upper)
    sensitivity = tree_sensitivity(
        bounds.max_partitions_per_unit, bounds.max_rows_per_unit_per_partition, shape.height
    )
    eps, rho = split.share_budget(share, name)
    nodes = _calibrate(
        name, metric.column, sensitivity, (split.noise, eps, rho, alpha), (index, name)
    )
    error = expected_rank_error(shape, nodes.noise, RANK_ERROR_PARTITION_SIZE)
    tree = TreePlan(metric.column, shape, tuple(metric.ranks), nodes, error)
    return CalibratedMetric((), None, (("value", name),), tree)


def reused_count(
    name: str, rule: ThresholdRule, bounds: ContributionBounds, alpha: float
) -> CalibratedMetric:
    """The privacy_id_count a threshold rule selects on (post-aggregation thresholding).

    Its noisy value is the rule's noisy unit count, drawn once: its noise is the rule's
    and its spend is inside the rule's (ε, δ), so it spends 0 here (docs/privacy.md §6).
    """
    sensitivity = sensitivity_for_partition_bound(bounds, 1)  # one unit adds 1 to L0 keys
    noise = rule.noise
    spend = MechanismSpend(
        name=name,
        mechanism=noise.kind,
        epsilon=0.0,
        delta=0.0,
        exact_epsilon=Fraction(0),
        l1_sensitivity=float(sensitivity.l1),
        l2_sensitivity=sensitivity.l2,
        noise_scale=float(noise.std()),
    )
    aggregate = NoisyAggregate(name, UNITS, noise, sensitivity, spend, noise.ci_half_width(alpha))
    return CalibratedMetric((aggregate,), None, (("value", name),))


@dataclass(frozen=True)
class SharedSum:
    """A sum derived from a lender's noisy normalised sum Σy and its count C (no noise).

    In half-grid units (step g/2 of the lender's grid g): S' = Σy + C·(lo_u + hi_u), which
    is 2·Σunits for the exact aggregates (y = 2·units − lo_u − hi_u). Post-processing of
    the two noisy values (docs/privacy.md §7, "Shared parts").
    """

    name: str  # the sum's output name (the derived integer's name in the noise step)
    lender: str  # the output whose parts it reads
    value: str  # mechanism name of the lender's noisy normalised sum
    count: str  # mechanism name of the noisy count the lender divides by
    offset: int  # lo_u + hi_u of the lender's encoding
    noise: LinearNoise
    half_width: int  # half-grid units, at the plan's confidence level


def shared_sum(
    name: str,
    lender: str,
    encoding: Encoding,
    sources: dict[Role, str],
    aggregates: dict[str, NoisyAggregate],
    alpha: float,
) -> tuple[Encoding, SharedSum]:
    """The encoding (half the lender's grid, doubled unit bounds) and the derivation of
    the sum ``name`` from the lender's parts; nothing is calibrated or spent."""
    offset = encoding.lo_units + encoding.hi_units
    value, count = aggregates[sources["value"]], aggregates[sources["count"]]
    noise = LinearNoise(((1, value.noise), (offset, count.noise)))
    grid = Grid(encoding.grid.exponent - 1)
    derived = Encoding(
        encoding.column,
        encoding.lower,
        encoding.upper,
        grid,
        2 * encoding.lo_units,
        2 * encoding.hi_units,
    )
    shared = SharedSum(
        name, lender, value.name, count.name, offset, noise, noise.ci_half_width(alpha)
    )
    return derived, shared
