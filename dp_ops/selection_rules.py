"""Partition-selection rules: each decides, vectorised, which candidate partitions to keep.

Every rule is (ε, δ)-DP over all partitions for units that touch at most L0 of them
(docs/privacy.md §6): truncated geometric keeps with the exact keep table π(n); Laplace
and Gaussian thresholding add integer noise to the unit count and compare with a
threshold T taken from the exact noise tail. ``keep(units, draws)`` draws every decision
inside the calling task from ``draws`` (the OS CSPRNG in production).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray

from dp_ops.accounting import MechanismSpend
from dp_ops.calibration import (
    Sensitivity,
    gaussian_for_rho,
    laplace_for_epsilon,
    rho_for_epsilon_delta,
)
from dp_ops.checks import check_delta, check_positive, check_positive_int
from dp_ops.noise import DiscreteGaussian, DiscreteLaplace, NoiseDistribution
from dp_ops.selection import (
    keep_probabilities,
    noise_threshold,
    truncated_geometric_keep_table,
)

SPEND_NAME = "selection"


class RandomDraws(Protocol):
    """Where a selection rule's random draws come from (the OS CSPRNG in production)."""

    def integer_noise(self, distribution: NoiseDistribution, size: int) -> NDArray[np.int64]:
        """``size`` independent draws of ``distribution``."""
        ...

    def keep(self, probabilities: NDArray[np.float64]) -> NDArray[np.bool_]:
        """One independent Bernoulli draw per probability."""
        ...


@dataclass(frozen=True)
class _Rule:
    """What every selection rule shares: its (ε, δ), L0, and the smallest unit count kept."""

    epsilon: float
    delta: float
    max_partitions_per_unit: int
    min_units: int = 1
    mechanism: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_positive("epsilon", self.epsilon)
        check_delta("delta", self.delta)
        check_positive_int("max_partitions_per_unit", self.max_partitions_per_unit)
        check_positive_int("min_units", self.min_units)

    @property
    def epsilon_p(self) -> float:
        """Per-partition ε: ε/L0."""
        return self.epsilon / self.max_partitions_per_unit

    @property
    def delta_p(self) -> float:
        """Per-partition δ: δ/L0."""
        return self.delta / self.max_partitions_per_unit

    def _noise_terms(self) -> dict[str, float]:
        """The sensitivity and noise scale the manifest states for this rule."""
        return {"l1_sensitivity": float(self.max_partitions_per_unit)}

    def spend(self) -> MechanismSpend:
        """(ε, δ) for the whole selection."""
        terms = self._noise_terms()
        return MechanismSpend(
            name=SPEND_NAME,
            mechanism=self.mechanism,
            epsilon=self.epsilon,
            delta=self.delta,
            l1_sensitivity=terms.get("l1_sensitivity"),
            l2_sensitivity=terms.get("l2_sensitivity"),
            noise_scale=terms.get("noise_scale"),
        )


@dataclass(frozen=True)
class TruncatedGeometricSelection(_Rule):
    """Truncated geometric selection (optimal; the default): (ε, δ)-DP over all partitions.

    Each partition is kept with probability π(n) from the (ε/L0, δ/L0) keep table.
    It releases nothing else.
    """

    mechanism: ClassVar[str] = "truncated_geometric"

    @cached_property
    def table(self) -> NDArray[np.float64]:
        """Keep probability by unit count n (see truncated_geometric_keep_table)."""
        table = truncated_geometric_keep_table(self.epsilon_p, self.delta_p, self.min_units)
        table.setflags(write=False)
        return table

    def keep_probability(self, n: int) -> float:
        """P(keep | n units)."""
        return float(keep_probabilities(self.table, np.asarray([n], dtype=np.int64))[0])

    def keep(self, units: NDArray[np.int64], draws: RandomDraws) -> NDArray[np.bool_]:
        """One keep decision per partition of ``units`` distinct units: Bernoulli(π(n))."""
        return draws.keep(keep_probabilities(self.table, units))


