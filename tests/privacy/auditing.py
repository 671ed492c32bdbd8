"""Statistical DP auditing: lower bounds on the privacy loss from two output samples.

For a mechanism M that is (epsilon, delta)-DP, every event E satisfies
``P(M(D) in E) <= e^epsilon * P(M(D') in E) + delta`` for neighbours D, D' (both
orders). Given n independent outputs on each side, one-sided Clopper-Pearson bounds give,
with confidence 1 - alpha' each, ``p_low <= P(E | D)`` and ``P(E | D') <= p_high``; then

    epsilon_lb = ln((p_low - delta) / p_high)

is a lower bound on the true privacy loss whenever both bounds hold. Events are
pre-registered (fixed from the datasets the test built and the public noise scales in
the manifest, before any output is looked at), and a Bonferroni correction over every
(event, order) pair tried keeps the family-wise false-failure rate at alpha: a correct
mechanism is reported as violating its claim with probability at most alpha.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.stats import beta

FloatArray = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
Order = Literal["D over D'", "D' over D"]


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided lower confidence bound (level 1 - alpha) of a binomial proportion."""
    if successes <= 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


def clopper_pearson_upper(successes: int, trials: int, alpha: float) -> float:
    """One-sided upper confidence bound (level 1 - alpha) of a binomial proportion."""
    if successes >= trials:
        return 1.0
    return float(beta.ppf(1.0 - alpha, successes + 1, trials - successes))


def epsilon_lower_bound(
    hits_first: int, n_first: int, hits_second: int, n_second: int, delta: float, alpha: float
) -> float:
    """ln((p_low(first) - delta) / p_high(second)); -inf when p_low <= delta."""
    low = clopper_pearson_lower(hits_first, n_first, alpha) - delta
    high = clopper_pearson_upper(hits_second, n_second, alpha)
    if low <= 0.0:
        return -math.inf
    return math.log(low / high)


@dataclass(frozen=True)
class Event:
    """A pre-registered output event and the order in which it is tested."""

    name: str
    order: Order
    contains: Callable[[FloatArray], Mask]


def at_least(threshold: float, order: Order = "D over D'") -> Event:
    return Event(f"x >= {threshold:.6g}", order, lambda x: np.isfinite(x) & (x >= threshold))


def at_most(threshold: float, order: Order = "D' over D") -> Event:
    return Event(f"x <= {threshold:.6g}", order, lambda x: np.isfinite(x) & (x <= threshold))


def has_bits_below(exponent: int, order: Order) -> Event:
    """x is finite and not an integer multiple of 2**exponent (low-order float bits).

    Values on a public power-of-two grid never have such bits; textbook float noise
    added to a double makes the low bits depend on the exact input (Mironov 2012).
    """

    def contains(x: FloatArray) -> Mask:
        finite = np.isfinite(x)
        scaled = np.ldexp(np.where(finite, x, 0.0), -exponent)
        return np.asarray(finite & (scaled != np.rint(scaled)), dtype=bool)

    return Event(f"x has bits below 2^{exponent}", order, contains)


def fine_bit_events(exponents: Sequence[int] = (-46, -48, -50)) -> list[Event]:
    orders: tuple[Order, Order] = ("D over D'", "D' over D")
    return [has_bits_below(e, order) for e in exponents for order in orders]


@dataclass(frozen=True)
class Statistic:
    """One audited output statistic: its claim, its samples on D and D', its events."""

    name: str
    epsilon: float  # the privacy loss the manifest claims for this statistic
    delta: float
    on_d: FloatArray
    on_d_prime: FloatArray
    events: tuple[Event, ...]


@dataclass(frozen=True)
class Finding:
    statistic: str
    event: str
    order: Order
    hits_d: int
    hits_d_prime: int
    epsilon_lb: float
    claimed: float

    @property
    def violation(self) -> bool:
        return self.epsilon_lb > self.claimed


@dataclass(frozen=True)
class AuditReport:
    alpha: float
    tests: int
    findings: tuple[Finding, ...] = field(repr=False)

    def best(self, statistic: str) -> Finding:
        """The finding with the largest epsilon lower bound for ``statistic``."""
        candidates = [f for f in self.findings if f.statistic == statistic]
        return max(candidates, key=lambda f: f.epsilon_lb)

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.violation]

    def violated(self) -> set[str]:
        return {f.statistic for f in self.violations}

    def summary(self) -> str:
        names = dict.fromkeys(f.statistic for f in self.findings)
        lines = [f"audit: {self.tests} pre-registered tests, family-wise alpha {self.alpha:g}"]
        for name in names:
            f = self.best(name)
            lines.append(
                f"  {name}: eps_lb {f.epsilon_lb:.3f} (claimed {f.claimed:.3f}) from "
                f"{f.event!r} {f.order}, hits {f.hits_d}/{f.hits_d_prime}"
            )
        return "\n".join(lines)


def audit(statistics: Sequence[Statistic], alpha: float) -> AuditReport:
    """Test every pre-registered (event, order) pair; Bonferroni over all of them.

    Each pair uses two one-sided Clopper-Pearson bounds at alpha / (2 * tests), so the
    probability that any reported epsilon_lb exceeds the true loss is at most alpha.
    """
    tests = sum(len(s.events) for s in statistics)
    per_bound = alpha / (2 * tests)
    findings: list[Finding] = []
    for stat in statistics:
        n_d, n_dp = len(stat.on_d), len(stat.on_d_prime)
        for event in stat.events:
            hits_d = int(event.contains(stat.on_d).sum())
            hits_dp = int(event.contains(stat.on_d_prime).sum())
            if event.order == "D over D'":
                bound = epsilon_lower_bound(hits_d, n_d, hits_dp, n_dp, stat.delta, per_bound)
            else:
                bound = epsilon_lower_bound(hits_dp, n_dp, hits_d, n_d, stat.delta, per_bound)
            findings.append(
                Finding(stat.name, event.name, event.order, hits_d, hits_dp, bound, stat.epsilon)
            )
    return AuditReport(alpha, tests, tuple(findings))


def rate_interval(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """Two one-sided bounds, each at level 1 - alpha."""
    return (
        clopper_pearson_lower(successes, trials, alpha),
        clopper_pearson_upper(successes, trials, alpha),
    )
