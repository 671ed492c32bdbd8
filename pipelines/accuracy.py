"""Accuracy-first planning: expected intervals at stated partition sizes, and the smallest
epsilon (with its split) that meets per-metric targets. Data-free; spends nothing.

Invariants: every figure is computed from ``build_plan`` and ``describe_plan`` of configs
that differ from the given one only in ``budget.epsilon`` and ``budget.weights``, so the
noise it assumes is exactly the noise a run with those numbers would draw (grid, discrete
noise, exact shares). Nothing here reads data, opens the ledger or charges it
(docs/privacy.md §6, §7, §8).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dp_ops.accuracy import Accuracy, count_accuracy, mean_accuracy, sum_accuracy
from dp_ops.quantile_tree import rank_error_std, rank_half_width
from dp_ops.selection_rules import (
    GaussianThresholdSelection,
    LaplaceThresholdSelection,
    SelectionRule,
    TruncatedGeometricSelection,
)
from pipelines.config import EPSILON_MAX, ConfigError, JobConfig
from pipelines.config.accuracy import AccuracyConfig, AccuracyTarget
from pipelines.metric_kinds import MetricKind, kind_of
from pipelines.plan import ReleasePlan, build_plan
from pipelines.plan_description import describe_plan

__all__ = [
    "MetricAccuracy",
    "TargetPlan",
    "expected_accuracy",
    "keep_probability_table",
    "plan_for_targets",
    "plan_report",
    "with_budget",
]

# Part roles a planned metric may have: variance (a "squares" part) is not planned, its
# noise depends on the mean.
_PLANNED_ROLES = frozenset({"value", "count"})
# The search for the smallest epsilon stops at this relative precision before rounding
# the answer up to three significant digits.
_SEARCH_PRECISION = 1e-4
_SEARCH_FLOOR = 1e-4


@dataclass(frozen=True)
class MetricAccuracy:
    """One metric's expected noise at one partition size (``units`` privacy units)."""

    metric: str
    kind: str
    units: int
    rows: int
    accuracy: Accuracy
    reference: float  # the value a relative target is a fraction of
    in_ranks: bool = False  # a quantile: std and half-width are fractions of the values

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view."""
        out: dict[str, object] = {
            "units": self.units,
            "rows": self.rows,
            "std": self.accuracy.std,
            "half_width": self.accuracy.half_width,
            "relative_half_width": self.accuracy.half_width / self.reference,
        }
        return out | ({"measured_in": "ranks"} if self.in_ranks else {})


def with_budget(config: JobConfig, epsilon: float, weights: Mapping[str, float]) -> JobConfig:
    """The same job with another epsilon and split (validated as a config file would be)."""
    raw = config.model_dump(mode="python", by_alias=True)
    raw["budget"] = dict(raw["budget"], epsilon=epsilon, weights=dict(weights))
    return JobConfig.model_validate(raw)


def planned(kind: MetricKind) -> bool:
    """True when accuracy planning covers the kind (counts, sums, means and quantiles)."""
    return kind.tree or all(part.role in _PLANNED_ROLES for part in kind.parts)


def _settings(config: JobConfig) -> AccuracyConfig:
    return config.accuracy if config.accuracy is not None else AccuracyConfig()


def _tree_accuracy(plan: ReleasePlan, name: str, units: int, rows: int) -> MetricAccuracy:
    """A quantile's expected rank error at ``rows`` kept values (each unit keeps at most
    Linf of its values), in ranks: a fraction of the partition's values (docs/privacy.md
    §4b). Every rank of the metric reads the same tree, so they share one figure."""
    tree = next(o.tree for o in plan.trees if o.name == name)
    assert tree is not None
    std = rank_error_std(tree.shape, tree.nodes.noise, rows)
    half_width = rank_half_width(tree.shape, tree.nodes.noise, rows, plan.alpha)
    accuracy = Accuracy(min(1.0, std), half_width)
    return MetricAccuracy(name, "quantiles", units, rows, accuracy, 1.0, in_ranks=True)


def _metric_accuracy(
    config: JobConfig, plan: ReleasePlan, described: dict[str, Any], name: str, units: int
) -> MetricAccuracy:
    """Expected accuracy of metric ``name`` at a partition of ``units`` units (``described``:
    ``describe_plan(plan)``)."""
    metric = next(m for m in config.metrics if m.output_name == name)
    kind = kind_of(metric.metric)
    linf = config.contribution_bounds.max_rows_per_unit_per_partition
    rows = units * min(_settings(config).rows_per_unit, linf)
    if kind.tree:
        return _tree_accuracy(plan, name, units, rows)
    mechanisms = {m["name"]: m for m in described["mechanisms"]}
    parts = {part.role: part for part in kind.parts}
    if kind.noise_is_absolute:  # one part: a count, a count of units, or a sum
        shared = described["shared_parts"].get(name)  # a sum derived from a mean's parts
        own = shared if shared is not None else mechanisms[parts["value"].mechanism(name)]
        make = sum_accuracy if kind.measured else count_accuracy
        size = units if parts["value"].per_unit else rows
        assert metric.lower is not None or not kind.measured
        magnitude = max(abs(metric.lower or 0.0), abs(metric.upper or 0.0))
        reference = float(size) * (magnitude if kind.measured else 1.0)
        return MetricAccuracy(
            name, metric.metric, units, rows, make(own["std"], own["ci_half_width"]), reference
        )
    assert metric.lower is not None and metric.upper is not None
    numerator = mechanisms[parts["value"].mechanism(name)]
    count_name = parts["count"].mechanism(name)
    if count_name not in mechanisms:  # the release's count serves as the denominator
        count_name = next(
            m.output_name for m in config.metrics if kind_of(m.metric).serves_as_count
        )
    counter = mechanisms[count_name]
    accuracy = mean_accuracy(
        rows,
        numerator["std"],
        numerator["ci_half_width"],
        counter["std"],
        counter["ci_half_width"],
    )
    return MetricAccuracy(name, metric.metric, units, rows, accuracy, metric.upper - metric.lower)


def expected_accuracy(
    config: JobConfig, sizes: list[int] | None = None
) -> dict[str, list[MetricAccuracy]]:
    """Per planned metric, its expected noise at each partition size (``accuracy.units``
    unless ``sizes`` is given). Variance is not planned (its noise depends on the mean)."""
    plan = build_plan(config)
    described = describe_plan(plan)
    sizes = sizes or list(_settings(config).units)
    return {
        m.output_name: [_metric_accuracy(config, plan, described, m.output_name, n) for n in sizes]
        for m in config.metrics
        if planned(kind_of(m.metric))
    }


def _goal(target: AccuracyTarget, found: MetricAccuracy) -> float:
    """The half-width a target allows, in the metric's units."""
    if target.half_width is not None:
        return target.half_width
    assert target.relative is not None
    return target.relative * found.reference


