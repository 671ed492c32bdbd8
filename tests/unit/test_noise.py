"""Noise distributions: pmf, moments, tails and intervals against brute-force pmf sums."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from dp_ops import noise as noise_module
from dp_ops.noise import DiscreteGaussian, DiscreteLaplace

LAPLACE_SCALES = [Fraction(1, 2), Fraction("7.3"), Fraction(1000)]
GAUSSIAN_SIGMAS = [Fraction(1, 2), Fraction("7.3"), Fraction(1000)]
ALPHAS = [0.5, 0.1, 0.05, 0.01, 1e-6]


def brute_force_pmf(dist: DiscreteLaplace | DiscreteGaussian) -> tuple[np.ndarray, np.ndarray]:
    """Independent pmf over a window whose neglected mass is far below 1e-15."""
    if isinstance(dist, DiscreteLaplace):
        b = float(dist.scale)
        half_width = math.ceil(60 * b) + 10
        ks = np.arange(-half_width, half_width + 1)
        weights = np.exp(-np.abs(ks) / b)
    else:
        s2 = float(dist.sigma_squared)
        half_width = math.ceil(40 * math.sqrt(s2)) + 10
        ks = np.arange(-half_width, half_width + 1)
        weights = np.exp(-(ks.astype(float) ** 2) / (2 * s2))
    return ks, weights / math.fsum(weights.tolist())


class Tails:
    """Brute-force tail sums of a pmf on the window ks (ascending), small terms first."""

    def __init__(self, ks: np.ndarray, pmf: np.ndarray) -> None:
        self.low = int(ks[0])
        self.suffix = np.cumsum(pmf[::-1])[::-1]  # suffix[i] = P(X >= ks[i])
        self.prefix = np.cumsum(pmf)  # prefix[i] = P(X <= ks[i])

    def upper(self, k: int) -> float:
        """P(X >= k)."""
        i = k - self.low
        return 1.0 if i <= 0 else (0.0 if i >= len(self.suffix) else float(self.suffix[i]))

    def lower(self, k: int) -> float:
        """P(X <= k)."""
        i = k - self.low
        return 0.0 if i < 0 else (1.0 if i >= len(self.prefix) else float(self.prefix[i]))

    def two_sided(self, k: int) -> float:
        """P(|X| >= k)."""
        return 1.0 if k <= 0 else self.upper(k) + self.lower(-k)


# A distribution, its brute-force window and pmf, and the brute-force tails on that window.
Case = tuple[DiscreteLaplace | DiscreteGaussian, np.ndarray, np.ndarray, Tails]


def all_distributions() -> list[DiscreteLaplace | DiscreteGaussian]:
    laplaces: list[DiscreteLaplace | DiscreteGaussian] = [
        DiscreteLaplace(s) for s in LAPLACE_SCALES
    ]
    gaussians: list[DiscreteLaplace | DiscreteGaussian] = [
        DiscreteGaussian(s * s) for s in GAUSSIAN_SIGMAS
    ]
    return laplaces + gaussians


DISTRIBUTIONS = all_distributions()
IDS = [f"{d.kind}-{d!r}" for d in DISTRIBUTIONS]


@pytest.fixture(scope="module", params=DISTRIBUTIONS, ids=IDS)
def case(request: pytest.FixtureRequest) -> Case:
    dist = request.param
    ks, pmf = brute_force_pmf(dist)
    return dist, ks, pmf, Tails(ks, pmf)


def test_pmf_matches_brute_force_and_sums_to_one(case: Case) -> None:
    dist, ks, pmf, _ = case
    ours = dist.pmf(ks)
    assert math.fsum(ours.tolist()) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(ours, pmf, rtol=1e-9, atol=1e-300)


def test_variance_and_std_match_brute_force(case: Case) -> None:
    dist, ks, pmf, _ = case
    variance = math.fsum((ks.astype(float) ** 2 * pmf).tolist())
    assert dist.variance() == pytest.approx(variance, rel=1e-9)
    assert dist.std() == pytest.approx(math.sqrt(variance), rel=1e-9)


def test_laplace_variance_closed_form() -> None:
    for scale in LAPLACE_SCALES:
        t = 1 / float(scale)
        expected = 2 * math.exp(-t) / (1 - math.exp(-t)) ** 2
        assert DiscreteLaplace(scale).variance() == pytest.approx(expected, rel=1e-12)


def test_tails_match_brute_force(case: Case) -> None:
    dist, _, _, tails = case
    width = dist.std()
    probes = sorted(
        {-3, -1, 0, 1, 2, 3, 5}
        | {int(c * width) for c in (0.5, 1, 2, 4, 8)}
        | {-int(c * width) for c in (0.5, 2)}
    )
    for k in probes:
        assert dist.upper_tail(k) == pytest.approx(tails.upper(k), rel=1e-9, abs=1e-300), k
        assert dist.tail_probability(k) == pytest.approx(tails.two_sided(k), rel=1e-9), k
    assert dist.tail_probability(0) == 1.0
    assert dist.tail_probability(-5) == 1.0


def test_laplace_tail_closed_form() -> None:
    dist = DiscreteLaplace(Fraction("7.3"))
    t = 1 / 7.3
    for k in (1, 2, 10, 50):
        expected = 2 * math.exp(-k * t) / (1 + math.exp(-t))
        assert dist.tail_probability(k) == pytest.approx(expected, rel=1e-12)


def test_ci_half_width_is_minimal_and_covers(case: Case) -> None:
    dist, _, _, tails = case
    for alpha in ALPHAS:
        h = dist.ci_half_width(alpha)
        # P(|X| > h) = P(|X| >= h + 1) <= alpha, and h − 1 would not do.
        assert tails.two_sided(h + 1) <= alpha * (1 + 1e-9), (alpha, h)
        assert 1 - tails.two_sided(h + 1) >= 1 - alpha - 1e-12
        if h > 0:
            assert tails.two_sided(h) > alpha * (1 - 1e-9), (alpha, h)


def test_ci_half_width_exact_search_small_cases() -> None:
    """Full brute-force search (every h) for two narrow distributions."""
    for dist in (DiscreteLaplace(Fraction(1, 2)), DiscreteGaussian(Fraction(1, 4))):
        tails = Tails(*brute_force_pmf(dist))
        for alpha in ALPHAS:
            expected = next(h for h in range(100) if tails.two_sided(h + 1) <= alpha)
            assert dist.ci_half_width(alpha) == expected


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, float("nan")])
def test_ci_half_width_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        DiscreteLaplace(Fraction(1)).ci_half_width(alpha)
    with pytest.raises(ValueError, match="alpha"):
        DiscreteGaussian(Fraction(1)).ci_half_width(alpha)


@pytest.mark.parametrize("bad", [Fraction(0), Fraction(-1, 3)])
def test_parameters_must_be_positive(bad: Fraction) -> None:
    with pytest.raises(ValueError, match="scale"):
        DiscreteLaplace(bad)
    with pytest.raises(ValueError, match="sigma_squared"):
        DiscreteGaussian(bad)


def test_kinds() -> None:
    assert DiscreteLaplace.kind == "discrete_laplace"
    assert DiscreteGaussian.kind == "discrete_gaussian"


def test_large_sigma_forms_agree_with_summation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Poisson-summation / Euler–Maclaurin path used for huge σ matches the summed one."""
    sigmas_squared = [Fraction(300**2), Fraction(1000**2), Fraction(4321**2, 7)]
    multiples = (-3.0, -0.5, 0.0, 0.3, 1.0, 2.0, 5.0, 9.0)

    def summary(dist: DiscreteGaussian) -> tuple[bool, float, list[float], list[int]]:
        ks = [int(c * dist.sigma) for c in multiples]
        return (
            dist._summed,
            dist.variance(),
            [dist.upper_tail(k) for k in ks],
            [dist.ci_half_width(alpha) for alpha in ALPHAS],
        )

    summed = [summary(DiscreteGaussian(s)) for s in sigmas_squared]
    monkeypatch.setattr(noise_module, "_SUMMATION_MAX_SIGMA", 10.0)
    analytic = [summary(DiscreteGaussian(s)) for s in sigmas_squared]
    for exact, approx in zip(summed, analytic, strict=True):
        assert exact[0]
        assert not approx[0]
        assert approx[1] == pytest.approx(exact[1], rel=1e-12)
        np.testing.assert_allclose(approx[2], exact[2], rtol=1e-9)
        assert approx[3] == exact[3]


def test_huge_sigma_uses_closed_forms() -> None:
    sigma = 3.0e7
    dist = DiscreteGaussian(Fraction(int(sigma) ** 2))
    assert dist.variance() == pytest.approx(sigma**2, rel=1e-12)
    h = dist.ci_half_width(0.05)
    assert h == pytest.approx(1.959963984540054 * sigma, rel=1e-6)
    assert dist.pmf(np.array([0]))[0] == pytest.approx(1 / (sigma * math.sqrt(2 * math.pi)))


def test_sampling_delegates_to_exact_samplers() -> None:
    for dist in (DiscreteLaplace(Fraction(3)), DiscreteGaussian(Fraction(9))):
        draws = dist.sample(4000)
        assert draws.dtype == np.int64
        assert draws.shape == (4000,)
        # Loose sanity only; the samplers' own tests carry the χ² checks.
        assert abs(draws.mean()) < 6 * dist.std() / math.sqrt(4000)
        assert draws.var() == pytest.approx(dist.variance(), rel=0.2)
