"""The release plan: everything decided before any data is read.

Invariants: the plan is a pure function of the config (no data, no randomness);
every sensitivity is derived from the contribution bounds and value bounds; every
noise scale is calibrated from a budget share; the composition of all mechanisms
never exceeds the configured (epsilon, delta); every derived number is one the exact
samplers and the exact integer sums support (``build_plan`` refuses the rest with a
``ConfigError`` naming the fields, so `dprelease plan` and `dprelease run` refuse the same
configs, before Spark starts and before the ledger is read; docs/privacy.md §3, §5, §6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from dp_ops.accounting import (
    Composition,
    GroupPrivacy,
    MechanismSpend,
    compose,
    group_privacy_table,
)
from dp_ops.calibration import (
    ContributionBounds,
    Sensitivity,
    count_sensitivity,
    exact_shares,
    float_down,
    gaussian_for_rho,
    laplace_for_epsilon,
    privacy_id_count_sensitivity,
    rho_for_epsilon_delta,
    sensitivity_for_partition_bound,
    sum_sensitivity,
)
from dp_ops.grid import MAX_ABS_UNITS, Grid, choose_grid, count_grid
from dp_ops.noise import DiscreteGaussian, DiscreteLaplace, NoiseDistribution
from dp_ops.selection import (
    GaussianThresholdSelection,
    LaplaceThresholdSelection,
    SelectionRule,
    TruncatedGeometricSelection,
    per_partition_budget,
)
from pipelines.config import ConfigError, JobConfig
from pipelines.plan_limits import (
    ArithmeticBoundError,
    check_exact_arithmetic,
    check_keep_table,
    check_noise,
    check_rounding,
    check_share,
    check_threshold,
)

__all__ = ["ArithmeticBoundError", "ReleasePlan", "build_plan", "check_exact_arithmetic"]

# Aggregated-table columns (one row per partition) that the noise step reads.
UNITS = "units"
ROWS = "rows"
PLAN_UNIT_COUNTS = (1, 2, 5, 10, 20, 50, 100)


@dataclass(frozen=True)
class PublicPartitions:
    """Partition keys from a public source: every key is released, no budget is spent."""

    provenance: str
    mechanism: Literal["public"] = "public"


@dataclass(frozen=True)
class Encoding:
    """How one metric's measured column becomes integers: clamp, then round to grid units.

    ``units = bround(clamp(x, lower, upper) / grid.step)`` lies in [lo_units, hi_units].
    Mean and variance use the centred value ``y = 2*units - (lo_units + hi_units)``, |y| <= width.
    """

    column: str
    lower: float
    upper: float
    grid: Grid
    lo_units: int
    hi_units: int

    @property
    def width(self) -> int:
        """Bound on |y| for the centred integer value y."""
        return self.hi_units - self.lo_units

    @property
    def max_abs_units(self) -> int:
        """Bound on |units| for sums."""
        return max(abs(self.lo_units), abs(self.hi_units))


@dataclass(frozen=True)
class NoisyAggregate:
    """One integer aggregate column that receives noise once per partition."""

    name: str  # mechanism name in the manifest, e.g. "count", "mean_rating.normalized_sum"
    source: str  # column of the aggregated table
    noise: NoiseDistribution
    sensitivity: Sensitivity
    spend: MechanismSpend
    ci_half_width: int  # grid units, at the plan's confidence level


@dataclass(frozen=True)
class OutputMetric:
    """One released statistic and the noisy aggregates it is computed from."""

    name: str
    metric: str
    encoding: Encoding | None
    value_source: str | None  # NoisyAggregate.name of the numerator (None for pure counts)
    count_source: str | None  # NoisyAggregate.name of the denominator (mean, variance)
    square_source: str | None  # NoisyAggregate.name of the sum of squares (variance)
    budget_share: float


@dataclass(frozen=True)
class ReleasePlan:
    """All mechanisms of one release, calibrated, with their composition."""

    config: JobConfig
    bounds: ContributionBounds
    selection: SelectionRule | PublicPartitions
    aggregates: tuple[NoisyAggregate, ...]
    outputs: tuple[OutputMetric, ...]
    composition: Composition
    group_privacy: tuple[GroupPrivacy, ...]
    alpha: float

    def aggregate(self, name: str) -> NoisyAggregate:
        """The noisy aggregate called ``name``."""
        for item in self.aggregates:
            if item.name == name:
                return item
        raise KeyError(name)

    @property
    def encodings(self) -> dict[str, Encoding]:
        """Encodings by output metric name (measured metrics only)."""
        return {o.name: o.encoding for o in self.outputs if o.encoding is not None}


def _calibrate(
    name: str,
    source: str,
    sensitivity: Sensitivity,
    noise_kind: str,
    epsilon: Fraction,
    rho: float,
    alpha: float,
    metric: tuple[int, str],
) -> NoisyAggregate:
    """Noise for one aggregate: Laplace from an epsilon share, Gaussian from a rho share.

    ``metric`` is the (index, output name) of the config metric the aggregate serves: a
    refusal by the noise limits names it (docs/privacy.md §5).
    """
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
    if isinstance(noise, DiscreteLaplace):
        spend = MechanismSpend(
            name=name,
            mechanism=noise.kind,
            epsilon=float(sensitivity.l1 / noise.scale),
            delta=0.0,
            exact_epsilon=sensitivity.l1 / noise.scale,  # exact rational (§8)
            l1_sensitivity=float(sensitivity.l1),
            l2_sensitivity=sensitivity.l2,
            noise_scale=float(noise.scale),
        )
    else:
        spend = MechanismSpend(
            name=name,
            mechanism=noise.kind,
            epsilon=0.0,
            delta=0.0,
            rho=float(sensitivity.l2_squared / (2 * noise.sigma_squared)),
            l1_sensitivity=float(sensitivity.l1),
            l2_sensitivity=sensitivity.l2,
            noise_scale=math.sqrt(noise.sigma_squared),
        )
    return NoisyAggregate(name, source, noise, sensitivity, spend, noise.ci_half_width(alpha))


def _value_noise_scale(
    noise_kind: str, l0: int, per_partition_value: float, epsilon: Fraction, rho: float
) -> float:
    """Noise scale in value units before gridding (public: bounds and budget only)."""
    if noise_kind == "laplace":
        return l0 * per_partition_value / float(epsilon)
    return math.sqrt(l0) * per_partition_value / math.sqrt(2 * rho)


def _encode(
    index: int, name: str, metric: str, lower: float, upper: float, resolution: float
) -> Grid:
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
    if not (math.isfinite(resolution) and resolution > 0):
        raise narrow
    try:
        grid = choose_grid(lower, upper, resolution)
    except ValueError:
        raise narrow from None
    lo_units, hi_units = grid.units_range(lower, upper)
    if (lo_units == hi_units == 0) if metric == "sum" else (lo_units == hi_units):
        raise narrow
    return grid


def build_plan(config: JobConfig) -> ReleasePlan:
    """Derive every mechanism of the release from the config alone.

    Invariants: the returned composition's (epsilon, delta) is at most the configured
    budget; every noise distribution is within the sampler limits, every selection rule
    (keep table or threshold) is built and within its limits, and the exact-arithmetic
    proof holds (docs/privacy.md §3, §5, §6). Otherwise a ConfigError names the field.
    """
    check_rounding(config)
    bounds = ContributionBounds(
        config.contribution_bounds.max_partitions_per_unit,
        config.contribution_bounds.max_rows_per_unit_per_partition,
    )
    l0, linf = bounds.max_partitions_per_unit, bounds.max_rows_per_unit_per_partition
    alpha = 1.0 - config.confidence_level
    if not 0.0 < alpha < 1.0:
        raise ConfigError(
            f"confidence_level: {config.confidence_level!r} is too close to 0 for double "
            "arithmetic (1 - confidence_level rounds to 1): give at least 1e-15"
        )
    # Exact rationals (docs/privacy.md §8): shares sum to exactly 1 and epsilon is the
    # double's exact value, so the composed total is epsilon itself, with no rounding.
    shares = exact_shares(config.weights)
    epsilon, delta = Fraction(config.budget.epsilon), config.budget.delta
    private = config.partition_selection.mechanism != "public"
    gaussian = config.noise == "gaussian"

    # Selection takes its epsilon share and, for Laplace noise, all of delta; with
    # Gaussian noise delta is halved between selection and the rho conversion.
    selection_delta = (delta / 2 if gaussian else delta) if private else 0.0
    conversion_delta = delta - selection_delta if gaussian else 0.0
    selection: SelectionRule | PublicPartitions
    spends: list[MechanismSpend] = []
    if private:
        # The largest double at or below the exact share: selection spends at most it.
        rule_epsilon = float_down(epsilon * shares["selection"])
        check_share(rule_epsilon, "selection")
        min_units = config.partition_selection.min_units
        mechanism = config.partition_selection.mechanism
        if mechanism == "truncated_geometric":
            selection = TruncatedGeometricSelection(rule_epsilon, selection_delta, l0, min_units)
            check_keep_table(selection, "budget.delta / 2" if gaussian else "budget.delta")
        elif mechanism == "laplace_threshold":
            selection = LaplaceThresholdSelection(rule_epsilon, selection_delta, l0, min_units)
            check_threshold(selection)
        else:
            selection = GaussianThresholdSelection(rule_epsilon, selection_delta, l0, min_units)
            check_threshold(selection)
        spends.append(selection.spend())
    else:
        keys = config.partition_selection.public_keys
        assert keys is not None  # guaranteed by the config validator
        selection = PublicPartitions(provenance=keys.provenance or (keys.path or keys.table or ""))

    metric_share = sum((shares[m.output_name] for m in config.metrics), Fraction(0))
    rho_total = (
        rho_for_epsilon_delta(float_down(epsilon * metric_share), conversion_delta)
        if gaussian
        else 0.0
    )

    def budget_of(share: Fraction, key: str) -> tuple[Fraction, float]:
        """(epsilon, rho) for a share of the whole budget (refused if it underflows to 0)."""
        eps = epsilon * share
        rho = float_down(Fraction(rho_total) * share / metric_share) if gaussian else 0.0
        check_share(float(eps) if not gaussian else min(float(eps), rho), key)
        return eps, rho

    has_count = any(m.metric == "count" for m in config.metrics)
    count_name = next((m.output_name for m in config.metrics if m.metric == "count"), None)
    aggregates: list[NoisyAggregate] = []
    outputs: list[OutputMetric] = []
    for index, metric in enumerate(config.metrics):
        name, share = metric.output_name, shares[metric.output_name]
        here = (index, name)
        if metric.metric in ("count", "privacy_id_count"):
            sensitivity = (
                count_sensitivity(bounds)
                if metric.metric == "count"
                else privacy_id_count_sensitivity(bounds)
            )
            eps, rho = budget_of(share, name)
            source = ROWS if metric.metric == "count" else UNITS
            aggregates.append(
                _calibrate(name, source, sensitivity, config.noise, eps, rho, alpha, here)
            )
            outputs.append(OutputMetric(name, metric.metric, None, name, None, None, float(share)))
            continue
        assert metric.column is not None and metric.lower is not None and metric.upper is not None
        lower, upper = metric.lower, metric.upper
        # Split the metric's share over its parts: numerator(s), plus an own count when
        # no released count can serve as the denominator.
        parts = {"sum": 1, "mean": 2, "variance": 3}[metric.metric] - (
            1 if has_count and metric.metric != "sum" else 0
        )
        eps, rho = budget_of(share / parts, name)
        if metric.metric == "sum":
            value_bound = linf * max(abs(lower), abs(upper))
        else:
            value_bound = linf * (upper - lower) / 2
        scale = _value_noise_scale(config.noise, l0, value_bound, eps, rho)
        # The grid resolves both the noise and the value range (both public).
        span = max(abs(lower), abs(upper)) if metric.metric == "sum" else upper - lower
        grid = _encode(index, name, metric.metric, lower, upper, min(scale, span))
        lo_units, hi_units = grid.units_range(lower, upper)
        encoding = Encoding(metric.column, lower, upper, grid, lo_units, hi_units)
        if metric.metric == "sum":
            sensitivity = sum_sensitivity(bounds, encoding.max_abs_units)
            aggregates.append(
                _calibrate(name, f"sum__{name}", sensitivity, config.noise, eps, rho, alpha, here)
            )
            outputs.append(OutputMetric(name, "sum", encoding, name, None, None, float(share)))
            continue
        denominator = count_name
        if not has_count:
            denominator = f"{name}.count"
            aggregates.append(
                _calibrate(
                    denominator,
                    ROWS,
                    count_sensitivity(bounds),
                    config.noise,
                    eps,
                    rho,
                    alpha,
                    here,
                )
            )
        numerator = f"{name}.normalized_sum"
        sensitivity = sensitivity_for_partition_bound(bounds, linf * encoding.width)
        aggregates.append(
            _calibrate(numerator, f"nsum__{name}", sensitivity, config.noise, eps, rho, alpha, here)
        )
        squares = None
        if metric.metric == "variance":
            squares = f"{name}.normalized_sum_of_squares"
            sensitivity = sensitivity_for_partition_bound(bounds, linf * encoding.width**2)
            aggregates.append(
                _calibrate(
                    squares, f"nsq__{name}", sensitivity, config.noise, eps, rho, alpha, here
                )
            )
        outputs.append(
            OutputMetric(
                name, metric.metric, encoding, numerator, denominator, squares, float(share)
            )
        )

    spends.extend(a.spend for a in aggregates)
    composition = compose(spends, conversion_delta=conversion_delta)
    # The zCDP conversion is a numerical inverse, accurate to about 1e-9 relative at the
    # smallest epsilons; the composed figure is the rounded-up one, and it is what the
    # ledger charges, so a margin of 1e-8 keeps this a check for gross errors only.
    if composition.epsilon > epsilon * (1 + 1e-8) or composition.delta > delta * (1 + 1e-8):
        raise AssertionError(
            f"plan composes to ({composition.epsilon}, {composition.delta}), over the budget"
        )
    plan = ReleasePlan(
        config=config,
        bounds=bounds,
        selection=selection,
        aggregates=tuple(aggregates),
        outputs=tuple(outputs),
        composition=composition,
        group_privacy=group_privacy_table(composition.epsilon, composition.delta),
        alpha=alpha,
    )
    check_exact_arithmetic(plan)
    return plan


def _noise_params(noise: NoiseDistribution) -> dict[str, object]:
    if isinstance(noise, DiscreteLaplace):
        return {"kind": noise.kind, "scale": float(noise.scale), "scale_exact": str(noise.scale)}
    assert isinstance(noise, DiscreteGaussian)
    return {
        "kind": noise.kind,
        "sigma": math.sqrt(noise.sigma_squared),
        "sigma_squared_exact": str(noise.sigma_squared),
    }


def _grid_of(plan: ReleasePlan, aggregate: NoisyAggregate) -> Grid:
    """Grid of an aggregate's released units (counts are on the unit grid)."""
    for output in plan.outputs:
        if output.encoding is not None and aggregate.name in (
            output.value_source,
            output.square_source,
        ):
            return output.encoding.grid
    return count_grid()