def _check_targets(config: JobConfig, targets: list[AccuracyTarget]) -> None:
    kinds = {m.output_name: m.metric for m in config.metrics}
    for index, target in enumerate(targets):
        field = f"accuracy.targets[{index}].metric"
        if target.metric not in kinds:
            raise ConfigError(f"{field}: {target.metric!r} is not a metric of this job")
        kind = kind_of(kinds[target.metric])
        if not planned(kind):
            raise ConfigError(f"{field}: targets on {kinds[target.metric]} are not supported")
        if kind.tree and target.half_width is not None:
            raise ConfigError(
                f"accuracy.targets[{index}].half_width: a quantile's interval in value units "
                "depends on the data; give 'relative', a half-width in ranks (0.05: within "
                "5 percentile points)"
            )


def target_results(config: JobConfig) -> list[dict[str, object]]:
    """Each target of the config with the half-width the config's own budget gives."""
    targets = _settings(config).targets
    plan = build_plan(config)
    described = describe_plan(plan)
    out = []
    for target in targets:
        found = _metric_accuracy(config, plan, described, target.metric, target.units)
        goal = _goal(target, found)
        out.append(
            {
                "metric": target.metric,
                "units": target.units,
                "goal_half_width": goal,
                "half_width": found.accuracy.half_width,
                "met": found.accuracy.half_width <= goal,
            }
        )
    return out


