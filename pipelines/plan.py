"""The release plan: everything decided before any data is read.

Invariants: the plan is a pure function of the config (no data, no randomness);
every sensitivity is derived from the contribution bounds and value bounds, through each
metric kind's per-partition bounds (``pipelines.metric_kinds``); every noise scale is
calibrated from a budget share; the composition of all mechanisms never exceeds the
configured (epsilon, delta); every derived number is one the exact samplers and the
exact integer sums support (``build_plan`` refuses the rest with a ``ConfigError``
naming the fields, so `dprelease plan` and `dprelease run` refuse the same configs,
before Spark starts and before the ledger is read; docs/privacy.md §3, §5, §6).

The config stays at the boundary: the plan carries small frozen records (columns,
contract rules, post-processing, the facts the manifest states), never the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from dp_ops.accounting import Composition, GroupPrivacy, group_privacy_table
from dp_ops.calibration import ContributionBounds
from dp_ops.selection_rules import ThresholdRule
from pipelines.budget_split import BudgetSplit, split_budget
from pipelines.config import ConfigError, JobConfig, config_digest
from pipelines.contract_rules import ContractRules, contract_rules
from pipelines.derivation import Encoding, PostProcessing, Role
from pipelines.metric_kinds import ROWS, UNITS, MetricKind, kind_of
from pipelines.plan_limits import (
    ArithmeticBoundError,
    check_exact_arithmetic,
    check_rounding,
)
from pipelines.plan_metrics import (
    CalibratedMetric,
    NoisyAggregate,
    SharedSum,
    TreePlan,
    calibrate_metric,
    calibrate_tree,
    reused_count,
    shared_sum,
)
from pipelines.plan_selection import PublicPartitions, Selection, SelectionChoice, plan_selection
from pipelines.released import ReleasedColumn, released_columns

__all__ = [
    "ROWS",
    "UNITS",
    "ArithmeticBoundError",
    "Encoding",
    "NoisyAggregate",
    "OutputMetric",
    "PublicPartitions",
    "ReleaseColumns",
    "ReleaseFacts",
    "ReleasePlan",
    "TreePlan",
    "build_plan",
    "check_exact_arithmetic",
]


@dataclass(frozen=True)
class OutputMetric:
    """One released statistic: its kind, encoding, and the noisy aggregates it reads."""

    name: str
    kind: MetricKind
    encoding: Encoding | None
    #: Mechanism name of each part, by role ("value", "count", "squares").
    sources: tuple[tuple[Role, str], ...]
    budget_share: float
    #: A sum derived from another metric's parts (its ``sources`` name them; it has no
    #: aggregate or noise of its own, and its encoding is on half the lender's grid).
    shared: SharedSum | None = None
    tree: TreePlan | None = None  # a tree kind's noisy tree (docs/privacy.md §4b)

    def source(self, role: Role) -> str:
        """The mechanism name of this metric's part ``role``."""
        return dict(self.sources)[role]

    @property
    def value_aggregate(self) -> str:
        """The noisy integer its value is derived from: its value part's, or a shared
        sum's derived integer (named after the sum)."""
        return self.source("value") if self.shared is None else self.shared.name

    @property
    def aggregates_column(self) -> bool:
        """True when bounding encodes and sums its column (measured, not shared)."""
        return self.encoding is not None and self.shared is None

    @property
    def mechanisms(self) -> list[str]:
        """The mechanism names this metric is computed from, value first."""
        return [name for _, name in sorted(self.sources, key=lambda s: s[0] != "value")]


@dataclass(frozen=True)
class ReleaseColumns:
    """The input columns the release reads: unit, partition keys, measured columns."""

    privacy_unit: str
    partition_columns: tuple[str, ...]
    measured_columns: tuple[str, ...]


@dataclass(frozen=True)
class ReleaseFacts:
    """Configuration the manifest states as it is (no data, nothing derived)."""

    description: str | None
    time_scope: str
    invalid_values: tuple[tuple[str, str], ...]
    config_sha256: str
    budget_epsilon: float
    budget_delta: float
    noise: str


@dataclass(frozen=True)
class ReleasePlan:
    """All mechanisms of one release, calibrated, with their composition."""

    columns: ReleaseColumns
    contract: ContractRules
    post: PostProcessing
    facts: ReleaseFacts
    bounds: ContributionBounds
    selection: Selection
    #: The privacy_id_count output the selection thresholds (post-aggregation
    #: thresholding: its noisy value is the rule's noisy unit count); None: no reuse.
    selection_reuses: str | None
    selection_reason: str  # why this rule (auto: the comparison; else "configured")
    aggregates: tuple[NoisyAggregate, ...]
    outputs: tuple[OutputMetric, ...]
    released: tuple[ReleasedColumn, ...]
    split: BudgetSplit
    composition: Composition
    group_privacy: tuple[GroupPrivacy, ...]
    confidence_level: float
    alpha: float

    def aggregate(self, name: str) -> NoisyAggregate:
        """The noisy aggregate called ``name``."""
        for item in self.aggregates:
            if item.name == name:
                return item
        raise KeyError(name)

    @property
    def trees(self) -> tuple[OutputMetric, ...]:
        """The outputs released through a noisy quantile tree (``tree`` set)."""
        return tuple(o for o in self.outputs if o.tree is not None)

    @property
    def encodings(self) -> dict[str, Encoding]:
        """Encodings by output metric name (measured metrics only)."""
        return {o.name: o.encoding for o in self.outputs if o.aggregates_column and o.encoding}


