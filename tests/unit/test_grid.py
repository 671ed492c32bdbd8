"""Fixed-point grid: encoding, decoding, the grid choice and its overflow bound."""

from __future__ import annotations

import inspect
import math
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dp_ops.grid import MAX_ABS_UNITS, Grid, choose_grid, count_grid


def test_step_is_an_exact_power_of_two() -> None:
    for exponent in (-30, -5, -1, 0, 3, 40):
        step = Grid(exponent).step
        mantissa, _ = math.frexp(step)
        assert mantissa == 0.5
        assert step == 2.0**exponent
    assert count_grid() == Grid(0)
    assert count_grid().step == 1.0


def test_encode_clamps_then_rounds() -> None:
    grid = Grid(-2)  # step 0.25
    values = np.array([-10.0, 0.1, 0.125, 0.375, 1.0, 3.3, 99.0, -np.inf, np.inf])
    units = grid.encode(values, -1.0, 4.0)
    assert units.dtype == np.int64
    # 0.125/0.25 = 0.5 → 0 and 0.375/0.25 = 1.5 → 2 (half to even).
    np.testing.assert_array_equal(units, [-4, 0, 0, 2, 4, 13, 16, -4, 16])
    np.testing.assert_array_equal(grid.decode(units), [-1, 0, 0, 0.5, 1, 3.25, 4, -1, 4])


def test_rounding_is_half_to_even() -> None:
    grid = count_grid()
    values = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5])
    np.testing.assert_array_equal(grid.encode(values, -10, 10), [-2, -2, 0, 0, 2, 2, 4])


