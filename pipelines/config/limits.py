"""Numeric limits of a job config, and the annotated number types that enforce them.

Invariants: every numeric limit is a named constant here; no numeric field accepts a
boolean. The release ceilings (``EPSILON_MIN``, ``EPSILON_MAX``, ``DELTA_MIN_POSITIVE``,
``DELTA_CEILING``) are read at validation time through the package ``pipelines.config``,
which re-exports them: an override set there (a test's monkeypatch) is what validation
uses. The integer limits are bound when the models are defined.
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

# Numeric limits of one release's budget, checked at load time. A lifetime budget is an
# organisation's policy over many releases: it only has to be positive (delta below 1).
# exp(epsilon) overflows double arithmetic at about 709.8 and calibration works with
# multiples of epsilon, so epsilon stays far below that; below 1e-6 the noise swamps any
# statistic and the release is meaningless.
EPSILON_MIN = 1e-6
EPSILON_MAX = 100.0
# A positive delta below 1e-100 is no safer than 0 for any real dataset but pushes
# ln(1/delta) terms towards the edge of double precision; use 0 for pure epsilon-DP.
DELTA_MIN_POSITIVE = 1e-100
# delta is the probability that the guarantee fails outright: at delta = 0.5 a mechanism
# may release single units' keys. Good practice is delta far below 1/number-of-units
# (see docs/privacy.md §6); 1e-4 is the most one release may spend.
DELTA_CEILING = 1e-4
# Integer sums must stay exact (see pipelines/aggregation.py check_exact_arithmetic):
# with L0 and Linf at most 10**6, the count sensitivity L0 * Linf stays below 2**53 (exact
# in a double) and Linf stays below 2**22, so per-(unit, partition) sums of grid integers
# fit a long.
MAX_PARTITIONS_PER_UNIT_LIMIT = 1_000_000
MAX_ROWS_PER_UNIT_PER_PARTITION_LIMIT = 1_000_000
# A pre-threshold above 10**9 units keeps no partition of any real dataset: a typo.
MIN_UNITS_LIMIT = 1_000_000_000


def _not_bool(value: object) -> object:
    """Refuse YAML true/false where a number is expected (Python counts a bool as 0 or 1)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


# Every numeric field uses one of these: a bool is never read as 0 or 1.
Number = Annotated[float, BeforeValidator(_not_bool)]
Integer = Annotated[int, BeforeValidator(_not_bool)]


def _epsilon_in_range(value: float) -> float:
    """Invariant: every accepted epsilon is finite and in [EPSILON_MIN, EPSILON_MAX]."""
    import pipelines.config as limits  # read at validation time (see the module docstring)

    low, high = limits.EPSILON_MIN, limits.EPSILON_MAX
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(
            f"must be between {low:g} (EPSILON_MIN) and {high:g} (EPSILON_MAX): "
            "far above, exp(epsilon) overflows double arithmetic; below, the noise swamps "
            "any statistic"
        )
    return value


def _delta_in_range(value: float) -> float:
    """Invariant: every accepted delta is 0 or in [DELTA_MIN_POSITIVE, DELTA_CEILING]."""
    import pipelines.config as limits  # read at validation time (see the module docstring)

    low, ceiling = limits.DELTA_MIN_POSITIVE, limits.DELTA_CEILING
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite number, at least 0")
    if 0 < value < low:
        raise ValueError(
            f"must be 0 or at least {low:g} (DELTA_MIN_POSITIVE); use 0 for pure epsilon-DP"
        )
    if value > ceiling:
        raise ValueError(
            f"must be at most {ceiling:g} (DELTA_CEILING): delta is the probability that "
            "the guarantee fails outright (at 0.5 a mechanism may release single units' keys); "
            "good practice is delta far below 1/number-of-units"
        )
    return value


def _positive_finite(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError("must be a finite number greater than 0")
    return value


def _probability_below_one(value: float) -> float:
    if not (math.isfinite(value) and 0 <= value < 1):
        raise ValueError("must be at least 0 and smaller than 1")
    return value


Epsilon = Annotated[Number, AfterValidator(_epsilon_in_range)]
Delta = Annotated[Number, AfterValidator(_delta_in_range)]
LifetimeEpsilon = Annotated[Number, AfterValidator(_positive_finite)]
LifetimeDelta = Annotated[Number, AfterValidator(_probability_below_one)]


def _at_most(limit: int, constant: str, reason: str) -> AfterValidator:
    """A check that an integer is at most ``limit``; the message names the constant and why."""

    def check(value: int) -> int:
        if value > limit:
            raise ValueError(f"must be at most {limit:,} ({constant}): {reason}")
        return value

    return AfterValidator(check)
