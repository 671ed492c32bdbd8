"""Integer noise distributions: exact sampling plus their public error statistics.

Both distributions live on the integers (grid units). Sampling delegates to the
exact samplers in :mod:`dp_ops.samplers`; everything else here (pmf, variance,
tails, confidence half-widths) is public post-processing of the distribution's
parameter and never touches data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from dp_ops.entropy import RandomBits
from dp_ops.samplers import sample_discrete_gaussian, sample_discrete_laplace

__all__ = ["DiscreteGaussian", "DiscreteLaplace", "LinearNoise", "NoiseDistribution"]

# Half-width of the summation window of the discrete Gaussian, in units of σ.
# The mass outside ±(WINDOW_SIGMAS·σ + WINDOW_EXTRA) is below 2·Φ(−12) ≈ 4e-33,
# far below the 1e-15 the statistics need.
_WINDOW_SIGMAS = 12
_WINDOW_EXTRA = 10
# Above this σ the (one-sided) window would hold more than ~790k points; the
# normaliser and tails then come from the Poisson-summation / Euler–Maclaurin
# forms, whose neglected terms are negligible there (see DiscreteGaussian).
_SUMMATION_MAX_SIGMA = 2.0**16


def _check_alpha(alpha: float) -> None:
    if not (math.isfinite(alpha) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def smallest_integer(predicate: Callable[[int], bool]) -> int:
    """Smallest integer s with predicate(s) true, for a predicate monotone (false→true) in s."""
    if predicate(0):
        hi, step = 0, 1
        while predicate(hi - step):
            hi -= step
            step *= 2
        lo = hi - step  # predicate(lo) is false
    else:
        lo, step = 0, 1
        while not predicate(lo + step):
            lo += step
            step *= 2
        hi = lo + step  # predicate(hi) is true
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if predicate(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _smallest_nonnegative(predicate: Callable[[int], bool]) -> int:
    """Smallest h >= 0 with predicate(h) true, for a predicate monotone in h."""
    return 0 if predicate(0) else smallest_integer(predicate)


def _positive_fraction(value: Fraction, name: str) -> Fraction:
    exact = Fraction(value)
    if exact <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return exact


@dataclass(frozen=True)
class DiscreteLaplace:
    """Discrete Laplace (two-sided geometric): P(k) ∝ exp(−|k|/scale), k ∈ ℤ.

    With scale b = Δ1/ε on an integer query of L1 sensitivity Δ1 it is ε-DP:
    P(k)/P(k+Δ1) <= exp(Δ1/b) for every k.
    """

    scale: Fraction
    kind: ClassVar[str] = "discrete_laplace"

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", _positive_fraction(self.scale, "scale"))

    @property
    def _t(self) -> float:
        """The rate t = 1/b as a correctly rounded float."""
        return float(1 / self.scale)

    def sample(self, size: int, bits: RandomBits | None = None) -> NDArray[np.int64]:
        """Draw `size` exact, independent samples from fresh OS randomness (or `bits`)."""
        return sample_discrete_laplace(self.scale, size, bits)

    def pmf(self, k: NDArray[np.int64]) -> NDArray[np.float64]:
        """P(X = k) = tanh(t/2)·exp(−|k|·t), elementwise."""
        t = self._t
        absk = np.abs(np.asarray(k, dtype=np.float64))
        return np.asarray(math.tanh(t / 2.0) * np.exp(-absk * t), dtype=np.float64)

    def variance(self) -> float:
        """Var X = 2e^{−t}/(1−e^{−t})² = 1/(2·sinh²(t/2))."""
        return 1.0 / (2.0 * math.sinh(self._t / 2.0) ** 2)

    def std(self) -> float:
        """Standard deviation of the noise (grid units)."""
        return math.sqrt(self.variance())

    def tail_probability(self, k: int) -> float:
        """P(|X| >= k): 1 for k <= 0, 2e^{−kt}/(1+e^{−t}) for k >= 1."""
        if k <= 0:
            return 1.0
        return min(1.0, 2.0 * self.upper_tail(k))

    def upper_tail(self, k: int) -> float:
        """P(X >= k), exact closed form: e^{−kt}/(1+e^{−t}) for k >= 1, by symmetry below."""
        t = self._t
        if k >= 1:
            return math.exp(-k * t) / (1.0 + math.exp(-t))
        return 1.0 - math.exp(-(1 - k) * t) / (1.0 + math.exp(-t))

    def ci_half_width(self, alpha: float) -> int:
        """Smallest integer h >= 0 with P(|X| > h) <= alpha, so [v−h, v+h] covers >= 1−alpha."""
        _check_alpha(alpha)
        return _smallest_nonnegative(lambda h: self.tail_probability(h + 1) <= alpha)


@dataclass(frozen=True)
class DiscreteGaussian:
    """Discrete Gaussian: P(k) ∝ exp(−k²/(2σ²)), k ∈ ℤ (Canonne–Kamath–Steinke 2020).

    On an integer query of L2 sensitivity Δ2 it is (Δ2²/(2σ²))-zCDP.

    Statistics: for σ <= 2**16 the normaliser and tails are float sums of the pmf over
    the window |k| <= 12σ + 10 (neglected mass < 1e-32), cached per instance. For
    larger σ the window would be huge, so the normaliser uses Poisson summation
    (Σ e^{−k²/2σ²} = σ√(2π)·(1 + 2Σ_j e^{−2π²σ²j²}), the j-terms underflow) and the
    tails use Euler–Maclaurin (integral + f(k)/2 + the B2 and B4 terms); the dropped
    terms are O(f(k)·k⁵/σ¹⁰), negligible there.
    """

    sigma_squared: Fraction
    kind: ClassVar[str] = "discrete_gaussian"

    def __post_init__(self) -> None:
        exact = _positive_fraction(self.sigma_squared, "sigma_squared")
        object.__setattr__(self, "sigma_squared", exact)

    @property
    def sigma(self) -> float:
        """σ = sqrt(sigma_squared) (the scale parameter, not exactly the std)."""
        return math.sqrt(float(self.sigma_squared))

    @cached_property
    def _summed(self) -> bool:
        return self.sigma <= _SUMMATION_MAX_SIGMA

    @cached_property
    def _window(self) -> int:
        return math.ceil(_WINDOW_SIGMAS * self.sigma) + _WINDOW_EXTRA

    @cached_property
    def _weights(self) -> NDArray[np.float64]:
        """Unnormalised weights w_k = exp(−k²/(2σ²)) for k = 0..window."""
        k = np.arange(self._window + 1, dtype=np.float64)
        return np.asarray(np.exp(-(k * k) / (2.0 * float(self.sigma_squared))), dtype=np.float64)

    @cached_property
    def _suffix(self) -> NDArray[np.float64]:
        """Unnormalised suffix sums S_k = Σ_{m>=k} w_m for k = 0..window (small terms first)."""
        return np.asarray(np.cumsum(self._weights[::-1])[::-1], dtype=np.float64)

    @cached_property
    def _normaliser(self) -> float:
        """Z = Σ_k exp(−k²/(2σ²)) over all integers."""
        if self._summed:
            return float(2.0 * self._suffix[0] - self._weights[0])
        return self.sigma * math.sqrt(2.0 * math.pi)

    def _log_weight(self, k: float) -> float:
        return -(k * k) / (2.0 * float(self.sigma_squared))

    def _unnormalised_upper_tail(self, k: int) -> float:
        """Σ_{m>=k} exp(−m²/(2σ²)) for k >= 0."""
        if self._summed:
            if k <= self._window:
                return float(self._suffix[k])
            # Beyond the window: geometric upper bound (ratio of consecutive
            # terms is at most e^{−(2k+1)/(2σ²)}), conservative and < 1e-32·Z.
            ratio = -math.expm1(-(2 * k + 1) / (2.0 * float(self.sigma_squared)))
            return math.exp(self._log_weight(k)) / ratio
        sigma = self.sigma
        f_k = math.exp(self._log_weight(k))
        integral = sigma * math.sqrt(math.pi / 2.0) * math.erfc(k / (sigma * math.sqrt(2.0)))
        s2 = float(self.sigma_squared)
        # Euler–Maclaurin: −(B2/2!)·f′(k) = k·f(k)/(12σ²) and −(B4/4!)·f‴(k) = f‴(k)/720.
        third_derivative = f_k * (3.0 * k / s2**2 - k**3 / s2**3)
        return integral + f_k / 2.0 + k * f_k / (12.0 * s2) + third_derivative / 720.0

    def sample(self, size: int, bits: RandomBits | None = None) -> NDArray[np.int64]:
        """Draw `size` exact, independent samples from fresh OS randomness (or `bits`)."""
        return sample_discrete_gaussian(self.sigma_squared, size, bits)

    def pmf(self, k: NDArray[np.int64]) -> NDArray[np.float64]:
        """P(X = k) = exp(−k²/(2σ²))/Z, elementwise."""
        kf = np.asarray(k, dtype=np.float64)
        weights = np.exp(-(kf * kf) / (2.0 * float(self.sigma_squared)))
        return np.asarray(weights / self._normaliser, dtype=np.float64)

    @cached_property
    def _variance(self) -> float:
        if not self._summed:
            # Poisson summation: E[X²] = σ²·(1 − O(σ²e^{−2π²σ²})), exact in double here.
            return float(self.sigma_squared)
        k = np.arange(self._window + 1, dtype=np.float64)
        second_moment = 2.0 * math.fsum((k * k * self._weights).tolist())
        return second_moment / self._normaliser

    def variance(self) -> float:
        """Var X = Σ k²·P(k) (<= σ², equal to it in double precision once σ >= 2)."""
        return self._variance

    def std(self) -> float:
        """Standard deviation of the noise (grid units)."""
        return math.sqrt(self._variance)

    def upper_tail(self, k: int) -> float:
        """P(X >= k), from the pmf summed over the window (see class docstring)."""
        if k >= 1:
            return min(1.0, self._unnormalised_upper_tail(k) / self._normaliser)
        return max(0.0, 1.0 - self._unnormalised_upper_tail(1 - k) / self._normaliser)

    def tail_probability(self, k: int) -> float:
        """P(|X| >= k): 1 for k <= 0, 2·P(X >= k) for k >= 1."""
        if k <= 0:
            return 1.0
        return min(1.0, 2.0 * self.upper_tail(k))

    def ci_half_width(self, alpha: float) -> int:
        """Smallest integer h >= 0 with P(|X| > h) <= alpha, so [v−h, v+h] covers >= 1−alpha."""
        _check_alpha(alpha)
        return _smallest_nonnegative(lambda h: self.tail_probability(h + 1) <= alpha)


NoiseDistribution = DiscreteLaplace | DiscreteGaussian


@dataclass(frozen=True)
class LinearNoise:
    """The noise of Σ c_i·X_i for independent integer noises X_i (a derived value).

    Public statistics only (it is never sampled: the X_i are drawn by their own
    mechanisms). The half-width is a union bound: each term at alpha / (number of terms),
    so [v − h, v + h] covers the derived value's noise with probability >= 1 − alpha.
    """

    terms: tuple[tuple[int, NoiseDistribution], ...]

    def variance(self) -> float:
        """Σ c_i²·Var(X_i) (the X_i are independent)."""
        return math.fsum(c * c * d.variance() for c, d in self.terms)

    def std(self) -> float:
        """The standard deviation, √variance."""
        return math.sqrt(self.variance())

    def ci_half_width(self, alpha: float) -> int:
        """Σ |c_i|·h_i(alpha / n): a conservative (1 − alpha) half-width (union bound)."""
        _check_alpha(alpha)
        share = alpha / len(self.terms)
        return sum(abs(c) * d.ci_half_width(share) for c, d in self.terms)
