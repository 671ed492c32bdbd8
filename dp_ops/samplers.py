"""Exact integer noise samplers (Canonne, Kamath, Steinke 2020, Algorithms 1-3), vectorized.

Every outcome is decided by integer or rational arithmetic on uniform random bits, or by a
floating-point comparison that is *certified*: the float bounds used are proven to enclose
the exact rational value, and every draw whose outcome the bounds cannot settle is finished
by the exact rational procedure. The output distributions are therefore exactly the stated
ones; floats only make the common case fast.

Vectorization: arrays of pending samples are processed in rounds with masks, and random
words are drawn in bulk. Rejection steps oversample candidates and keep the first accepted
ones in order, which leaves them i.i.d. from the target distribution.

Building blocks (all exact):

* ``Bernoulli(num/den)``: ``uniform_below(den) < num`` (den <= 2**62), or for an arbitrary
  rational p, comparing the bits of a uniform U in [0, 1) with p (``U < p``).
* ``Bernoulli(exp(-γ))``, γ in [0, 1] (Algorithm 1): K = 1, 2, ... while Bernoulli(γ/K)
  succeeds; the result is 1 iff the final K is odd. For γ > 1: floor(γ) independent
  Bernoulli(exp(-1)) that must all succeed, then Bernoulli(exp(-(γ - floor γ))).
* Bernoulli(γ/K) = Bernoulli(γ) AND Bernoulli(1/K) (independent draws) whenever den·K would
  exceed 2**62, so denominators never overflow.

Randomness: ``bits=None`` creates a fresh :class:`~dp_ops.entropy.OsRandomBits` inside the
call, i.e. in the process (Spark task) that draws. The run time of every sampler depends on
the random outcomes (timing side channels are out of scope for batch releases).
"""

from __future__ import annotations

import math
from fractions import Fraction
from numbers import Rational

import numpy as np
import numpy.typing as npt

from dp_ops.bernoulli import (
    bernoulli_exp_neg_exact,
    bernoulli_exp_neg_one,
    bernoulli_exp_neg_unit,
    enclosed_ratio,
    geometric_count,
    integer_ratio,
    random_signs,
    sample_bernoulli,
    widen_down,
    widen_up,
)
from dp_ops.entropy import MAX_UNIFORM_BOUND, OsRandomBits, RandomBits, check_size, uniform_below

__all__ = [
    "MAX_LAPLACE_SCALE",
    "MAX_SIGMA_SQUARED",
    "sample_bernoulli",
    "sample_discrete_gaussian",
    "sample_discrete_laplace",
]

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]

#: Largest discrete Laplace scale accepted: P(|X| >= 2**63) < exp(-2**12), so int64 holds
#: every output (a larger draw would raise OverflowError rather than wrap).
MAX_LAPLACE_SCALE = Fraction(2**50)
#: Largest discrete Gaussian σ² accepted (σ <= 2**50).
MAX_SIGMA_SQUARED = Fraction(2**100)

_INT64_MAX = (1 << 63) - 1
# σ² range in which the float enclosure of the Gaussian acceptance exponent is proven
# (all intermediates are normal floats; see _gaussian_exponent_bounds). Outside it every
# acceptance takes the exact rational path: slower, equally exact.
_SIGMA2_FLOAT_MIN = Fraction(1, 2**200)
# Discrete Laplace scales t/s with t <= 2**56 (and s <= 2**62) use CKS Algorithm 2 verbatim.
_CKS_MAX_NUMERATOR = 1 << 56


# --------------------------------------------------------------------------------------
# Discrete Laplace (CKS Algorithm 2).
# --------------------------------------------------------------------------------------


def _checked(value: object, name: str, maximum: Fraction, limit: str) -> Fraction:
    """A sampler parameter as an exact rational in (0, maximum]."""
    exact = _as_fraction(value, name)
    if exact <= 0:
        raise ValueError(f"{name} must be > 0, got {exact}")
    if exact > maximum:
        raise ValueError(f"{name} must be <= {limit}, got {exact}")
    return exact


def _as_fraction(value: object, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, Rational):
        raise TypeError(
            f"{name} must be a Fraction or an int (exact rational), got {type(value).__name__}"
        )
    return Fraction(value)