def _meets(config: JobConfig, epsilon: float, weights: Mapping[str, float], only: str) -> bool:
    """Whether the job at (epsilon, weights) meets its targets (those on ``only``, if set)."""
    try:
        results = target_results(with_budget(config, epsilon, weights))
    except ConfigError:  # noise or selection limits refuse this epsilon
        return False
    return all(bool(r["met"]) for r in results if not only or r["metric"] == only)


def _meeting(config: JobConfig, weights: Mapping[str, float], only: str) -> Callable[[float], bool]:
    """Whether the job at epsilon e (and ``weights``) meets the targets on ``only`` (all: "")."""

    def meets(epsilon: float) -> bool:
        return _meets(config, epsilon, weights, only)

    return meets


def _smallest_epsilon(meets: Callable[[float], bool]) -> float | None:
    """The smallest epsilon in [1e-4, EPSILON_MAX] meeting ``meets`` (monotone), to 1e-4
    relative, rounded up; None if even EPSILON_MAX does not."""
    if not meets(EPSILON_MAX):
        return None
    low, high = _SEARCH_FLOOR, EPSILON_MAX
    if meets(low):
        return low
    while high / low > 1 + _SEARCH_PRECISION:
        middle = math.sqrt(low * high)
        if meets(middle):
            high = middle
        else:
            low = middle
    return high


def _round_up(value: float, digits: int = 3) -> float:
    """``value`` rounded up to ``digits`` significant digits (a number people can type)."""
    exponent = math.floor(math.log10(value)) - digits + 1
    return round(math.ceil(value / 10.0**exponent - 1e-9) * 10.0**exponent, 12)


def _rounded_weights(raw: Mapping[str, float]) -> dict[str, float]:
    """Weights rounded to 4 decimals that sum to exactly 1 (the largest takes the rest)."""
    total = sum(raw.values())
    rounded = {k: max(round(v / total, 4), 0.0001) for k, v in raw.items()}
    largest = max(rounded, key=lambda k: rounded[k])
    rest = sum(v for k, v in rounded.items() if k != largest)
    rounded[largest] = round(1.0 - rest, 4)
    return rounded


