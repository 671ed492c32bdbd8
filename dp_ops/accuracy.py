"""Expected noise-only accuracy of released values at a stated partition size (data-free).

Pure functions of public parameters: a mechanism's noise standard deviation and interval
half-width (from the plan), a partition size stated by the analyst, and the metric's
value bounds. Nothing here reads data; the figures mirror how the release computes its
own ``_std`` and interval columns (docs/privacy.md §7), without the clamping to the value
bounds, so a target is never met merely because the bounds are narrow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Accuracy", "count_accuracy", "mean_accuracy", "sum_accuracy"]


@dataclass(frozen=True)
class Accuracy:
    """Expected noise std and (1 - alpha) interval half-width of one released value."""

    std: float
    half_width: float


def count_accuracy(std: float, half_width: float) -> Accuracy:
    """A noisy count (rows or units): its noise does not depend on the partition size."""
    return Accuracy(std, half_width)


def sum_accuracy(std: float, half_width: float) -> Accuracy:
    """A noisy sum: additive noise of the plan's std, whatever the partition size."""
    return Accuracy(std, half_width)


def mean_accuracy(
    rows: float,
    numerator_std: float,
    numerator_half_width: float,
    count_std: float,
    count_half_width: float,
    offset: float = 0.0,
) -> Accuracy:
    """A mean over ``rows`` bounded rows whose true value lies ``offset`` from the bounds' middle.

    The release computes mean = mid + S / (2·c), with S the noisy normalized sum (value
    units times two: a value x adds 2·(x − mid)) and c the noisy count. Its std is the
    delta-method std the release reports, sqrt((σ_S/(2C))² + (offset·σ_c/C)²), and its
    interval is spanned by the corners (S ± h_S)/(2·c) for c in [C − h_c, C + h_c]
    (c at least 1), as the release's intervals are, before clamping to the bounds.
    """
    count = max(float(rows), 1.0)
    std = math.hypot(numerator_std / (2 * count), offset * count_std / count)
    total = 2 * offset * count
    low_count = max(count - count_half_width, 1.0)
    high_count = count + count_half_width
    corners = [
        (total + sign * numerator_half_width) / (2 * c)
        for sign in (-1, 1)
        for c in (low_count, high_count)
    ]
    return Accuracy(std, (max(corners) - min(corners)) / 2)
