"""Numbers as people read them: released values with their intervals, budgets, spends.

Display only: the manifest and the released files keep the exact values. Invariant: the
text shows a value at the precision its noise supports (its interval's half-width to two
significant digits, the value to the same decimal place), so no figure is printed with
more digits than the noise leaves meaningful (docs/privacy.md §7).
"""

from __future__ import annotations

import math

__all__ = ["format_budget", "format_interval", "format_number"]


def _decimals_for(half_width: float) -> int:
    """Decimal places that show ``half_width`` to two significant digits when it starts
    with 1 or 2, else to one (0.3, 0.52 -> 0.5, 0.14); none for half-widths of 10 or more."""
    if not (math.isfinite(half_width) and half_width > 0):
        return 0
    mantissa, _, exponent = f"{half_width:.1e}".partition("e")
    significant = 2 if mantissa[0] in "12" else 1
    return max(0, significant - 1 - int(exponent))


def _decimals_for_value(value: float) -> int:
    """Decimal places that show a value's first significant digit (0.5, 0.05; 3 for 3.7)."""
    if value == 0 or not math.isfinite(value) or abs(value) >= 1:
        return 0
    return -math.floor(math.log10(abs(value)))


def _fixed(value: float, decimals: int) -> str:
    text = f"{value:,.{decimals}f}"
    return "0" if text in ("-0", "-0.0") or set(text) <= {"-", "0", ".", ","} else text


def format_number(value: float, significant: int = 4) -> str:
    """A plain number to ``significant`` digits, without exponent for everyday sizes."""
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if 1e-4 <= abs(value) < 1e15:
        decimals = max(0, significant - 1 - math.floor(math.log10(abs(value))))
        text = f"{round(value, decimals):,.{decimals}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{value:.{significant}g}"


def format_budget(value: float) -> str:
    """An epsilon or delta: exact doubles such as 1.0 print as 1, others to 6 digits."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def format_interval(value: float, low: float, high: float) -> str:
    """``5.2 ± 0.3`` for a symmetric interval, ``0.5 [0.5, 4.6]`` for a clamped one.

    The precision follows the half-width (one or two significant digits), so a count
    reads ``5,613 ± 899`` and a mean ``3.7 ± 0.5`` or ``3.68 ± 0.14``.
    """
    if not all(math.isfinite(v) for v in (value, low, high)):
        return f"{value} [{low}, {high}]"
    below, above = value - low, high - value
    half = max(below, above)
    decimals = _decimals_for(half)
    if value != int(value) or low != int(low) or high != int(high):
        decimals = max(decimals, *(_decimals_for_value(v) for v in (value, low, high)))
    if half == 0:
        return _fixed(value, decimals) + " ± 0"
    if math.isclose(below, above, rel_tol=1e-6, abs_tol=10.0 ** -(decimals + 2)):
        return f"{_fixed(value, decimals)} ± {_fixed(half, decimals)}"
    return f"{_fixed(value, decimals)} [{_fixed(low, decimals)}, {_fixed(high, decimals)}]"