def spark_bround(x: float, lower: float, upper: float, step: float) -> int:
    """Spark's bround(least(greatest(x, lower), upper) / g) for a double (HALF_EVEN).

    Spark rounds BigDecimal(double) built from the double's shortest decimal string;
    Python's repr is also a shortest round-trip string. The exact binary value
    (Decimal(float)) must give the same answer.
    """
    scaled = min(max(x, lower), upper) / step
    from_repr = int(Decimal(repr(scaled)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    exact = int(Decimal(scaled).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    assert from_repr == exact
    return exact


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(
        st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)
        | st.integers(-4000, 4000).map(lambda k: k / 8),  # many exact halves
        min_size=1,
        max_size=20,
    ),
    exponent=st.integers(-20, 10),
)
def test_encode_matches_spark_half_even(values: list[float], exponent: int) -> None:
    grid = Grid(exponent)
    lower, upper = -5e5, 5e5
    units = grid.encode(np.array(values), lower, upper)
    expected = [spark_bround(x, lower, upper, grid.step) for x in values]
    assert units.tolist() == expected
    assert np.all(np.abs(units) <= grid.max_abs_units(lower, upper))


def test_encode_rejects_nan_and_bad_bounds() -> None:
    with pytest.raises(ValueError, match="NaN"):
        Grid(0).encode(np.array([1.0, np.nan]), 0, 10)
    with pytest.raises(ValueError, match="bounds"):
        Grid(0).encode(np.array([1.0]), 10, 0)
    with pytest.raises(ValueError, match="bounds"):
        Grid(0).encode(np.array([1.0]), 0, np.inf)


def test_decode_is_exact_and_correctly_rounded() -> None:
    grid = Grid(-10)
    assert grid.decode(3) == 3 / 1024
    assert isinstance(grid.decode(3), float)
    units = np.array([-(2**52), -1, 0, 1, 2**52], dtype=np.int64)
    np.testing.assert_array_equal(grid.decode(units), units.astype(np.float64) / 1024)
    big = 2**80 + 12345  # e.g. a decimal(38,0) sum
    assert grid.decode(big) == float(big) / 1024
    as_objects = np.array([big, -big, 7], dtype=object)
    np.testing.assert_array_equal(grid.decode(as_objects), [big / 1024, -big / 1024, 7 / 1024])


def test_max_abs_units_and_range() -> None:
    grid = Grid(-1)  # step 0.5
    assert grid.units_range(-3.3, 7.0) == (-7, 14)
    assert grid.max_abs_units(-3.3, 7.0) == 14
    assert grid.max_abs_units(-30.0, 7.0) == 60
    assert grid.max_abs_units(0.0, 0.0) == 0
    xs = np.linspace(-30.0, 7.0, 1001)
    assert np.abs(grid.encode(xs, -30.0, 7.0)).max() == grid.max_abs_units(-30.0, 7.0)


def test_choose_grid_follows_the_rule() -> None:
    grid = choose_grid(0.5, 5.0, noise_scale=50.0)
    assert grid.step == 2.0**-5  # largest power of two <= 50/1024 = 0.0488
    assert choose_grid(0.5, 5.0, noise_scale=50.0, resolution_bits=4).step == 2.0
    # Exactly a power of two: g = noise_scale / 2**bits.
    assert choose_grid(0, 1, noise_scale=1024.0).step == 1.0
    # Coarsened when the bounds would need more than 2**40 units.
    coarse = choose_grid(-1e9, 1e9, noise_scale=1e-6)
    assert coarse.max_abs_units(-1e9, 1e9) <= MAX_ABS_UNITS
    assert Grid(coarse.exponent - 1).max_abs_units(-1e9, 1e9) > MAX_ABS_UNITS


def test_choose_grid_depends_only_on_its_arguments() -> None:
    parameters = list(inspect.signature(choose_grid).parameters)
    assert parameters == ["lower", "upper", "noise_scale", "resolution_bits"]
    assert choose_grid(-3.0, 9.0, 12.5) == choose_grid(-3.0, 9.0, 12.5)


@settings(max_examples=150, deadline=None)
@given(
    lower=st.floats(min_value=-1e300, max_value=1e300),
    width=st.floats(min_value=0, max_value=1e300),
    noise_scale=st.floats(min_value=1e-250, max_value=1e250),
    resolution_bits=st.integers(0, 30),
)
def test_choose_grid_is_a_power_of_two_within_the_overflow_bound(
    lower: float, width: float, noise_scale: float, resolution_bits: int
) -> None:
    upper = lower + width
    if not math.isfinite(upper):
        return
    grid = choose_grid(lower, upper, noise_scale, resolution_bits)
    assert math.frexp(grid.step)[0] == 0.5
    assert grid.max_abs_units(lower, upper) <= MAX_ABS_UNITS
    # Never coarser than the noise rule unless the overflow bound forces it.
    rule_step = 2.0 ** (math.frexp(noise_scale)[1] - 1 - resolution_bits)
    if grid.step > rule_step:
        assert Grid(grid.exponent - 1).max_abs_units(lower, upper) > MAX_ABS_UNITS
    else:
        assert grid.step == rule_step
        assert grid.step <= noise_scale / 2**resolution_bits < 2 * grid.step


def test_overflow_bound_for_decimal_38_sums() -> None:
    """Per row |units| <= 2**40, at most 2**63 rows: |sum| <= 2**103 < 10**38."""
    worst = (2**63) * MAX_ABS_UNITS
    assert worst < 10**38
    # The grid really enforces the per-row bound at extreme bounds.
    grid = choose_grid(-1.7e308, 1.7e308, noise_scale=1.0)
    assert grid.max_abs_units(-1.7e308, 1.7e308) <= MAX_ABS_UNITS
    units = grid.encode(np.array([-np.inf, -1.7e308, 1.7e308, np.inf]), -1.7e308, 1.7e308)
    assert int(np.abs(units).max()) <= MAX_ABS_UNITS


def test_grid_validation() -> None:
    with pytest.raises(ValueError, match="exponent"):
        Grid(5000)
    with pytest.raises(ValueError, match="noise_scale"):
        choose_grid(0, 1, 0.0)
    with pytest.raises(ValueError, match="resolution_bits"):
        choose_grid(0, 1, 1.0, resolution_bits=-1)