def _alpha(config: JobConfig) -> float:
    alpha = 1.0 - config.confidence_level
    if not 0.0 < alpha < 1.0:
        raise ConfigError(
            f"confidence_level: {config.confidence_level!r} is too close to 0 for double "
            "arithmetic (1 - confidence_level rounds to 1): give at least 1e-15"
        )
    return alpha


def _calibrated(
    config: JobConfig,
    bounds: ContributionBounds,
    split: BudgetSplit,
    alpha: float,
    choice: SelectionChoice,
) -> dict[str, CalibratedMetric]:
    """Every metric that spends, calibrated from its share, by output name.

    The privacy_id_count the selection reuses takes the rule's noise and spends nothing of
    its own (its share is in the rule's); a lender also spends the shares of the sums
    derived from it, which are not calibrated here.
    """
    kinds = [kind_of(m.metric) for m in config.metrics]
    count_name = next(
        (m.output_name for m, k in zip(config.metrics, kinds, strict=True) if k.serves_as_count),
        None,
    )
    lent = config.shared_sums
    out: dict[str, CalibratedMetric] = {}
    for index, (metric, kind) in enumerate(zip(config.metrics, kinds, strict=True)):
        name = metric.output_name
        if name in lent:
            continue
        if name == choice.reuses and isinstance(choice.rule, ThresholdRule):
            out[name] = reused_count(name, choice.rule, bounds, alpha)
            continue
        share = split.shares[name] + sum(
            (split.shares[s] for s, lender in lent.items() if lender == name), Fraction(0)
        )
        if kind.tree:
            out[name] = calibrate_tree(index, metric, bounds, split, alpha, share)
        else:
            out[name] = calibrate_metric(
                index, metric, kind, bounds, split, alpha, count_name, share
            )
    return out


def _metrics(
    config: JobConfig,
    bounds: ContributionBounds,
    split: BudgetSplit,
    alpha: float,
    choice: SelectionChoice,
) -> tuple[list[NoisyAggregate], list[OutputMetric]]:
    """Every metric's noisy aggregates and its output record, in config order; a shared
    sum's record reads its lender's parts (``shared_sum``)."""
    calibrated = _calibrated(config, bounds, split, alpha, choice)
    aggregates = [a for c in calibrated.values() for a in c.aggregates]
    by_name = {a.name: a for a in aggregates}
    lent = config.shared_sums
    outputs: list[OutputMetric] = []
    for metric in config.metrics:
        name, kind = metric.output_name, kind_of(metric.metric)
        if name in lent:
            lender = calibrated[lent[name]]
            assert lender.encoding is not None
            sources: dict[Role, str] = {r: m for r, m in lender.sources if r != "squares"}
            encoding, shared = shared_sum(
                name, lent[name], lender.encoding, sources, by_name, alpha
            )
            outputs.append(OutputMetric(name, kind, encoding, tuple(sources.items()), 0.0, shared))
            continue
        own = calibrated[name]
        share = float(
            split.shares[name]
            + sum((split.shares[s] for s, lender in lent.items() if lender == name), Fraction(0))
        )
        outputs.append(OutputMetric(name, kind, own.encoding, own.sources, share, tree=own.tree))
    return aggregates, outputs


def _facts(config: JobConfig) -> ReleaseFacts:
    return ReleaseFacts(
        description=config.release.description,
        time_scope=config.privacy_unit.time_scope,
        invalid_values=tuple(config.invalid_values.items()),
        config_sha256=config_digest(config),
        budget_epsilon=config.budget.epsilon,
        budget_delta=config.budget.delta,
        noise=config.noise,
    )


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
    alpha = _alpha(config)
    split = split_budget(config)
    choice = plan_selection(config, bounds, split)
    if choice.reuses is not None:
        split = split_budget(config, choice.reuses)  # the count's share is the rule's
    aggregates, outputs = _metrics(config, bounds, split, alpha, choice)
    trees = [o.tree.nodes for o in outputs if o.tree is not None]
    composition = split.compose(choice.rule, [*aggregates, *trees])
    post = config.post_processing
    plan = ReleasePlan(
        columns=ReleaseColumns(
            config.privacy_unit.column,
            tuple(config.partition_columns),
            tuple(config.measured_columns),
        ),
        contract=contract_rules(config),
        post=PostProcessing(
            post.clamp_negative_counts, post.decimals, post.consistent_rows, post.reliability_share
        ),
        facts=_facts(config),
        bounds=bounds,
        selection=choice.rule,
        selection_reuses=choice.reuses,
        selection_reason=choice.reason,
        aggregates=tuple(aggregates),
        outputs=tuple(outputs),
        released=released_columns(
            [(o.name, o.kind) for o in outputs],
            flagged=post.reliability_share is not None,
            ranks={o.name: o.tree.ranks for o in outputs if o.tree is not None},
        ),
        split=split,
        composition=composition,
        group_privacy=group_privacy_table(composition.epsilon, composition.delta),
        confidence_level=config.confidence_level,
        alpha=alpha,
    )
    check_exact_arithmetic(plan)
    return plan