def describe_selection(selection: SelectionRule | PublicPartitions) -> dict[str, object]:
    """The selection rule as printed by `plan` and stored in the manifest."""
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
    if isinstance(selection, LaplaceThresholdSelection | GaussianThresholdSelection):
        out["threshold"] = selection.threshold
        out["threshold_noise"] = _noise_params(selection.noise)
    return out


def describe_plan(plan: ReleasePlan) -> dict[str, object]:
    """The plan as a JSON-ready mapping: budget split, mechanisms, selection, totals.

    Invariant: holds configuration-derived numbers only, nothing from the data.
    """
    mechanisms = []
    for aggregate in plan.aggregates:
        grid = _grid_of(plan, aggregate)
        std_units = aggregate.noise.std()
        mechanisms.append(
            {
                "name": aggregate.name,
                "noise": _noise_params(aggregate.noise),
                "grid": grid.step,
                "l1_sensitivity": float(aggregate.sensitivity.l1),
                "l2_sensitivity": aggregate.sensitivity.l2,
                "per_partition_sensitivity": aggregate.sensitivity.per_partition,
                "std": std_units * grid.step,
                "ci_half_width": aggregate.ci_half_width * grid.step,
                "spend": aggregate.spend.to_dict(),
            }
        )
    composition = plan.composition
    return {
        "budget": {
            "epsilon": plan.config.budget.epsilon,
            "delta": plan.config.budget.delta,
            "noise": plan.config.noise,
            "shares": {o.name: o.budget_share for o in plan.outputs}
            | (
                {}
                if isinstance(plan.selection, PublicPartitions)
                else {"selection": plan.config.weights["selection"]}
            ),
        },
        "contribution_bounds": {
            "max_partitions_per_unit": plan.bounds.max_partitions_per_unit,
            "max_rows_per_unit_per_partition": plan.bounds.max_rows_per_unit_per_partition,
        },
        "selection": describe_selection(plan.selection),
        "mechanisms": mechanisms,
        "confidence_level": plan.config.confidence_level,
        "totals": {
            "epsilon": composition.epsilon,
            "epsilon_exact": composition.epsilon_exact,
            "delta": composition.delta,
            "rho": composition.rho,
            "conversion_delta": composition.conversion_delta,
        },
        "group_privacy": [
            {"group_size": g.group_size, "epsilon": g.epsilon, "delta": g.delta}
            for g in plan.group_privacy
        ],
    }


def per_partition_selection_budget(plan: ReleasePlan) -> tuple[float, float]:
    """(epsilon_p, delta_p) of the selection rule, (0, 0) for public partitions."""
    if isinstance(plan.selection, PublicPartitions):
        return 0.0, 0.0
    return per_partition_budget(
        plan.selection.epsilon, plan.selection.delta, plan.bounds.max_partitions_per_unit
    )
