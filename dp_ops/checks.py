"""Argument checks shared by the DP primitives and the ledger: one wording for each rule.

Each check raises ``ValueError`` naming the argument; booleans are never numbers.
"""

from __future__ import annotations

import math

__all__ = ["check_delta", "check_nonnegative", "check_positive", "check_positive_int"]


def _check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def check_positive_int(name: str, value: object) -> None:
    """``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_positive(name: str, value: object) -> None:
    """``value`` is a finite number > 0."""
    number = _check_number(name, value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")


def check_nonnegative(name: str, value: object) -> None:
    """``value`` is a finite number >= 0."""
    number = _check_number(name, value)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")


def check_delta(name: str, value: object, *, allow_zero: bool = False) -> None:
    """``value`` is a delta: in (0, 1), or [0, 1) with ``allow_zero``."""
    number = _check_number(name, value)
    low_ok = number >= 0 if allow_zero else number > 0
    if not (math.isfinite(number) and low_ok and number < 1):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