def _combine(high: Int64Array, factor: int, low: Int64Array, divisor: int = 1) -> Int64Array:
    """(factor·high + low) // divisor elementwise, exactly (0 <= low < factor <= 2**56,
    high >= 0, 1 <= divisor <= 2**62).

    int64 holds factor·high + low when high <= 2**62 // factor (the sum is then below
    2**62 + 2**56). Larger `high` (probability below exp(-63) per element) is computed
    with Python ints, and only a final value that does not fit int64 raises OverflowError
    (probability below exp(-2**12) for the admitted scales) instead of wrapping.
    """
    h_max = (1 << 62) // factor
    safe = high <= h_max
    out: Int64Array = np.where(safe, high * factor + low, 0)
    if divisor > 1:
        out //= divisor
    for i in np.flatnonzero(~safe).tolist():
        value = (int(high[i]) * factor + int(low[i])) // divisor
        if value > _INT64_MAX:
            raise OverflowError("a discrete noise draw exceeds int64")
        out[i] = value
    return out


def _laplace_magnitudes(bits: RandomBits, scale: Fraction, count: int) -> Int64Array:
    """Up to ``count`` draws Y >= 0 with P(Y = y) ∝ exp(-y/scale); the rest were rejected.

    Scale t/s in lowest terms. For t <= 2**56 and s <= 2**62, CKS Algorithm 2 verbatim:
    U uniform in [0, t) kept with Bernoulli(exp(-U/t)), V = number of successes of
    Bernoulli(exp(-1)) before a failure, X = U + t·V (so P(X = x) ∝ exp(-x/t)), Y = X // s.

    Otherwise (huge numerator or denominator, e.g. a scale built from a float) the same
    construction with block length L = max(1, floor(t/s)) instead of t: Y = L·V + R with R
    uniform in [0, L) kept with Bernoulli(exp(-R·s/t)) and V counting successes of
    Bernoulli(exp(-L·s/t)). P(R = r, V = v) ∝ exp(-r/scale)·exp(-vL/scale) = exp(-y/scale)
    and y <-> (v, r) is one-to-one, so Y has the same law; only int64-sized uniforms are
    needed because L <= scale <= 2**50.
    """
    t, s = scale.numerator, scale.denominator
    if t <= _CKS_MAX_NUMERATOR and s <= MAX_UNIFORM_BOUND:
        u = uniform_below(bits, t, count)
        if t > 1:
            u = u[bernoulli_exp_neg_unit(count, integer_ratio(bits, u, t, count))]
        return _combine(geometric_count(bits, Fraction(1), u.size), t, u, s)
    block = max(1, t // s)
    if block == 1:
        remainders = np.zeros(count, dtype=np.int64)
    else:
        remainders = uniform_below(bits, block, count)
        # Keep R with probability exp(-R·s/t), R·s/t in [0, 1).
        if t <= MAX_UNIFORM_BOUND:
            ratio = integer_ratio(bits, remainders * s, t, count)  # R·s < t fits int64
        else:
            # float(s/t) is correctly rounded and R < 2**50 converts exactly, so widening
            # each correctly rounded operation outward encloses R·s/t.
            step = np.full(count, float(Fraction(s, t)))
            r_float = remainders.astype(np.float64)
            lower = widen_down(r_float * widen_down(step))
            upper = widen_up(r_float * widen_up(step))
            rem = remainders

            def exact_ratio(i: int) -> Fraction:
                return Fraction(int(rem[i]) * s, t)

            ratio = enclosed_ratio(bits, lower, upper, exact_ratio)
        remainders = remainders[bernoulli_exp_neg_unit(count, ratio)]
    blocks = geometric_count(bits, Fraction(block * s, t), remainders.size)
    return _combine(blocks, block, remainders)


def _laplace_acceptance_estimate(scale: Fraction) -> float:
    """Approximate fraction of candidates that survive (only sizes the batches)."""
    b = float(scale)
    t, s = scale.numerator, scale.denominator
    if t <= _CKS_MAX_NUMERATOR and s <= MAX_UNIFORM_BOUND:
        block, rate = t, 1.0 / t  # U kept with probability exp(-U/t)
    else:
        block, rate = max(1, t // s), 1.0 / b  # R kept with probability exp(-R/b)
    keep = 1.0 if block == 1 else -math.expm1(-block * rate) / (block * -math.expm1(-rate))
    p_zero = -math.expm1(-1.0 / b)  # P(Y = 0); half of those are rejected
    return max(keep * (1.0 - p_zero / 2.0), 0.25)


def _sample_laplace(bits: RandomBits, scale: Fraction, size: int) -> Int64Array:
    out = np.empty(size, dtype=np.int64)
    rate = _laplace_acceptance_estimate(scale)
    filled = 0
    while filled < size:
        need = size - filled
        count = int(need / rate * 1.02) + 16
        magnitude = _laplace_magnitudes(bits, scale, count)
        negative = random_signs(bits, magnitude.size)
        # Reject "negative zero" so 0 is not counted twice.
        keep = ~(negative & (magnitude == 0))
        values = np.where(negative, -magnitude, magnitude)[keep]
        take = min(need, values.size)
        out[filled : filled + take] = values[:take]
        filled += take
    return out


def sample_discrete_laplace(
    scale: Fraction | int, size: int, bits: RandomBits | None = None
) -> npt.NDArray[np.int64]:
    """Exact discrete Laplace: ``size`` i.i.d. int64 draws with P(k) ∝ exp(-|k|/scale).

    ``scale`` is a positive rational (Fraction or int), at most 2**50. The distribution is
    exact for the given rational (no float rounding of the scale). ``bits=None`` draws from
    a fresh OS CSPRNG source created in this call.
    """
    scale = _checked(scale, "scale", MAX_LAPLACE_SCALE, "2**50 so that int64 holds the noise")
    size = check_size(size)
    return _sample_laplace(bits if bits is not None else OsRandomBits(), scale, size)


# --------------------------------------------------------------------------------------
# Discrete Gaussian (CKS Algorithm 3).
# --------------------------------------------------------------------------------------


def _gaussian_exponent_bounds(
    magnitudes: Int64Array, sigma_squared: Fraction, center: Fraction
) -> tuple[FloatArray, FloatArray]:
    """Float bounds lower <= γ(y) <= upper for γ(y) = (y - c)²/(2σ²), c = σ²/t, y = |Y|.

    Proof sketch (u = 2^-53, all intermediates normal for σ² in [2^-200, 2^100], y <= 2^53
    so y converts exactly): c_f = float(c) and i_f = float(1/(2σ²)) are correctly rounded,
    |c_f - c| <= u·c. e_f = fl(y - c_f) has |e_f - e| <= u·c + u·|y - c_f| <= 2u·E(1 + u)
    with e = y - c and E = y + 2c >= |e| + c. Then |e_f² - e²| <= |e_f - e|·|e_f + e|
    <= 4u·E²(1 + 2u), and g = fl(fl(e_f²)·i_f) adds three relative roundings, so
    |g - γ| <= (4u·E² + 3.1u·e²)/(2σ²) < 8u·E²/(2σ²) = 2^-50·E²/(2σ²). We use the margin
    η = 2^-47·E_f²·i_f (8x larger), which also absorbs the roundings in computing η and
    g ± η. Elements outside the proven range get the trivial enclosure [0, inf].
    """
    count = magnitudes.size
    lower = np.zeros(count)
    upper = np.full(count, np.inf)
    if not _SIGMA2_FLOAT_MIN <= sigma_squared <= MAX_SIGMA_SQUARED:
        return lower, upper
    c_f = float(center)
    i_f = float(1 / (2 * sigma_squared))
    y = magnitudes.astype(np.float64)
    e = y - c_f
    g = e * e * i_f
    big = y + 2.0 * c_f
    eta = big * big * (i_f * 2.0**-47)  # scaling by a power of two is exact
    if count and magnitudes.max() > (1 << 53):  # such y is not exact as a float
        ok = magnitudes <= (1 << 53)
        lower[ok] = np.maximum(g - eta, 0.0)[ok]
        upper[ok] = (g + eta)[ok]
        return lower, upper
    return np.maximum(g - eta, 0.0), g + eta  # γ >= 0 always


def _gaussian_accept(
    bits: RandomBits, magnitudes: Int64Array, sigma_squared: Fraction, t: int
) -> BoolArray:
    """Exact Bernoulli(exp(-(|Y| - σ²/t)²/(2σ²))) for each |Y| (the acceptance of Algorithm 3).

    The exponent γ has a denominator about 2σ²·t² (≈ 2e24 for σ = 1e6), too big for int64,
    so floor(γ) and the fraction γ - floor(γ) are taken from a proven float enclosure
    [lower, upper] (see _gaussian_exponent_bounds):

    * where floor(lower) == floor(upper) = q, q is certainly floor(γ): draw q Bernoulli(exp(-1))
      (vectorized) and then Algorithm 1 on γ - q in [lower - q, upper - q], whose Bernoulli
      draws are certified comparisons with an exact fallback (bernoulli_enclosed);
    * otherwise (probability about 2^-44 per element, or always for out-of-range σ²) only
      floor(lower) <= floor(γ) is known: after floor(lower) successful Bernoulli(exp(-1))
      the element finishes with exact Fractions: Bernoulli(exp(-(γ - floor(lower)))).
    """
    count = magnitudes.size
    center = sigma_squared / t

    def exact_gamma(i: int) -> Fraction:
        return (int(magnitudes[i]) - center) ** 2 / (2 * sigma_squared)

    lower, upper = _gaussian_exponent_bounds(magnitudes, sigma_squared, center)
    cap = 2.0**62
    whole_low = np.floor(np.minimum(lower, cap)).astype(np.int64)
    whole_high = np.floor(np.minimum(upper, cap)).astype(np.int64)
    certified = (whole_low == whole_high) & (upper < cap)

    accept = np.ones(count, dtype=np.bool_)
    # floor(lower) Bernoulli(exp(-1)) that must all succeed (for every element).
    alive = np.flatnonzero(whole_low > 0)
    done = 0
    while alive.size:
        survived = bernoulli_exp_neg_one(bits, alive.size)
        accept[alive[~survived]] = False
        alive = alive[survived]
        done += 1
        alive = alive[whole_low[alive] > done]

    # Uncertified integer part: finish exactly (rare).
    for i in np.flatnonzero(accept & ~certified).tolist():
        rest = exact_gamma(i) - int(whole_low[i])
        accept[i] = bernoulli_exp_neg_exact(bits, rest)

    # Certified: Algorithm 1 on the fractional part f = γ - q in [lower - q, upper - q].
    todo = np.flatnonzero(accept & certified)
    if todo.size:
        q = whole_low[todo].astype(np.float64)
        f_low = widen_down(lower[todo] - q)
        f_high = np.minimum(widen_up(upper[todo] - q), 1.0)
        whole = whole_low[todo]

        def exact_frac(j: int) -> Fraction:
            return exact_gamma(int(todo[j])) - int(whole[j])

        ratio = enclosed_ratio(bits, f_low, f_high, exact_frac)
        accept[todo] = bernoulli_exp_neg_unit(todo.size, ratio)
    return accept


def _gaussian_acceptance_estimate(sigma_squared: Fraction, t: int) -> float:
    """Approximate P(accept) = e^(-σ²/2t²)·Σe^(-k²/2σ²) / Σe^(-|k|/t) (sizes batches only)."""
    s2 = float(sigma_squared)
    sigma = math.sqrt(s2)
    if sigma > 50:
        gauss = math.sqrt(2 * math.pi * s2)
    else:
        k = np.arange(-int(40 * sigma) - 40, int(40 * sigma) + 41, dtype=np.float64)
        gauss = float(np.exp(-k * k / (2 * s2)).sum())
    laplace = (1 + math.exp(-1 / t)) / -math.expm1(-1 / t)
    return max(min(math.exp(-s2 / (2 * t * t)) * gauss / laplace, 1.0), 1e-3)


def sample_discrete_gaussian(
    sigma_squared: Fraction | int, size: int, bits: RandomBits | None = None
) -> npt.NDArray[np.int64]:
    """Exact discrete Gaussian: ``size`` i.i.d. int64 draws with P(k) ∝ exp(-k²/(2σ²)).

    ``sigma_squared`` is a positive rational (Fraction or int), at most 2**100. CKS
    Algorithm 3: Y ~ discrete Laplace(t), t = floor(σ) + 1, accepted with probability
    exp(-(|Y| - σ²/t)²/(2σ²)). ``bits=None`` draws from a fresh OS CSPRNG source.
    """
    sigma_squared = _checked(sigma_squared, "sigma_squared", MAX_SIGMA_SQUARED, "2**100")
    size = check_size(size)
    source = bits if bits is not None else OsRandomBits()
    # floor(σ) = isqrt(floor(σ²)) exactly.
    t = math.isqrt(sigma_squared.numerator // sigma_squared.denominator) + 1
    rate = _gaussian_acceptance_estimate(sigma_squared, t)
    out = np.empty(size, dtype=np.int64)
    filled = 0
    while filled < size:
        need = size - filled
        candidates = _sample_laplace(source, Fraction(t), int(need / rate * 1.01) + 16)
        accepted = candidates[_gaussian_accept(source, np.abs(candidates), sigma_squared, t)]
        take = min(need, accepted.size)
        out[filled : filled + take] = accepted[:take]
        filled += take
    return out
