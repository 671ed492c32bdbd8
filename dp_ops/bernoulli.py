"""Exact vectorized Bernoulli draws: the building blocks of the noise samplers.

Bernoulli(p) for rational p, Bernoulli(exp(−γ)) by the exact series of Canonne, Kamath
and Steinke (2020, Algorithm 1), geometric counts and random signs. Every outcome is
decided by integer or rational arithmetic on uniform random bits, or by a certified float
comparison whose undecided cases are finished exactly (see ``dp_ops.samplers``).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from dp_ops.entropy import MAX_UNIFORM_BOUND, OsRandomBits, RandomBits, uniform_below

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]

# Bernoulli(γ_i/K) for the elements ``idx`` (None: all) still running in Algorithm 1 at round K.
RatioDraw = Callable[[IndexArray | None, int], BoolArray]

# --------------------------------------------------------------------------------------
# Exact scalar building blocks (Python integers / Fractions): used for the rare draws the
# vectorized code cannot settle, and for parameters too large for int64.
# --------------------------------------------------------------------------------------


def uniform_below_int(bits: RandomBits, bound: int) -> int:
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
    return uniform_below_int(bits, p.denominator) < p.numerator


def _bernoulli_exp_neg_unit_exact(bits: RandomBits, gamma: Fraction) -> bool:
    """Exact Bernoulli(exp(-γ)) for rational γ in [0, 1] (CKS Algorithm 1)."""
    k = 1
    while _bernoulli_fraction_exact(bits, gamma / k):
        k += 1
    return k % 2 == 1


def bernoulli_exp_neg_exact(bits: RandomBits, gamma: Fraction) -> bool:
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
# after its own rounding, and ∓2^-1074 covers subnormals, so widen_down(fl(v)) <= v <=
# widen_up(fl(v)). Lower bounds are then clamped at 0, so every input x is >= 0. (Cheaper than
# np.nextafter, slightly wider.)
_WIDEN = 2.0**-50
_TINY = 2.0**-1074


def widen_down(x: FloatArray) -> FloatArray:
    """A float in [0, v], given the correctly rounded x = fl(v) of some v >= 0."""
    widened: FloatArray = np.maximum(x * (1.0 - _WIDEN) - _TINY, 0.0)
    return widened


def widen_up(x: FloatArray) -> FloatArray:
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


def bernoulli_enclosed(
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


def bernoulli_exp_neg_unit(size: int, draw: RatioDraw, first_k: int = 1) -> BoolArray:
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


def integer_ratio(
    bits: RandomBits, numerator: Int64Array | int, denominator: int, size: int
) -> RatioDraw:
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


def enclosed_ratio(
    bits: RandomBits,
    lower: FloatArray,
    upper: FloatArray,
    exact: Callable[[int], Fraction],
) -> RatioDraw:
    """Bernoulli(γ_i / k) from proven bounds lower_i <= γ_i <= upper_i (exact γ_i on demand)."""

    def draw(idx: IndexArray | None, k: int) -> BoolArray:
        low = lower if idx is None else lower[idx]
        high = upper if idx is None else upper[idx]
        if k > 1:
            # Division is correctly rounded; widening outward keeps the enclosure.
            low = widen_down(low / k)
            high = widen_up(high / k)

        def exact_at(j: int) -> Fraction:
            return exact(j if idx is None else int(idx[j])) / k

        return bernoulli_enclosed(bits, low, high, exact_at)

    return draw


def _rational_ratio(bits: RandomBits, gamma: Fraction, size: int) -> RatioDraw:
    """Bernoulli(γ/k) for one rational constant γ in [0, 1], shared by ``size`` elements."""
    if gamma.denominator <= MAX_UNIFORM_BOUND:
        return integer_ratio(bits, gamma.numerator, gamma.denominator, size)
    # float(Fraction) is correctly rounded, so one step outward encloses γ.
    approx = np.full(size, float(gamma))
    return enclosed_ratio(bits, widen_down(approx), widen_up(approx), lambda _i: gamma)


def bernoulli_exp_neg_const(bits: RandomBits, gamma: Fraction, size: int) -> BoolArray:
    """``size`` independent exact Bernoulli(exp(-γ)) for one rational constant γ >= 0."""
    whole = gamma.numerator // gamma.denominator
    frac = gamma - whole
    result = np.zeros(size, dtype=np.bool_)
    alive = np.arange(size, dtype=np.intp)
    done = 0
    while alive.size and done < whole:  # floor(γ) Bernoulli(exp(-1)) must all succeed
        alive = alive[bernoulli_exp_neg_one(bits, alive.size)]
        done += 1
    if alive.size and frac:
        alive = alive[bernoulli_exp_neg_unit(alive.size, _rational_ratio(bits, frac, alive.size))]
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


def bernoulli_exp_neg_one(bits: RandomBits, size: int) -> BoolArray:
    """``size`` independent exact Bernoulli(exp(-1)) (CKS Algorithm 1 at γ = 1)."""
    digits = uniform_below(bits, 120, size)
    result: BoolArray = np.take(_EXP_NEG_ONE_TABLE, digits)
    rest = np.flatnonzero(digits == 0)
    if rest.size:
        result[rest] = bernoulli_exp_neg_unit(rest.size, integer_ratio(bits, 1, 1, rest.size), 6)
    return result


def geometric_count(bits: RandomBits, gamma: Fraction, size: int) -> Int64Array:
    """Number of successes of Bernoulli(exp(-γ)) before the first failure, per element.

    P(V = v) = (1 - e^-γ)·e^(-γv): the geometric variable V of CKS Algorithm 2.
    """
    counts = np.zeros(size, dtype=np.int64)
    alive = np.arange(size, dtype=np.intp)
    while alive.size:
        alive = alive[bernoulli_exp_neg_const(bits, gamma, alive.size)]
        counts[alive] += 1
    return counts


def random_signs(bits: RandomBits, size: int) -> BoolArray:
    """``size`` independent fair bits (True = negative)."""
    words = bits.uint64(-(-size // 64))
    signs: BoolArray = np.unpackbits(words.view(np.uint8))[:size].astype(np.bool_)
    return signs


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
    fired = bernoulli_enclosed(source, flat, flat, lambda i: Fraction(float(flat[i])))
    return fired.reshape(p.shape)
