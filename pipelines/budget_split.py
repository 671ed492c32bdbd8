"""How a release's (epsilon, delta) is split over selection and the metrics' mechanisms.

Invariants: the shares are the config's weights (or equal shares) as exact rationals that
sum to exactly 1, so epsilon times the shares composes back to epsilon (docs/privacy.md §8);
selection takes its epsilon share and, with Laplace noise, all of delta (with Gaussian
noise, delta is halved between selection and the one zCDP conversion of the metrics);
the composed total is checked against the configured budget (docs/privacy.md §5).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from dp_ops.accounting import Composition, MechanismSpend, compose
from dp_ops.calibration import exact_shares, float_down, rho_for_epsilon_delta
from pipelines.config import JobConfig
from pipelines.plan_limits import check_share
from pipelines.plan_selection import PublicPartitions, Selection

if TYPE_CHECKING:
    from pipelines.plan_metrics import NoisyAggregate


@dataclass(frozen=True)
class BudgetSplit:
    """The configured budget and its split (everything the calibration needs)."""

    epsilon: float
    delta: float
    noise: str  # "laplace" or "gaussian"
    private: bool  # private partition selection (else public keys)
    weights: Mapping[str, float]  # as configured (or equal): "selection" and output names
    shares: Mapping[str, Fraction]  # the weights as exact shares of 1 (their sum is 1)
    selection_delta: float
    conversion_delta: float
    metric_share: Fraction  # the metrics' total share of epsilon
    rho_total: float  # the metrics' total rho (Gaussian noise), else 0

    @property
    def gaussian(self) -> bool:
        """True when the metrics get discrete Gaussian noise."""
        return self.noise == "gaussian"

    def share_budget(self, share: Fraction, key: str) -> tuple[Fraction, float]:
        """(epsilon, rho) for a share of the whole budget (refused if it underflows to 0).

        The epsilon is exact (the double's exact value times the rational share); rho is
        the largest double at or below its exact share of ``rho_total`` (§8).
        """
        eps = Fraction(self.epsilon) * share
        rho = 0.0
        if self.gaussian:
            rho = float_down(Fraction(self.rho_total) * share / self.metric_share)
        check_share(float(eps) if not self.gaussian else min(float(eps), rho), key)
        return eps, rho

    def selection_epsilon(self, names: Iterable[str] = ("selection",)) -> float:
        """The largest double at or below the exact shares of ``names`` (selection, and the
        privacy_id_count a threshold rule reuses): the rule spends at most that."""
        share = sum((self.shares[name] for name in names), Fraction(0))
        return float_down(Fraction(self.epsilon) * share)

    def compose(self, selection: Selection, aggregates: Iterable[NoisyAggregate]) -> Composition:
        """The composition of selection and every aggregate, checked against the budget."""
        spends: list[MechanismSpend] = (
            [] if isinstance(selection, PublicPartitions) else [selection.spend()]
        )
        spends.extend(a.spend for a in aggregates)
        composition = compose(spends, conversion_delta=self.conversion_delta)
        # The zCDP conversion is a numerical inverse, accurate to about 1e-9 relative at the
        # smallest epsilons; the composed figure is the rounded-up one, and it is what the
        # ledger charges, so a margin of 1e-8 keeps this a check for gross errors only.
        over_epsilon = composition.epsilon > self.epsilon * (1 + 1e-8)
        if over_epsilon or composition.delta > self.delta * (1 + 1e-8):
            raise AssertionError(
                f"plan composes to ({composition.epsilon}, {composition.delta}), over the budget"
            )
        return composition


def split_budget(config: JobConfig, reused: str | None = None) -> BudgetSplit:
    """The split of ``config``'s budget in exact rational shares (docs/privacy.md §5, §8).

    ``reused``: the privacy_id_count a threshold rule selects on; its share is spent by
    the selection, so the metrics' zCDP budget leaves it out.
    """
    weights = config.weights
    shares = exact_shares(weights)
    epsilon, delta = config.budget.epsilon, config.budget.delta
    private = config.partition_selection.mechanism != "public"
    gaussian = config.noise == "gaussian"
    selection_delta = (delta / 2 if gaussian else delta) if private else 0.0
    conversion_delta = delta - selection_delta if gaussian else 0.0
    metric_share = sum(
        (shares[m.output_name] for m in config.metrics if m.output_name != reused), Fraction(0)
    )
    rho_total = (
        rho_for_epsilon_delta(float_down(Fraction(epsilon) * metric_share), conversion_delta)
        if gaussian and metric_share > 0
        else 0.0
    )
    return BudgetSplit(
        epsilon,
        delta,
        config.noise,
        private,
        weights,
        shares,
        selection_delta,
        conversion_delta,
        metric_share,
        rho_total,
    )
