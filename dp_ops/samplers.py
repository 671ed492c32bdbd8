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
from collections.abc import Callable
from fractions import Fraction
from numbers import Rational

import numpy as np
import numpy.typing as npt

from dp_ops.entropy import MAX_UNIFORM_BOUND, OsRandomBits, RandomBits, uniform_below

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

# Bernoulli(γ_i/K) for the elements ``idx`` (None: all) still running in Algorithm 1 at round K.
_RatioDraw = Callable[[IndexArray | None, int], BoolArray]


# --------------------------------------------------------------------------------------
# Exact scalar building blocks (Python integers / Fractions): used for the rare draws the
# vectorized code cannot settle, and for parameters too large for int64.
# --------------------------------------------------------------------------------------


def _uniform_below_int(bits: RandomBits, bound: int) -> int:
    """Exactly uniform integer in [0, bound) for any Python int bound >= 1.

    Masks ceil(log2 bound) raw bits and rejects values >= bound (no modulo reduction).
    """
    if bound == 1:
        return 0
    width = (bound - 1).bit_length()
    words = -(-width // 64)
    mask = (1 << width) - 1
    while True:
        value = int.from_bytes(bits.uint64(words).tobytes(), "little") & mask
        if value < bound:
            return value


def _bernoulli_fraction_exact(bits: RandomBits, p: Fraction) -> bool:
    """Exact Bernoulli(p) for a rational p in [0, 1]."""
    return _uniform_below_int(bits, p.denominator) < p.numerator


def _bernoulli_exp_neg_unit_exact(bits: RandomBits, gamma: Fraction) -> bool:
    """Exact Bernoulli(exp(-γ)) for rational γ in [0, 1] (CKS Algorithm 1)."""
    k = 1
    while _bernoulli_fraction_exact(bits, gamma / k):
        k += 1
    return k % 2 == 1


def _bernoulli_exp_neg_exact(bits: RandomBits, gamma: Fraction) -> bool:
    """Exact Bernoulli(exp(-γ)) for rational γ >= 0 (CKS Algorithm 1 with the γ > 1 split)."""
    whole = gamma.numerator // gamma.denominator
    for _ in range(whole):  # lazy: stops at the first failure, even for a huge `whole`
        if not _bernoulli_exp_neg_unit_exact(bits, Fraction(1)):
            return False
    return _bernoulli_exp_neg_unit_exact(bits, gamma - whole)


# --------------------------------------------------------------------------------------
# Vectorized exact Bernoulli draws.
# --------------------------------------------------------------------------------------


# Outward widening of a correctly rounded float x = fl(v), v >= 0 (every use: the bounded
# quantities are probabilities or exponents): |x - v| <= 2^-53·x for normal x and
# <= 2^-1075 for subnormal x. x·(1 ± 2^-50) moves x by >= 2^-50·x·(1 - 2^-53) > 2^-53·x
# after its own rounding, and ∓2^-1074 covers subnormals, so _down(fl(v)) <= v <=
# _up(fl(v)). Lower bounds are then clamped at 0, so every input x is >= 0. (Cheaper than
# np.nextafter, slightly wider.)
_WIDEN = 2.0**-50
_TINY = 2.0**-1074


def _down(x: FloatArray) -> FloatArray:
    """A float in [0, v], given the correctly rounded x = fl(v) of some v >= 0."""
    widened: FloatArray = np.maximum(x * (1.0 - _WIDEN) - _TINY, 0.0)
    return widened


def _up(x: FloatArray) -> FloatArray:
    """A float >= v, given the correctly rounded x = fl(v) of some v >= 0."""
    widened: FloatArray = x * (1.0 + _WIDEN) + _TINY
    return widened


def _uniform_words32(bits: RandomBits, count: int) -> npt.NDArray[np.uint32]:
    """``count`` independent uniform 32-bit integers (two per 64-bit word)."""
    return bits.uint64(-(-count // 2)).view(np.uint32)[:count]


def _settle_exactly(bits: RandomBits, p: Fraction, prefix: int, prefix_bits: int) -> bool:
    """[U < p] given that the first ``prefix_bits`` bits of U are ``prefix`` (exact).

    U = (prefix + U')·2^-n with U' uniform in [0, 1), so U < p iff U' < p·2^n - prefix.
    """
    rest = p * (1 << prefix_bits) - prefix
    return rest >= 1 or (rest > 0 and _bernoulli_fraction_exact(bits, rest))


def _bernoulli_enclosed(
    bits: RandomBits,
    lower: FloatArray,
    upper: FloatArray,
    exact: Callable[[int], Fraction],
) -> BoolArray:
    """Exact Bernoulli(p_i) where lower_i <= p_i <= upper_i and ``exact(i)`` gives p_i.

    Outcome = [U < p] for U uniform in [0, 1), decided on a prefix of U's bits. With the
    first n bits B, U lies in [B·2^-n, (B+1)·2^-n); both ends are exact floats (n <= 48),
    so the comparisons with the proven bounds are exact: (B+1)·2^-n <= lower means U < p,
    B·2^-n >= upper means U >= p. A 16-bit prefix settles all but about 2^-16 of the draws;
    those get 32 more bits; the few still open (probability about 2^-48 + upper - lower)
    are settled against the exact rational p (_settle_exactly).
    """
    count = lower.size
    head = bits.uint64(-(-count // 4)).view(np.uint16)[:count]
    u_low = head.astype(np.float64) * 2.0**-16
    fire: BoolArray = u_low + 2.0**-16 <= lower
    open_ = np.flatnonzero(~fire & (u_low < upper))
    if open_.size == 0:
        return fire
    tail = _uniform_words32(bits, open_.size).astype(np.uint64)
    prefix = (head[open_].astype(np.uint64) << np.uint64(32)) | tail
    u_low2 = prefix.astype(np.float64) * 2.0**-48  # prefix < 2**48 converts exactly
    fire2: BoolArray = u_low2 + 2.0**-48 <= lower[open_]
    for j in np.flatnonzero(~fire2 & (u_low2 < upper[open_])).tolist():
        fire2[j] = _settle_exactly(bits, exact(int(open_[j])), int(prefix[j]), 48)
    fire[open_] = fire2
    return fire


def _bernoulli_exp_neg_unit(size: int, draw: _RatioDraw, first_k: int = 1) -> BoolArray:
    """Vectorized CKS Algorithm 1: exact Bernoulli(exp(-γ_i)) for γ_i in [0, 1].

    K = first_k, first_k + 1, ... while Bernoulli(γ/K) succeeds; the result is [K odd] for
    the first K that fails. ``first_k > 1`` continues runs whose rounds 1..first_k-1 all
    succeeded. ``draw(idx, k)`` must return exact, fresh Bernoulli(γ_i / k) for i in idx.
    """
    if size == 0:
        return np.zeros(0, dtype=np.bool_)
    k = first_k
    succeeded = draw(None, k)
    result: BoolArray = ~succeeded if k % 2 == 1 else np.zeros(size, dtype=np.bool_)
    active = np.flatnonzero(succeeded)
    while active.size:
        k += 1
        succeeded = draw(active, k)
        if k % 2 == 1:
            result[active[~succeeded]] = True
        active = active[succeeded]
    return result


def _integer_ratio(
    bits: RandomBits, numerator: Int64Array | int, denominator: int, size: int
) -> _RatioDraw:
    """Bernoulli(numerator_i / (denominator·k)) via uniform_below, 0 <= num <= den <= 2**62."""

    def draw(idx: IndexArray | None, k: int) -> BoolArray:
        num = numerator
        if isinstance(numerator, np.ndarray) and idx is not None:
            num = numerator[idx]
        count = size if idx is None else idx.size
        if denominator * k <= MAX_UNIFORM_BOUND:
            below: BoolArray = uniform_below(bits, denominator * k, count) < num
            return below
        # den·k too large for one draw: Bernoulli(num/den) AND Bernoulli(1/k), independent.
        first: BoolArray = uniform_below(bits, denominator, count) < num
        both: BoolArray = first & (uniform_below(bits, k, count) == 0)
        return both

    return draw


def _enclosed_ratio(
    bits: RandomBits,
    lower: FloatArray,
    upper: FloatArray,
    exact: Callable[[int], Fraction],
) -> _RatioDraw:
    """Bernoulli(γ_i / k) from proven bounds lower_i <= γ_i <= upper_i (exact γ_i on demand)."""

    def draw(idx: IndexArray | None, k: int) -> BoolArray:
        low = lower if idx is None else lower[idx]
        high = upper if idx is None else upper[idx]
        if k > 1:
            # Division is correctly rounded; widening outward keeps the enclosure.
            low = _down(low / k)
            high = _up(high / k)

        def exact_at(j: int) -> Fraction:
            return exact(j if idx is None else int(idx[j])) / k

        return _bernoulli_enclosed(bits, low, high, exact_at)

    return draw


def _rational_ratio(bits: RandomBits, gamma: Fraction, size: int) -> _RatioDraw:
    """Bernoulli(γ/k) for one rational constant γ in [0, 1], shared by ``size`` elements."""
    if gamma.denominator <= MAX_UNIFORM_BOUND:
        return _integer_ratio(bits, gamma.numerator, gamma.denominator, size)
    # float(Fraction) is correctly rounded, so one step outward encloses γ.
    approx = np.full(size, float(gamma))
    return _enclosed_ratio(bits, _down(approx), _up(approx), lambda _i: gamma)


def _bernoulli_exp_neg_const(bits: RandomBits, gamma: Fraction, size: int) -> BoolArray:
    """``size`` independent exact Bernoulli(exp(-γ)) for one rational constant γ >= 0."""
    whole = gamma.numerator // gamma.denominator
    frac = gamma - whole
    result = np.zeros(size, dtype=np.bool_)
    alive = np.arange(size, dtype=np.intp)
    done = 0
    while alive.size and done < whole:  # floor(γ) Bernoulli(exp(-1)) must all succeed
        alive = alive[_bernoulli_exp_neg_one(bits, alive.size)]
        done += 1
    if alive.size and frac:
        alive = alive[_bernoulli_exp_neg_unit(alive.size, _rational_ratio(bits, frac, alive.size))]
    result[alive] = True
    return result


# Algorithm 1 at γ = 1 draws A_k ~ Bernoulli(1/k) for k = 2, 3, ... (A_1 = 1 always). The
# first four are read from one uniform W in [0, 120) = [0, 5!) through its mixed-radix
# digits W = d2 + 2·d3 + 6·d4 + 24·d5 (d_k uniform in [0, k), independent), A_k = [d_k = 0].
# A_2..A_k all succeed iff W mod k! = 0, so the first failing K is 2 (W odd), 3, 4 or 5,
# or W = 0 and the run continues at K = 6. The result [K odd] is a table lookup.
_EXP_NEG_ONE_TABLE = np.array(
    [(w % 2 == 0 and w % 6 != 0) or (w % 24 == 0 and w != 0) for w in range(120)],
    dtype=np.bool_,
)


def _bernoulli_exp_neg_one(bits: RandomBits, size: int) -> BoolArray:
    """``size`` independent exact Bernoulli(exp(-1)) (CKS Algorithm 1 at γ = 1)."""
    digits = uniform_below(bits, 120, size)
    result: BoolArray = np.take(_EXP_NEG_ONE_TABLE, digits)
    rest = np.flatnonzero(digits == 0)
    if rest.size:
        result[rest] = _bernoulli_exp_neg_unit(rest.size, _integer_ratio(bits, 1, 1, rest.size), 6)
    return result


def _geometric_count(bits: RandomBits, gamma: Fraction, size: int) -> Int64Array:
    """Number of successes of Bernoulli(exp(-γ)) before the first failure, per element.

    P(V = v) = (1 - e^-γ)·e^(-γv): the geometric variable V of CKS Algorithm 2.
    """
    counts = np.zeros(size, dtype=np.int64)
    alive = np.arange(size, dtype=np.intp)
    while alive.size:
        alive = alive[_bernoulli_exp_neg_const(bits, gamma, alive.size)]
        counts[alive] += 1
    return counts


def _random_signs(bits: RandomBits, size: int) -> BoolArray:
    """``size`` independent fair bits (True = negative)."""
    words = bits.uint64(-(-size // 64))
    signs: BoolArray = np.unpackbits(words.view(np.uint8))[:size].astype(np.bool_)
    return signs


# --------------------------------------------------------------------------------------
# Discrete Laplace (CKS Algorithm 2).
# --------------------------------------------------------------------------------------


def _as_fraction(value: object, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, Rational):
        raise TypeError(
            f"{name} must be a Fraction or an int (exact rational), got {type(value).__name__}"
        )
    return Fraction(value)


def _check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise TypeError(f"size must be an integer, got {type(size).__name__}")
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    return int(size)


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
            u = u[_bernoulli_exp_neg_unit(count, _integer_ratio(bits, u, t, count))]
        return _combine(_geometric_count(bits, Fraction(1), u.size), t, u, s)
    block = max(1, t // s)
    if block == 1:
        remainders = np.zeros(count, dtype=np.int64)
    else:
        remainders = uniform_below(bits, block, count)
        # Keep R with probability exp(-R·s/t), R·s/t in [0, 1).
        if t <= MAX_UNIFORM_BOUND:
            ratio = _integer_ratio(bits, remainders * s, t, count)  # R·s < t fits int64
        else:
            # float(s/t) is correctly rounded and R < 2**50 converts exactly, so widening
            # each correctly rounded operation outward encloses R·s/t.
            step = np.full(count, float(Fraction(s, t)))
            r_float = remainders.astype(np.float64)
            lower = _down(r_float * _down(step))
            upper = _up(r_float * _up(step))
            rem = remainders

            def exact_ratio(i: int) -> Fraction:
                return Fraction(int(rem[i]) * s, t)

            ratio = _enclosed_ratio(bits, lower, upper, exact_ratio)
        remainders = remainders[_bernoulli_exp_neg_unit(count, ratio)]
    blocks = _geometric_count(bits, Fraction(block * s, t), remainders.size)
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
        negative = _random_signs(bits, magnitude.size)
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
    scale = _as_fraction(scale, "scale")
    size = _check_size(size)
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if scale > MAX_LAPLACE_SCALE:
        raise ValueError(f"scale must be <= 2**50 so that int64 holds the noise, got {scale}")
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
      draws are certified comparisons with an exact fallback (_bernoulli_enclosed);
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
        survived = _bernoulli_exp_neg_one(bits, alive.size)
        accept[alive[~survived]] = False
        alive = alive[survived]
        done += 1
        alive = alive[whole_low[alive] > done]

    # Uncertified integer part: finish exactly (rare).
    for i in np.flatnonzero(accept & ~certified).tolist():
        rest = exact_gamma(i) - int(whole_low[i])
        accept[i] = _bernoulli_exp_neg_exact(bits, rest)

    # Certified: Algorithm 1 on the fractional part f = γ - q in [lower - q, upper - q].
    todo = np.flatnonzero(accept & certified)
    if todo.size:
        q = whole_low[todo].astype(np.float64)
        f_low = _down(lower[todo] - q)
        f_high = np.minimum(_up(upper[todo] - q), 1.0)
        whole = whole_low[todo]

        def exact_frac(j: int) -> Fraction:
            return exact_gamma(int(todo[j])) - int(whole[j])

        ratio = _enclosed_ratio(bits, f_low, f_high, exact_frac)
        accept[todo] = _bernoulli_exp_neg_unit(todo.size, ratio)
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
    sigma_squared = _as_fraction(sigma_squared, "sigma_squared")
    size = _check_size(size)
    if sigma_squared <= 0:
        raise ValueError(f"sigma_squared must be > 0, got {sigma_squared}")
    if sigma_squared > MAX_SIGMA_SQUARED:
        raise ValueError(f"sigma_squared must be <= 2**100, got {sigma_squared}")
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


# --------------------------------------------------------------------------------------
# Bernoulli with float probabilities.
# --------------------------------------------------------------------------------------


def sample_bernoulli(
    probabilities: npt.NDArray[np.float64], bits: RandomBits | None = None
) -> npt.NDArray[np.bool_]:
    """Exact Bernoulli(p) for each float p in [0, 1] (same shape as ``probabilities``).

    A float is a dyadic rational, and the outcome is [U < p] for a uniform U in [0, 1):
    the first 32 bits of U are compared exactly with p, and only in the rare undecided
    case (probability <= 2^-32) are more words drawn against p's exact binary expansion.
    p = 0 never fires, p = 1 always fires. NaN or values outside [0, 1] raise ValueError.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if np.isnan(p).any():
        raise ValueError("probabilities must not be NaN")
    if (p < 0.0).any() or (p > 1.0).any():
        raise ValueError("probabilities must lie in [0, 1]")
    flat = p.reshape(-1)
    source = bits if bits is not None else OsRandomBits()
    fired = _bernoulli_enclosed(source, flat, flat, lambda i: Fraction(float(flat[i])))
    return fired.reshape(p.shape)