@dataclass(frozen=True)
class TargetPlan:
    """The smallest epsilon (three significant digits) and split meeting every target."""

    epsilon: float | None  # None: no epsilon up to EPSILON_MAX meets them
    weights: dict[str, float]
    results: list[dict[str, object]]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view."""
        return {"smallest_epsilon": self.epsilon, "weights": self.weights, "results": self.results}


def plan_for_targets(config: JobConfig) -> TargetPlan:
    """The smallest epsilon and split of the budget meeting every ``accuracy.targets`` entry.

    Each targeted metric first gets the epsilon it needs alone at the config's split;
    the targeted metrics then share the budget in proportion to those needs, while the
    selection and untargeted metrics keep their configured fractions; a final search
    finds the smallest epsilon meeting all targets together at that split (so shared
    parts, such as a count that is a mean's denominator, are accounted for).
    """
    targets = _settings(config).targets
    if not targets:
        raise ConfigError("accuracy.targets: give at least one target to plan for")
    _check_targets(config, targets)
    base = config.weights
    need: dict[str, float] = {}
    for target in targets:
        alone = _smallest_epsilon(_meeting(config, base, target.metric))
        if alone is None:
            return TargetPlan(None, base, target_results(config))
        need[target.metric] = max(need.get(target.metric, 0.0), alone * base[target.metric])
    fixed = {k: w for k, w in base.items() if k not in need}
    free = 1.0 - sum(fixed.values())
    weights = _rounded_weights(fixed | {k: free * v / sum(need.values()) for k, v in need.items()})
    found = _smallest_epsilon(_meeting(config, weights, ""))
    if found is None:
        return TargetPlan(None, weights, target_results(config))
    epsilon = _round_up(found)
    while not _meets(config, epsilon, weights, ""):  # rounding never loses a target
        epsilon = _round_up(epsilon * 1.001)
    return TargetPlan(epsilon, weights, target_results(with_budget(config, epsilon, weights)))


_SELECTIONS: dict[str, Callable[[float, float, int, int], SelectionRule]] = {
    "truncated_geometric": TruncatedGeometricSelection,
    "laplace_threshold": LaplaceThresholdSelection,
    "gaussian_threshold": GaussianThresholdSelection,
}
# Keep-table rows printed between the first unit count and the first certain keep:
# every count up to 10, then about 20 per decade.
_TABLE_STEP = 10 ** (1 / 20)
_MAX_TABLE_UNITS = 10**9


def keep_probability_table(described: Mapping[str, Any]) -> list[tuple[int, float]]:
    """Keep probability by distinct units, from 1 until it reaches 1 (last row: the first
    unit count kept for certain, or the probability at 10**9 units if it never does).

    Rebuilt from the plan's JSON (mechanism, epsilon, delta, min_units, L0), so it is the
    rule a run uses. Empty for public partitions (every key is kept).
    """
    selection = described["selection"]
    rule_class = _SELECTIONS.get(selection["mechanism"])
    if rule_class is None:
        return []
    l0 = described["contribution_bounds"]["max_partitions_per_unit"]
    rule = rule_class(selection["epsilon"], selection["delta"], l0, selection["min_units"])
    rows: list[tuple[int, float]] = []
    units = 1
    while units <= _MAX_TABLE_UNITS:
        probability = rule.keep_probability(units)
        rows.append((units, probability))
        if probability >= 1.0:
            break
        units = units + 1 if units < 10 else max(units + 1, math.ceil(units * _TABLE_STEP))
    certain = _first_certain(rule.keep_probability, rows)
    if certain is not None and rows[-1][0] != certain:
        rows = [r for r in rows if r[0] < certain] + [(certain, 1.0)]
    return rows


def _first_certain(keep: Callable[[int], float], rows: list[tuple[int, float]]) -> int | None:
    """The smallest unit count kept with probability 1 (bisection between table rows)."""
    if not rows or rows[-1][1] < 1.0:
        return None
    high = rows[-1][0]
    low = rows[-2][0] if len(rows) > 1 else 0
    while high - low > 1:
        middle = (low + high) // 2
        if keep(middle) >= 1.0:
            high = middle
        else:
            low = middle
    return high


def plan_report(config: JobConfig, sizes: list[int] | None = None) -> dict[str, object]:
    """What `dprelease plan` adds to the plan: expected intervals at the partition sizes,
    the keep table until it reaches 1 and, with targets, the smallest epsilon meeting them."""
    described = describe_plan(build_plan(config))
    settings = _settings(config)
    table = keep_probability_table(described)
    report: dict[str, object] = {
        "epsilon": config.budget.epsilon,
        "confidence_level": config.confidence_level,
        "rows_per_unit": settings.rows_per_unit,
        "note": (
            "noise-only intervals, before clamping to the value bounds; means assume a "
            "true mean at the middle of the bounds; quantiles are in ranks (a fraction of "
            "the partition's values, each unit keeping at most Linf), for spread values"
        ),
        "metrics": {
            name: [item.to_dict() for item in items]
            for name, items in expected_accuracy(config, sizes).items()
        },
        "keep_probability_by_units": [[n, p] for n, p in table],
    }
    if settings.targets:
        _check_targets(config, settings.targets)
        report["targets"] = target_results(config)
        report["accuracy_first"] = plan_for_targets(config).to_dict()
    return report
