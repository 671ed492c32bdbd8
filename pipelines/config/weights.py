"""Shared parts and the data-free default split of the budget (README, "Default weights").

Shared parts: a SUM whose column and bounds equal a MEAN's or VARIANCE's (its "lender") is
post-processing of the lender's noisy normalised sum and count: Σx = g·(Σy + C·(lo + hi))/2
in grid units (y = 2·units − lo − hi), so it draws no noise and its weight is spent by the
lender's parts (docs/privacy.md §7, "Shared parts").

Default weights, invariants: every weight is > 0 and they sum to 1; they depend on the
config alone (kinds, L0/Linf, noise kind, selection), never on data. With private
selection, ``selection`` and the privacy_id_count a threshold rule may select on get the
equal share 1/(M + 1) of M metrics plus selection (they decide which keys are released,
and the rule is chosen after the split). The other metrics share the rest so as to
minimise the sum over metrics of noise variance relative to the metric's own scale at a
partition of n units with one row each (count n, sum n·max|bound|, mean (upper − lower)/2):
a part with per-partition bound B has relative standard deviation (B / scale)·L0·k / (w·ε)
with Laplace noise (k parts splitting the metric's weight w), so the objective is
Σ_m a_m / w_m² with a_m = k_m²·Σ_p c_p, c_p = Linf² (rows) or 1 (units); the minimum
under Σ w_m = R is w_m ∝ a_m^(1/3). With Gaussian noise a part's variance is ∝ k / w, so
a_m = k_m·Σ_p c_p and w_m ∝ a_m^(1/2). The reference size n scales every term by 1/n²,
so the split does not depend on it. A lender and the sums it lends to form one group
whose weight is shared equally between its members.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipelines.metric_kinds import kind_of

_DECIMALS = 10_000  # default weights are multiples of 1 / _DECIMALS

if TYPE_CHECKING:
    from pipelines.config.model import JobConfig
    from pipelines.config.privacy import MetricConfig


def _same_measure(a: MetricConfig, b: MetricConfig) -> bool:
    return (a.column, a.lower, a.upper) == (b.column, b.lower, b.upper)


def shared_sums(metrics: Sequence[MetricConfig], enabled: bool = True) -> dict[str, str]:
    """Each sum derived from another metric's parts: sum output → lender output.

    The lender is the first MEAN or VARIANCE (a ``lends_sum`` kind) with the sum's column
    and bounds. Empty when ``enabled`` is false (``budget.share_parts``).
    """
    if not enabled:
        return {}
    lenders = [m for m in metrics if kind_of(m.metric).lends_sum]
    out: dict[str, str] = {}
    for metric in metrics:
        if not kind_of(metric.metric).derivable_sum:
            continue
        lender = next((m for m in lenders if _same_measure(m, metric)), None)
        if lender is not None:
            out[metric.output_name] = lender.output_name
    return out


def _coefficient(metric: MetricConfig, count_released: bool, linf: int, gaussian: bool) -> float:
    """a_m of the module docstring: the metric's relative noise variance times w_m² (or w_m)."""
    parts = kind_of(metric.metric).parts_for(count_released)
    spread = sum(1 if p.per_unit else linf**2 for p in parts) if parts else linf**2
    k = max(1, len(parts))
    return float(k * spread if gaussian else k * k * spread)


def _fixed(config: JobConfig) -> list[str]:
    """The mechanisms that keep the equal share: selection and its possible unit count."""
    if config.partition_selection.mechanism == "public":
        return []
    fixed = ["selection"]
    if config.partition_selection.post_aggregation:
        count = next(
            (m.output_name for m in config.metrics if kind_of(m.metric).selection_count), None
        )
        if count is not None:
            fixed.append(count)
    return fixed


def default_weights(config: JobConfig) -> dict[str, float]:
    """The default ``budget.weights`` (module docstring): > 0 each, summing to 1."""
    metrics = config.metrics
    fixed = _fixed(config)
    equal = 1.0 / (len(metrics) + (1 if fixed else 0))
    weights = {name: equal for name in fixed}
    lenders = shared_sums(metrics, config.budget.share_parts)
    count_released = any(kind_of(m.metric).serves_as_count for m in metrics)
    linf = config.contribution_bounds.max_rows_per_unit_per_partition
    gaussian = config.noise == "gaussian"
    groups: dict[str, list[str]] = {}
    power = 0.5 if gaussian else 1 / 3
    score: dict[str, float] = {}
    for metric in metrics:
        name = metric.output_name
        if name in weights:
            continue
        head = lenders.get(name, name)
        groups.setdefault(head, []).append(name)
        if head == name:
            score[name] = _coefficient(metric, count_released, linf, gaussian) ** power
    rest = 1.0 - sum(weights.values())
    total = sum(score[head] for head in groups)
    for head, members in groups.items():
        for name in members:
            weights[name] = rest * score[head] / total / len(members)
    order = ["selection"] if "selection" in weights else []
    return _decimal({name: weights[name] for name in [*order, *(m.output_name for m in metrics)]})


def _decimal(weights: dict[str, float]) -> dict[str, float]:
    """The weights rounded to 4 decimals (at least 0.0001), summing to exactly 1 as
    decimals: the largest takes the rounding residue. Decimal shares keep the plan's
    Laplace scales exact, so epsilon 1 composes to exactly 1 (docs/privacy.md §8)."""
    units = {name: max(1, round(w * _DECIMALS)) for name, w in weights.items()}
    largest = max(units, key=lambda name: units[name])
    units[largest] += _DECIMALS - sum(units.values())
    return {name: u / _DECIMALS for name, u in units.items()}
