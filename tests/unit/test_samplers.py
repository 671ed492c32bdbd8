"""Statistical and behavioural tests of the exact samplers and their randomness source.

Goodness of fit: Pearson χ² of 100,000 draws against the exact pmf (float64), adjacent
support points pooled so every expected count is >= 5 (tails included in the edge bins).
A fit test fails when p < ALPHA = 1e-4, so each has a false-failure rate of 1e-4; the
same draws must be rejected (p < POWER_P = 1e-6) against the pmf at 0.7x and 1.3x the
scale, which shows the test can see a wrong scale. Rate tests use exact binomial p-values
with the same ALPHA. These tests draw from the OS CSPRNG (the production path); the
seeded PCG64 double below is used only where a test needs determinism.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
from collections.abc import Callable
from fractions import Fraction
from functools import partial
from typing import cast

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from dp_ops import bernoulli, samplers
from dp_ops.entropy import OsRandomBits, uniform_below
from dp_ops.samplers import (
    sample_bernoulli,
    sample_discrete_gaussian,
    sample_discrete_laplace,
)

ALPHA = 1e-4  # significance of every fit / rate test = its false-failure rate
POWER_P = 1e-6  # a wrong scale must be rejected at least this strongly
N = 100_000
SCALES = [Fraction(1, 2), Fraction(1), Fraction("7.3"), Fraction(1000)]


# ----------------------------------------------------------------------------------------
# Test doubles and helpers
# ----------------------------------------------------------------------------------------


class PcgBits:
    """Deterministic RandomBits for tests only: numpy's PCG64 with a fixed seed."""

    def __init__(self, seed: int) -> None:
        self._generator = np.random.PCG64(seed)

    def uint64(self, size: int) -> npt.NDArray[np.uint64]:
        return self._generator.random_raw(size).astype(np.uint64)


class ConstantBits:
    """Every word equals ``word``: steers U to a chosen binary expansion."""

    def __init__(self, word: int) -> None:
        self.word = np.uint64(word)

    def uint64(self, size: int) -> npt.NDArray[np.uint64]:
        return np.full(size, self.word, dtype=np.uint64)


