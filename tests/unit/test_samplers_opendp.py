"""Two-sample comparison of our exact samplers with OpenDP's (an independent implementation).

For each distribution and scale, 100,000 draws from each sampler go into a 2 x B
contingency table (adjacent values pooled until every column holds >= 10 draws of the
pooled sample, so every expected cell count is >= 5 with equal sample sizes), tested by
Pearson's χ² test of homogeneity. A comparison fails when p < ALPHA = 1e-4: that is its
false-failure rate. Power: our sampler at 1.3x the scale must be told apart from OpenDP at
1x with p < 1e-6, using the same OpenDP draws.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from dp_ops.samplers import sample_discrete_gaussian, sample_discrete_laplace

dp = pytest.importorskip("opendp.prelude")

ALPHA = 1e-4
POWER_P = 1e-6
N = 100_000


@functools.cache
def opendp_draws(kind: str, scale: float) -> npt.NDArray[np.int64]:
    """N draws from OpenDP's integer Laplace / Gaussian mechanism applied to zeros."""
    dp.enable_features("contrib")
    domain = dp.vector_domain(dp.atom_domain(T=int))
    if kind == "laplace":
        mechanism = dp.m.make_laplace(domain, dp.l1_distance(T=int), scale=scale)
    else:
        mechanism = dp.m.make_gaussian(domain, dp.l2_distance(T=int), scale=scale)
    return np.asarray(mechanism([0] * N), dtype=np.int64)


def ours(kind: str, scale: Fraction) -> npt.NDArray[np.int64]:
    if kind == "laplace":
        return sample_discrete_laplace(scale, N)
    return sample_discrete_gaussian(scale**2, N)


def homogeneity_pvalue(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> float:
    """χ² test that a and b come from one distribution (pooled adjacent values)."""
    low = int(min(a.min(), b.min()))
    high = int(max(a.max(), b.max()))
    counts_a = np.bincount(a - low, minlength=high - low + 1)
    counts_b = np.bincount(b - low, minlength=high - low + 1)
    ids = np.empty(counts_a.size, dtype=np.int64)
    current, total = 0, 0
    for i, value in enumerate((counts_a + counts_b).tolist()):
        ids[i] = current
        total += value
        if total >= 10:
            current, total = current + 1, 0
    if total > 0 and current > 0:
        ids[ids == current] = current - 1
    table = np.vstack([np.bincount(ids, weights=counts_a), np.bincount(ids, weights=counts_b)])
    result = stats.chi2_contingency(table, correction=False)
    return float(result.pvalue)


CASES = [
    ("laplace", Fraction(1)),
    ("laplace", Fraction(1000)),
    ("gaussian", Fraction("7.3")),
    ("gaussian", Fraction(1000)),
]


@pytest.mark.parametrize(("kind", "scale"), CASES, ids=lambda v: str(v))
def test_matches_opendp(kind: str, scale: Fraction) -> None:
    """100k vs 100k draws, χ² homogeneity; false-failure rate alpha = 1e-4.

    Power: ours at 1.3x the scale vs OpenDP at 1x is rejected with p < 1e-6.
    """
    reference = opendp_draws(kind, float(scale))
    p_same = homogeneity_pvalue(ours(kind, scale), reference)
    assert p_same > ALPHA, f"{kind} at {scale}: differs from OpenDP, p = {p_same:.3g}"
    p_wrong = homogeneity_pvalue(ours(kind, scale * Fraction(13, 10)), reference)
    assert p_wrong < POWER_P, f"{kind} at {scale}: no power at 1.3x, p = {p_wrong:.3g}"