@dataclass(frozen=True)
class _ThresholdRule(_Rule):
    """Thresholding: keep iff n >= min_units and n + X >= T, X integer noise on unit counts."""

    @property
    def noise(self) -> DiscreteLaplace | DiscreteGaussian:
        """The noise added to unit counts."""
        raise NotImplementedError

    @cached_property
    def threshold(self) -> int:
        """Integer T: keep iff n + X >= T, from the exact tail of the noise drawn."""
        return noise_threshold(self.noise, self.delta_p, self.min_units)

    def keep_probability(self, n: int) -> float:
        """P(keep | n units) = P(X >= T − n); 0 for n <= 0 (the key is not in the data)."""
        if n <= 0:
            return 0.0
        return self.noise.upper_tail(self.threshold - n)

    def keep(self, units: NDArray[np.int64], draws: RandomDraws) -> NDArray[np.bool_]:
        """One keep decision per partition: one noise draw on its unit count, then T."""
        noisy_units = units + draws.integer_noise(self.noise, len(units))
        return np.asarray((units >= self.min_units) & (noisy_units >= self.threshold), dtype=bool)


@dataclass(frozen=True)
class LaplaceThresholdSelection(_ThresholdRule):
    """Laplace thresholding: keep iff n + X >= T, X discrete Laplace of scale L0/ε (unit counts).

    The noisy count is ε-DP (L1 sensitivity L0); a partition only one dataset has is
    kept with probability <= δ/L0, at most L0 such partitions: (ε, δ)-DP in total.
    The noisy n + X may be released as PRIVACY_ID_COUNT at no extra cost.
    """

    mechanism: ClassVar[str] = "laplace_threshold"

    def _noise_terms(self) -> dict[str, float]:
        return super()._noise_terms() | {"noise_scale": float(self.noise.scale)}

    @cached_property
    def noise(self) -> DiscreteLaplace:
        """Discrete Laplace with scale L0/ε rounded up (unit counts)."""
        return laplace_for_epsilon(Sensitivity(self.max_partitions_per_unit, 1), self.epsilon)


@dataclass(frozen=True)
class GaussianThresholdSelection(_ThresholdRule):
    """Gaussian thresholding: keep iff n + X >= T, X discrete Gaussian (unit counts).

    σ is calibrated to (ε, δ/2) for L2 sensitivity √L0 through the tight zCDP
    conversion; T keeps a one-unit partition with probability <= (δ/2)/L0, at most L0
    of them: (ε, δ)-DP in total. The noisy n + X may be released as PRIVACY_ID_COUNT.
    ε_p = ε/L0 is for display only: the noise is calibrated jointly over L0 partitions.
    Its spend is ε and δ/2 from the noise, δ/2 from the threshold.
    """

    mechanism: ClassVar[str] = "gaussian_threshold"

    def _noise_terms(self) -> dict[str, float]:
        root_l0 = math.sqrt(self.max_partitions_per_unit)
        return {"l2_sensitivity": root_l0, "noise_scale": self.noise.sigma}

    @property
    def delta_p(self) -> float:
        """Per-partition δ of the threshold: (δ/2)/L0."""
        return (self.delta / 2.0) / self.max_partitions_per_unit

    @cached_property
    def rho(self) -> float:
        """zCDP parameter of the noisy counts: largest ρ that converts to (ε, δ/2)."""
        return rho_for_epsilon_delta(self.epsilon, self.delta / 2.0)

    @cached_property
    def noise(self) -> DiscreteGaussian:
        """Discrete Gaussian with σ² = L0/(2ρ) rounded up (unit counts)."""
        return gaussian_for_rho(Sensitivity(self.max_partitions_per_unit, 1), self.rho)


SelectionRule = TruncatedGeometricSelection | LaplaceThresholdSelection | GaussianThresholdSelection
ThresholdRule = LaplaceThresholdSelection | GaussianThresholdSelection
