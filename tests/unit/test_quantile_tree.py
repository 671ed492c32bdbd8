"""The quantile tree: shape, sensitivity, lazy noise, monotone quantiles, accuracy, intervals.

Statistical tests draw noise from a seeded PCG64 bit source (test-only, as in
test_samplers.py), so each run is reproducible; the false-failure rates stated below are
for a fresh seed. Data (not noise) comes from numpy's seeded Generator.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from dp_ops.calibration import Sensitivity, gaussian_for_rho, laplace_for_epsilon
from dp_ops.noise import DiscreteLaplace, NoiseDistribution
from dp_ops.quantile_tree import (
    NoiseDraw,
    NoisyTree,
    TreeShape,
    expected_rank_error,
    tree_sensitivity,
)
from tests.unit.test_samplers import PcgBits

SHAPE = TreeShape(0.0, 100.0)
SENSITIVITY = tree_sensitivity(1, 1, 4)
LAPLACE = laplace_for_epsilon(SENSITIVITY, 1.0)  # epsilon = 1
GAUSSIAN = gaussian_for_rho(SENSITIVITY, 0.5)  # rho = 1/2
PARTITION_SIZE = 1000


def zeros(noise: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
    return np.zeros(size, dtype=np.int64)


def seeded(seed: int) -> NoiseDraw:
    bits = PcgBits(seed)
    return lambda noise, size: noise.sample(size, bits)


def tree_of(
    values: npt.NDArray[np.float64], noise: NoiseDistribution, draw: NoiseDraw
) -> NoisyTree:
    leaves, counts = np.unique(SHAPE.leaf_of(values), return_counts=True)
    return NoisyTree(SHAPE, leaves, counts.astype(np.int64), noise, draw)


def sample_values(rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """A partition of 1,000 values: normal(40, 15) clipped to [0, 100]."""
    return np.clip(rng.normal(40.0, 15.0, PARTITION_SIZE), 0.0, 100.0)


# --- shape -------------------------------------------------------------------------------


def test_shape_defaults_and_leaf_formula() -> None:
    assert (SHAPE.height, SHAPE.branching, SHAPE.leaves) == (4, 16, 65_536)
    assert SHAPE.leaf_scale == 65_536 / 100.0
    values = np.array([-5.0, 0.0, 1e-9, 50.0, 99.999, 100.0, 1e9])
    direct = np.clip(np.floor((np.clip(values, 0, 100) - 0) * 655.36), 0, 65_535)
    assert SHAPE.leaf_of(values).tolist() == direct.astype(np.int64).tolist()
    assert SHAPE.leaf_of(values).tolist() == [0, 0, 0, 32_768, 65_535, 65_535, 65_535]
    assert SHAPE.leaf_of(values).dtype == np.int64
    with pytest.raises(ValueError, match="NaN"):
        SHAPE.leaf_of(np.array([1.0, math.nan]))


def test_leaf_edges_contain_their_values() -> None:
    values = np.random.default_rng(3).uniform(-10.0, 110.0, 5000)
    low, high = SHAPE.leaf_edges(SHAPE.leaf_of(values))
    clamped = np.clip(values, 0.0, 100.0)
    assert np.all(low <= clamped) and np.all(clamped <= high)
    assert np.allclose(high - low, 100.0 / 65_536)
    assert SHAPE.leaf_edges(np.array([65_535]))[1][0] == 100.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"lower": 1.0, "upper": 1.0}, "lower"),
        ({"lower": math.nan, "upper": 1.0}, "lower"),
        ({"lower": 0.0, "upper": math.inf}, "upper"),
        ({"lower": 0.0, "upper": 1.0, "height": 0}, "height"),
        ({"lower": 0.0, "upper": 1.0, "height": 9}, "height"),
        ({"lower": 0.0, "upper": 1.0, "branching": 1}, "branching"),
        ({"lower": 0.0, "upper": 1.0, "branching": 257}, "branching"),
        ({"lower": 0.0, "upper": 1.0, "height": 5, "branching": 32}, "branching"),
    ],
)
def test_shape_rejects(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TreeShape(**kwargs)  # type: ignore[arg-type]


# --- sensitivity -------------------------------------------------------------------------


@pytest.mark.parametrize(("l0", "linf", "height"), [(1, 1, 4), (3, 5, 4), (2, 7, 1), (4, 2, 8)])
def test_tree_sensitivity(l0: int, linf: int, height: int) -> None:
    sensitivity = tree_sensitivity(l0, linf, height)
    assert sensitivity.l1 == l0 * linf * height
    assert sensitivity.l2_squared == l0 * height * linf**2
    assert math.isclose(sensitivity.l2, math.sqrt(l0 * height) * linf)


def test_laplace_and_gaussian_calibrate_from_l1_and_l2_squared() -> None:
    assert LAPLACE.scale == 4  # l1 / epsilon = 1·1·4 / 1
    assert GAUSSIAN.sigma_squared == 4  # l2_squared / (2 rho) = 4 / 1
    wide = tree_sensitivity(1, 3, 4)  # l1 = 12, l2_squared = 36 (not 144)
    assert gaussian_for_rho(wide, 0.5).sigma_squared == 36


def test_scalar_sensitivity_unchanged() -> None:
    scalar = Sensitivity(3, 5)
    assert (scalar.l1, scalar.l2_squared, scalar.per_partition_l2_squared) == (15, 75, None)
    assert Sensitivity(3, 5, per_partition_l2_squared=25) == scalar.__class__(3, 5, 25)
    with pytest.raises(ValueError, match="per_partition_l2_squared"):
        Sensitivity(1, 2, per_partition_l2_squared=5)
    with pytest.raises(ValueError, match="per_partition_l2_squared"):
        Sensitivity(1, 2, per_partition_l2_squared=0)


# --- noiseless descent -------------------------------------------------------------------


def test_noiseless_quantiles_match_empirical_within_a_leaf() -> None:
    values = np.random.default_rng(7).uniform(0.0, 100.0, 2000)
    ranks = [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99]
    released = tree_of(values, LAPLACE, zeros).quantiles(ranks)
    exact = np.quantile(values, ranks, method="inverted_cdf")
    assert np.all(np.abs(released - exact) <= 100.0 / 65_536 + 1e-12)


def test_noiseless_point_masses_and_order() -> None:
    values = np.array([10.0] * 30 + [20.0] * 70)
    tree = tree_of(values, LAPLACE, zeros)
    released = tree.quantiles([0.9, 0.1, 0.5, 0.29, 0.31])
    leaf = 100.0 / 65_536
    assert np.allclose(released, [20.0, 10.0, 20.0, 10.0, 20.0], atol=leaf)
    ordered = np.argsort([0.9, 0.1, 0.5, 0.29, 0.31])
    assert np.all(np.diff(released[ordered]) >= 0)


def test_empty_tree_gives_the_midpoint() -> None:
    empty = np.array([], dtype=np.int64)
    tree = NoisyTree(SHAPE, empty, empty, LAPLACE, zeros)
    assert tree.quantiles([0.1, 0.5, 0.9]).tolist() == [50.0, 50.0, 50.0]
    low, high = tree.intervals([0.5], 0.05)
    assert (low[0], high[0]) == (0.0, 100.0)


def test_node_edges_and_noisy_total() -> None:
    assert SHAPE.node_edges(0, 0) == (0.0, 100.0)
    assert SHAPE.node_edges(1, 15) == (93.75, 100.0)
    assert SHAPE.node_edges(2, 1) == (100.0 / 256, 200.0 / 256)
    with pytest.raises(ValueError, match="node index"):
        SHAPE.node_edges(1, 16)
    tree = tree_of(np.array([1.0, 2.0, 99.0]), LAPLACE, zeros)
    assert tree.noisy_total() == 3
    assert tree.draws == 16


def test_production_draw_from_os_randomness() -> None:
    values = sample_values(np.random.default_rng(6))
    tree = tree_of(values, LAPLACE, lambda noise, size: noise.sample(size))
    released = tree.quantiles([0.25, 0.5, 0.75])
    assert np.all(np.diff(released) >= 0) and tree.draws <= 3 * 4 * 16


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="ranks"):
        tree_of(np.array([1.0]), LAPLACE, zeros).quantiles([0.0])
    with pytest.raises(ValueError, match="distinct"):
        NoisyTree(SHAPE, np.array([1, 1]), np.array([1, 2]), LAPLACE, zeros)
    with pytest.raises(ValueError, match="counts"):
        NoisyTree(SHAPE, np.array([1]), np.array([-1]), LAPLACE, zeros)
    with pytest.raises(ValueError, match="leaves"):
        NoisyTree(SHAPE, np.array([65_536]), np.array([1]), LAPLACE, zeros)


# --- lazy noise, once per node -----------------------------------------------------------


def test_each_sibling_block_is_drawn_once() -> None:
    calls: list[int] = []
    bits = PcgBits(11)

    def recording(noise: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
        calls.append(size)
        return noise.sample(size, bits)

    values = sample_values(np.random.default_rng(5))
    tree = tree_of(values, LAPLACE, recording)
    tree.quantiles([0.5] * 20)
    assert calls == [16] * 4  # one block per level for one distinct rank, however often
    ranks = [0.5] * 20 + list(np.linspace(0.01, 0.99, 50))
    first = tree.quantiles(ranks)
    assert tree.draws == 16 * len(calls) and set(calls) == {16}
    assert tree.draws <= len(ranks) * 4 * 16
    assert len(calls) <= 1 + 50 * 3  # the level-1 block is shared by all 51 distinct ranks
    drawn = len(calls)
    assert np.array_equal(tree.quantiles(ranks), first)  # memoised: same noise, no draws
    tree.intervals(ranks[:5], 0.05)
    assert np.array_equal(tree.quantiles(ranks), first)
    assert len(calls) >= drawn


# --- accuracy ----------------------------------------------------------------------------


def rank_errors(noise: NoiseDistribution, trials: int, seed: int) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    draw = seeded(seed)
    errors = []
    for _ in range(trials):
        values = sample_values(rng)
        median = tree_of(values, noise, draw).quantiles([0.5])[0]
        errors.append(abs(float(np.mean(values < median)) - 0.5))
    return np.asarray(errors)


def test_median_rank_error_matches_the_stated_accuracy() -> None:
    """200 medians at n = 1,000, epsilon 1, discrete Laplace from tree_sensitivity(1, 1, 4).

    Model (expected_rank_error): the rank error is N(0, s²), s = E·√(π/2), E the stated
    expected error, which overstates sparse deep levels. Mean of 200 |errors|: E with sd
    s·√(1 − 2/π)/√200 = 0.043·s; bound E + 5 sd, false-failure rate <= 3e-7 under the model.
    p99 (np.quantile of 200): above 3.89·s only if >= 2 errors are beyond the two-sided
    1e-4 point: P(Binomial(200, 1e-4) >= 2) < 2e-4. Power: the mean exceeds E/4, which
    noiseless trees (error under one leaf, < 0.001 here) would not reach.
    """
    trials = 200
    errors = rank_errors(LAPLACE, trials, seed=2024)
    stated = expected_rank_error(SHAPE, LAPLACE, PARTITION_SIZE)
    s = stated * math.sqrt(math.pi / 2.0)
    mean, p99 = float(errors.mean()), float(np.quantile(errors, 0.99))
    print(f"median rank error: mean {mean:.4f}, p99 {p99:.4f}, stated {stated:.4f}")
    assert mean <= stated + 5.0 * s * math.sqrt(1.0 - 2.0 / math.pi) / math.sqrt(trials)
    assert p99 <= 3.89 * s
    assert mean >= stated / 4.0


def test_expected_rank_error_shrinks_with_size_and_budget() -> None:
    small = expected_rank_error(SHAPE, LAPLACE, 100)
    large = expected_rank_error(SHAPE, LAPLACE, 100_000)
    assert large < small / 100
    assert expected_rank_error(SHAPE, DiscreteLaplace(Fraction(400)), 1000) > 10 * (
        expected_rank_error(SHAPE, LAPLACE, 1000)
    )
    assert 0.0 < expected_rank_error(SHAPE, LAPLACE, 1) <= 1.0
    assert expected_rank_error(SHAPE, DiscreteLaplace(Fraction(10**6)), 10) <= 1.0
    with pytest.raises(ValueError, match="partition_size"):
        expected_rank_error(SHAPE, LAPLACE, 0)


# --- intervals ---------------------------------------------------------------------------


@pytest.mark.parametrize("noise", [LAPLACE, GAUSSIAN], ids=["laplace", "gaussian"])
def test_interval_coverage_and_width(noise: NoiseDistribution) -> None:
    """95% intervals at ranks 0.1, 0.5, 0.9 over 400 trials at n = 1,000.

    Coverage of the exact empirical quantile (inverted CDF), per rank: assert at least the
    1e-3 quantile of Binomial(400, 0.95), so a method with true coverage >= 95% fails a
    given rank with probability <= 1e-3 (<= 3e-3 over the three). Power: the mean width of
    the median's interval is below 15% of the range (a trivial [lower, upper] has 100%).
    """
    trials, alpha, ranks = 400, 0.05, [0.1, 0.5, 0.9]
    rng, draw = np.random.default_rng(99), seeded(99)
    covered, widths = np.zeros(len(ranks), dtype=np.int64), []
    for _ in range(trials):
        values = sample_values(rng)
        tree = tree_of(values, noise, draw)
        low, high = tree.intervals(ranks, alpha)
        released = tree.quantiles(ranks)
        assert np.all((low <= released) & (released <= high))
        truth = np.quantile(values, ranks, method="inverted_cdf")
        covered += (low <= truth) & (truth <= high)
        widths.append(float(high[1] - low[1]))
    floor = binom.ppf(1e-3, trials, 1.0 - alpha)
    print(f"{noise.kind}: coverage {covered.tolist()}/{trials} (floor {floor}), ", end="")
    print(f"median width {np.mean(widths):.3f}")
    assert np.all(covered >= floor)
    assert float(np.mean(widths)) < 0.15 * (SHAPE.upper - SHAPE.lower)


def test_interval_covers_a_point_mass_inside_one_leaf() -> None:
    """All values equal, off the leaf edges: the interval must still hold the value.

    Without widening to whole leaves an interpolated interval would miss it whenever the
    rank error stays inside the leaf. 100 trials at 95%: floor from Binomial(100, 0.95)
    at 1e-3.
    """
    value = 40.000_7  # strictly inside leaf 26_214 = [40.0000.., 40.0015..)
    values = np.full(PARTITION_SIZE, value)
    draw, covered, trials = seeded(8), 0, 100
    for _ in range(trials):
        low, high = tree_of(values, LAPLACE, draw).intervals([0.5], 0.05)
        covered += int(low[0] <= value <= high[0])
        assert high[0] - low[0] < 1.0  # not trivial: 1,000 values in one leaf
    assert covered >= binom.ppf(1e-3, trials, 0.95)


def test_intervals_contain_the_quantiles_inside_bounds() -> None:
    values = sample_values(np.random.default_rng(4))
    tree = tree_of(values, LAPLACE, seeded(4))
    ranks = [0.001, 0.2, 0.5, 0.999]
    low, high = tree.intervals(ranks, 0.1)
    released = tree.quantiles(ranks)
    assert np.all((low >= 0.0) & (low <= released) & (released <= high) & (high <= 100.0))
    with pytest.raises(ValueError, match="alpha"):
        tree.intervals(ranks, 1.0)


# --- monotone under noise ----------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    ranks=st.lists(st.floats(1e-6, 1.0 - 1e-6), min_size=1, max_size=12),
    size=st.integers(0, 300),
)
def test_quantiles_monotone_and_bounded_under_noise(
    seed: int, ranks: list[float], size: int
) -> None:
    rng = np.random.default_rng(seed)
    values = rng.uniform(-20.0, 120.0, size)
    tree = tree_of(values, DiscreteLaplace(Fraction(8)), seeded(seed))
    released = tree.quantiles(ranks)
    order = np.argsort(ranks, kind="stable")
    assert np.all(np.diff(released[order]) >= 0)
    assert np.all((released >= 0.0) & (released <= 100.0))