def laplace_pmf(scale: float, support: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """P(k) = tanh(1/(2b))·exp(-|k|/b)."""
    return math.tanh(1.0 / (2.0 * scale)) * np.exp(-np.abs(support) / scale)


def gaussian_pmf(sigma: float, support: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """exp(-k²/2σ²) normalised over the support (the window leaves out < 2e-15 of the mass)."""
    weights = np.exp(-(support.astype(np.float64) ** 2) / (2.0 * sigma * sigma))
    result: npt.NDArray[np.float64] = weights / weights.sum()
    return result


def window(scale: float, kind: str) -> npt.NDArray[np.int64]:
    # Mass outside: < e^-40 (Laplace) or < 2e-15 (Gaussian, 8σ); it goes to the edge bins.
    half = math.ceil(40 * scale) + 10 if kind == "laplace" else math.ceil(8 * scale) + 10
    return np.arange(-half, half + 1, dtype=np.int64)


def pooled_bins(expected: npt.NDArray[np.float64], minimum: float) -> npt.NDArray[np.int64]:
    """Bin id per support point: adjacent points merged until each bin expects >= minimum."""
    ids = np.empty(expected.size, dtype=np.int64)
    current, total = 0, 0.0
    for i, value in enumerate(expected.tolist()):
        ids[i] = current
        total += value
        if total >= minimum:
            current, total = current + 1, 0.0
    if total > 0.0 and current > 0:  # short last bin: merge it into its neighbour
        ids[ids == current] = current - 1
    return ids


def chi2_pvalue(
    samples: npt.NDArray[np.int64],
    pmf: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.float64]],
    support: npt.NDArray[np.int64],
) -> float:
    """Pearson χ² p-value of the samples against pmf; tails pooled into the edge bins.

    Each support point is its own bin where it expects >= 5 draws. Over windows wider
    than 100,000 points (σ = 1e6), runs of `width` adjacent points form one bin first.
    """
    probabilities = pmf(support)
    tail = max(0.0, 1.0 - float(probabilities.sum())) / 2.0
    probabilities = probabilities.copy()
    probabilities[0] += tail
    probabilities[-1] += tail
    width = max(1, support.size // 100_000)
    blocks = np.arange(support.size) // width
    # bincount with float weights returns float64 (the stubs only know the integer case).
    expected_blocks = cast(
        npt.NDArray[np.float64], np.bincount(blocks, weights=probabilities * samples.size)
    )
    ids = pooled_bins(expected_blocks, 5.0)[blocks]
    expected_points = probabilities * samples.size
    bins = int(ids[-1]) + 1
    expected = np.bincount(ids, weights=expected_points, minlength=bins)
    assert expected.min() >= 5.0
    positions = np.clip(samples, support[0], support[-1]) - support[0]
    observed = np.bincount(ids[positions], minlength=bins)
    statistic = float(((observed - expected) ** 2 / expected).sum())
    return float(stats.chi2.sf(statistic, bins - 1))


def assert_rate(successes: int, trials: int, p: float) -> None:
    """Two-sided exact binomial test at level ALPHA."""
    pvalue = stats.binomtest(successes, trials, p).pvalue
    assert pvalue > ALPHA, (successes, trials, p, pvalue)


def fit_and_power(
    samples: npt.NDArray[np.int64],
    scale: float,
    pmf: Callable[[float, npt.NDArray[np.int64]], npt.NDArray[np.float64]],
    kind: str,
) -> None:
    """Fit at the true scale (p > ALPHA) and rejection at 0.7x and 1.3x (p < POWER_P)."""
    assert samples.dtype == np.int64
    assert samples.shape == (N,)
    p_true = chi2_pvalue(samples, lambda k: pmf(scale, k), window(scale, kind))
    assert p_true > ALPHA, f"fit rejected at the true scale {scale}: p = {p_true:.3g}"
    for factor in (0.7, 1.3):
        wrong = scale * factor
        p_wrong = chi2_pvalue(samples, partial(pmf, wrong), window(wrong, kind))
        assert p_wrong < POWER_P, f"no power against {factor}x scale: p = {p_wrong:.3g}"


# ----------------------------------------------------------------------------------------
# Discrete Laplace
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", SCALES, ids=str)
def test_discrete_laplace_fits_exact_pmf(scale: Fraction) -> None:
    """χ² fit of 100k draws at scales 0.5, 1, 7.3, 1000; false-failure rate alpha = 1e-4.

    Power: the same draws are rejected at 0.7x and 1.3x the scale with p < 1e-6.
    """
    samples = sample_discrete_laplace(scale, N)
    fit_and_power(samples, float(scale), laplace_pmf, "laplace")


@pytest.mark.parametrize(
    "scale",
    [
        Fraction(73 * 2**52 + 1, 10 * 2**52),  # t in (2**56, 2**62]: block mode, integer draws
        Fraction(73 * 2**60 + 1, 10 * 2**60),  # t > 2**62: block mode, certified float draws
        Fraction(2**70, 2**71 + 1),  # scale < 1 with a huge denominator
        Fraction(2**9) / Fraction(0.3),  # sensitivity / float epsilon: t = 2**63
    ],
    ids=["t58bit", "t66bit", "tiny-den71bit", "delta-over-float-eps"],
)
def test_discrete_laplace_huge_rationals_fit(scale: Fraction) -> None:
    """Scales whose numerator/denominator exceed int64 sizes (block-length mode).

    χ² fit of 100k draws, false-failure rate alpha = 1e-4; power at 0.7x/1.3x, p < 1e-6.
    """
    samples = sample_discrete_laplace(scale, N)
    fit_and_power(samples, float(scale), laplace_pmf, "laplace")


# ----------------------------------------------------------------------------------------
# Discrete Gaussian
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", SCALES, ids=str)
def test_discrete_gaussian_fits_exact_pmf(sigma: Fraction) -> None:
    """χ² fit of 100k draws at σ = 0.5, 1, 7.3, 1000 (σ² = Fraction(σ)**2); alpha = 1e-4.

    Power: the same draws are rejected at 0.7x and 1.3x σ with p < 1e-6.
    """
    samples = sample_discrete_gaussian(sigma**2, N)
    fit_and_power(samples, float(sigma), gaussian_pmf, "gaussian")


@pytest.mark.parametrize(
    "sigma_squared",
    [Fraction(7.3) ** 2, Fraction(10**12), Fraction(2**61 + 1, 2**40)],
    ids=["float-7.3-squared", "sigma-1e6", "huge-den"],
)
def test_discrete_gaussian_large_denominators_fit(sigma_squared: Fraction) -> None:
    """σ² with 100+-bit numerators or large σ (acceptance exponent beyond int64).

    χ² fit of 100k draws, false-failure rate alpha = 1e-4; power at 0.7x/1.3x, p < 1e-6.
    """
    sigma = math.sqrt(float(sigma_squared))
    samples = sample_discrete_gaussian(sigma_squared, N)
    fit_and_power(samples, sigma, gaussian_pmf, "gaussian")


def test_discrete_gaussian_exact_fallback_path_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force every acceptance through the exact Fraction path (no float enclosure).

    χ² fit of 10,000 draws at σ = 1.5, false-failure rate alpha = 1e-4.
    """

    def no_enclosure(
        magnitudes: npt.NDArray[np.int64], sigma_squared: Fraction, center: Fraction
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        return np.zeros(magnitudes.size), np.full(magnitudes.size, np.inf)

    monkeypatch.setattr(samplers, "_gaussian_exponent_bounds", no_enclosure)
    samples = sample_discrete_gaussian(Fraction(9, 4), 10_000)
    p = chi2_pvalue(samples, lambda k: gaussian_pmf(1.5, k), window(1.5, "gaussian"))
    assert p > ALPHA


def test_discrete_gaussian_tiny_variance_uses_exact_path() -> None:
    """σ² = 2^-300 (outside the float range): P(k != 0) < 1e-80, so all draws are 0."""
    samples = sample_discrete_gaussian(Fraction(1, 2**300), 200)
    assert samples.dtype == np.int64
    assert not samples.any()


# ----------------------------------------------------------------------------------------
# Exact building blocks
# ----------------------------------------------------------------------------------------


def test_bernoulli_exp_neg_one_rate() -> None:
    """Bernoulli(exp(-1)) (mixed-radix table + Algorithm 1 tail): binomial test, alpha = 1e-4."""
    draws = bernoulli.bernoulli_exp_neg_one(OsRandomBits(), 400_000)
    assert_rate(int(draws.sum()), draws.size, math.exp(-1))


@pytest.mark.parametrize(
    "gamma",
    [Fraction(0), Fraction(1, 3), Fraction(5, 2), Fraction(2**70 + 1, 2**70)],
    ids=str,
)
def test_bernoulli_exp_neg_const_rate(gamma: Fraction) -> None:
    """Bernoulli(exp(-γ)) for constant γ, incl. a 71-bit denominator: alpha = 1e-4."""
    draws = bernoulli.bernoulli_exp_neg_const(OsRandomBits(), gamma, 200_000)
    assert_rate(int(draws.sum()), draws.size, math.exp(-float(gamma)))


def test_bernoulli_enclosed_exact_settlement() -> None:
    """Uninformative bounds [0, 1] force every draw through the exact rational settlement."""
    size = 2_000
    draws = bernoulli.bernoulli_enclosed(
        OsRandomBits(), np.zeros(size), np.ones(size), lambda _i: Fraction(1, 3)
    )
    assert_rate(int(draws.sum()), size, 1 / 3)


def test_exact_scalar_bernoulli_exp_neg_rate() -> None:
    """The scalar exact Algorithm 1 (fallback path) at γ = 1.25: binomial test, alpha = 1e-4."""
    bits = OsRandomBits()
    trials = 5_000
    hits = sum(bernoulli.bernoulli_exp_neg_exact(bits, Fraction(5, 4)) for _ in range(trials))
    assert_rate(hits, trials, math.exp(-1.25))


def test_uniform_below_int_multiword_range() -> None:
    """Bounds beyond 2**62 use several words and stay in range, both halves populated."""
    bits = OsRandomBits()
    bound = 3 * 2**100 + 7
    values = [bernoulli.uniform_below_int(bits, bound) for _ in range(2_000)]
    assert all(0 <= v < bound for v in values)
    assert_rate(sum(v < bound // 2 for v in values), len(values), 0.5)


def test_combine_is_exact_beyond_int64_intermediates() -> None:
    """factor·V + U is formed with Python ints when it would overflow; only a result that
    does not fit int64 raises (never wraps)."""
    high = np.array([3, 2**61], dtype=np.int64)
    low = np.array([1, 3], dtype=np.int64)
    assert samplers._combine(high, 4, low, 4).tolist() == [3, 2**61]
    with pytest.raises(OverflowError):
        samplers._combine(high, 4, low)


def test_samplers_draw_only_from_the_given_bits() -> None:
    """Same bit stream in, same draws out (nothing else feeds the samplers)."""
    for draw in (
        lambda b: sample_discrete_laplace(Fraction("7.3"), 5_000, b),
        lambda b: sample_discrete_gaussian(Fraction(1000) ** 2, 5_000, b),
        lambda b: sample_bernoulli(np.linspace(0.0, 1.0, 5_000), b),
    ):
        assert np.array_equal(draw(PcgBits(7)), draw(PcgBits(7)))
        assert not np.array_equal(draw(PcgBits(7)), draw(PcgBits(8)))


# ----------------------------------------------------------------------------------------
# uniform_below
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bound", [3, 5, 7, 1000], ids=str)
def test_uniform_below_is_uniform(bound: int) -> None:
    """χ² against the uniform law on [0, bound); false-failure rate alpha = 1e-4."""
    values = uniform_below(OsRandomBits(), bound, N)
    assert values.dtype == np.int64
    assert values.min() >= 0
    assert values.max() < bound
    observed = np.bincount(values, minlength=bound)
    assert stats.chisquare(observed).pvalue > ALPHA


def test_uniform_below_rejects_modulo_bias() -> None:
    """Power check: the χ² above does see the bias of `word % 3` style sampling (p < 1e-6)."""
    biased = (uniform_below(OsRandomBits(), 8, N) % 3).astype(np.int64)
    assert stats.chisquare(np.bincount(biased, minlength=3)).pvalue < POWER_P


def test_uniform_below_large_bound() -> None:
    """bound = 2**61 + 5: in range, and both halves equally likely (binomial, alpha = 1e-4)."""
    bound = 2**61 + 5
    values = uniform_below(OsRandomBits(), bound, N)
    assert values.min() >= 0
    assert values.max() < bound
    assert_rate(int((values < 2**60).sum()), N, 2**60 / bound)
    assert uniform_below(OsRandomBits(), 2**62, 10).max() < 2**62


def test_uniform_below_bound_one_gives_zeros() -> None:
    values = uniform_below(ConstantBits(2**64 - 1), 1, 1000)
    assert values.dtype == np.int64
    assert not values.any()


class _AllOnesThen0x55:
    """First call: all-ones words; later calls: 0x5555... words."""

    def __init__(self) -> None:
        self.calls = 0

    def uint64(self, size: int) -> npt.NDArray[np.uint64]:
        self.calls += 1
        word = 2**64 - 1 if self.calls == 1 else 0x5555555555555555
        return np.full(size, word, dtype=np.uint64)


def test_uniform_below_rejects_instead_of_reducing() -> None:
    """bound 3 uses 2-bit fields: the all-ones field 3 is rejected and redrawn (a modulo
    reduction would have returned 3 % 3 = 0); the redraw 0b01 gives 1 everywhere."""
    bits = _AllOnesThen0x55()
    assert uniform_below(bits, 3, 100).tolist() == [1] * 100
    assert bits.calls >= 2


def test_uniform_below_per_element_bounds() -> None:
    """Array bounds: each element uniform on its own range (χ² per bound, alpha = 1e-4)."""
    bounds = np.tile(np.array([1, 2, 3, 6, 2**61 + 5], dtype=np.int64), 20_000)
    values = uniform_below(OsRandomBits(), bounds, bounds.size)
    assert values.dtype == np.int64
    assert (values >= 0).all()
    assert (values < bounds).all()
    assert not values[bounds == 1].any()
    for bound in (2, 3, 6):
        observed = np.bincount(values[bounds == bound], minlength=bound)
        assert stats.chisquare(observed).pvalue > ALPHA


@pytest.mark.parametrize("bound", [0, -3, 2**62 + 1])
def test_uniform_below_validates_bound(bound: int) -> None:
    with pytest.raises(ValueError, match="bound"):
        uniform_below(OsRandomBits(), bound, 3)


def test_uniform_below_validates_size() -> None:
    with pytest.raises(ValueError, match="size"):
        uniform_below(OsRandomBits(), 3, -1)
    assert uniform_below(OsRandomBits(), 3, 0).shape == (0,)


# ----------------------------------------------------------------------------------------
# sample_bernoulli
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.5, 0.3, 1e-3, 2.0**-12, 1.0 - 2.0**-20], ids=str)
def test_bernoulli_rates(p: float) -> None:
    """Rate of 1,000,000 draws: exact binomial test, false-failure rate alpha = 1e-4."""
    draws = sample_bernoulli(np.full(1_000_000, p))
    assert draws.dtype == np.bool_
    assert_rate(int(draws.sum()), draws.size, p)


def test_bernoulli_tiny_probability() -> None:
    """p = 2^-40 over 10^6 draws: firing at all has probability < 1e-6 (the failure rate)."""
    assert not sample_bernoulli(np.full(1_000_000, 2.0**-40)).any()


def test_bernoulli_zero_never_one_always() -> None:
    assert not sample_bernoulli(np.zeros(1_000_000)).any()
    assert sample_bernoulli(np.ones(1_000_000)).all()
    # Also at the extreme bit patterns: U = 0 and U just below 1.
    for word in (0, 2**64 - 1):
        assert not sample_bernoulli(np.zeros(100), ConstantBits(word)).any()
        assert sample_bernoulli(np.ones(100), ConstantBits(word)).all()


def test_bernoulli_compares_full_binary_expansion() -> None:
    """Deterministic U: the tiny-p path draws more words and compares them exactly.

    U = 0 (all-zero words) is below every p > 0, even 2^-1074; U = 2^-48·(1 - tiny) (a
    48-bit zero prefix followed by ones) is above 2^-60 but below 2^-40.
    """
    tiny = np.array([2.0**-40, 2.0**-60, 5e-324])
    assert sample_bernoulli(tiny, ConstantBits(0)).all()
    prefix_zero_then_ones = _ZeroPrefixThenOnes()
    assert sample_bernoulli(np.array([2.0**-40]), prefix_zero_then_ones).all()
    assert not sample_bernoulli(np.array([2.0**-60]), _ZeroPrefixThenOnes()).any()


class _ZeroPrefixThenOnes:
    """Two zero words (covering the 16- and 32-bit prefix draws), then all-ones words."""

    def __init__(self) -> None:
        self.calls = 0

    def uint64(self, size: int) -> npt.NDArray[np.uint64]:
        self.calls += 1
        word = 0 if self.calls <= 2 else 2**64 - 1
        return np.full(size, word, dtype=np.uint64)


def test_bernoulli_mixed_probabilities_and_shape() -> None:
    """Per-element p over a 2-D array: shape kept, each column's rate right (alpha = 1e-4)."""
    p = np.tile(np.array([0.0, 0.25, 0.75, 1.0]), (50_000, 1))
    draws = sample_bernoulli(p)
    assert draws.shape == p.shape
    assert not draws[:, 0].any()
    assert draws[:, 3].all()
    assert_rate(int(draws[:, 1].sum()), 50_000, 0.25)
    assert_rate(int(draws[:, 2].sum()), 50_000, 0.75)


@pytest.mark.parametrize("bad", [np.nan, -0.1, 1.5, -np.inf, np.inf])
def test_bernoulli_validates_probabilities(bad: float) -> None:
    with pytest.raises(ValueError, match="probabilities"):
        sample_bernoulli(np.array([0.5, bad]))


# ----------------------------------------------------------------------------------------
# Output types and argument validation
# ----------------------------------------------------------------------------------------


def test_output_dtype_and_empty() -> None:
    for draws in (
        sample_discrete_laplace(Fraction(3), 10),
        sample_discrete_gaussian(Fraction(3), 10),
        sample_discrete_laplace(Fraction(3), 0),
        sample_discrete_gaussian(Fraction(3), 0),
    ):
        assert draws.dtype == np.int64
    # An int scale is accepted as an exact rational.
    assert sample_discrete_laplace(7, 0).shape == (0,)
    assert sample_bernoulli(np.zeros(0)).shape == (0,)


@pytest.mark.parametrize("scale", [Fraction(0), Fraction(-1, 2), -3, Fraction(2**50 + 1)])
def test_laplace_validates_scale(scale: Fraction) -> None:
    with pytest.raises(ValueError, match="scale"):
        sample_discrete_laplace(scale, 10)


@pytest.mark.parametrize("sigma_squared", [Fraction(0), Fraction(-4), Fraction(2**100 + 1)])
def test_gaussian_validates_sigma_squared(sigma_squared: Fraction) -> None:
    with pytest.raises(ValueError, match="sigma_squared"):
        sample_discrete_gaussian(sigma_squared, 10)


def test_samplers_validate_size_and_types() -> None:
    with pytest.raises(ValueError, match="size"):
        sample_discrete_laplace(Fraction(1), -1)
    with pytest.raises(ValueError, match="size"):
        sample_discrete_gaussian(Fraction(1), -5)
    with pytest.raises(TypeError):
        sample_discrete_laplace(1.5, 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sample_discrete_gaussian(2.0, 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sample_discrete_laplace(Fraction(1), 2.0)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------
# OsRandomBits
# ----------------------------------------------------------------------------------------


def test_os_random_bits_refuses_pickling_and_copying() -> None:
    bits = OsRandomBits()
    bits.uint64(3)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="pickled"):
            pickle.dumps(bits, protocol=protocol)
    with pytest.raises(TypeError):
        copy.copy(bits)
    with pytest.raises(TypeError):
        copy.deepcopy(bits)


def test_os_random_bits_refuses_cloudpickle() -> None:
    """Spark serialises UDF closures with cloudpickle: a captured source must fail loudly."""
    cloudpickle = pytest.importorskip("pyspark.cloudpickle")
    bits = OsRandomBits()

    def udf() -> npt.NDArray[np.uint64]:
        return bits.uint64(1)

    with pytest.raises(TypeError):
        cloudpickle.dumps(udf)


def test_os_random_bits_words() -> None:
    """Fresh writable arrays, no repeats, every bit position fair (binomial, alpha = 1e-4)."""
    bits = OsRandomBits()
    first = bits.uint64(10)
    first[:] = 0  # the caller owns (and may overwrite) the returned array
    words = np.concatenate([bits.uint64(1) for _ in range(1000)] + [bits.uint64(99_000)])
    assert words.dtype == np.uint64
    assert np.unique(words).size == words.size
    ones = np.unpackbits(words.view(np.uint8)).reshape(words.size, 64).sum(axis=0)
    pvalues = [stats.binomtest(int(c), words.size, 0.5).pvalue for c in ones]
    assert min(pvalues) > ALPHA / 64  # Bonferroni over the 64 positions
    assert bits.uint64(0).shape == (0,)
    with pytest.raises(ValueError, match="size"):
        bits.uint64(-1)


def test_os_random_bits_buffer_never_repeats_across_refills() -> None:
    """Many small requests across growing refills: every word distinct."""
    bits = OsRandomBits()
    words = np.concatenate([bits.uint64(size) for size in [1, 1000, 7, 5000, 3] * 30])
    assert np.unique(words).size == words.size


def _words_from_child(task: Callable[[], npt.NDArray[np.uint64]]) -> list[int]:
    """Run task in a forked child and return its words through a pipe."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_fd)
            os.write(write_fd, task().tobytes())
        finally:
            os._exit(0)
    os.close(write_fd)
    data = b""
    while chunk := os.read(read_fd, 4096):
        data += chunk
    os.close(read_fd)
    os.waitpid(pid, 0)
    words: list[int] = np.frombuffer(data, dtype=np.uint64).tolist()
    return words


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_os_random_bits_differ_across_fork() -> None:
    """Sources created in two forked children, and one shared source whose buffer was
    filled before the fork, all yield different words in each process."""
    fresh_a = _words_from_child(lambda: OsRandomBits().uint64(8))
    fresh_b = _words_from_child(lambda: OsRandomBits().uint64(8))
    assert len(fresh_a) == len(fresh_b) == 8
    assert fresh_a != fresh_b

    shared = OsRandomBits()
    shared.uint64(1)  # the buffer now holds words the children must not reuse
    child_a = _words_from_child(lambda: shared.uint64(8))
    child_b = _words_from_child(lambda: shared.uint64(8))
    parent = shared.uint64(8).tolist()
    assert len(child_a) == len(child_b) == 8
    assert len({tuple(child_a), tuple(child_b), tuple(parent)}) == 3
    assert not set(child_a) & set(parent)
    assert not set(child_b) & set(parent)
