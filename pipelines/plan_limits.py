"""Limits on what a config's fields imply together, checked when the plan is built.

Each field is in range at load time (``pipelines.config``); these bound the derived
numbers (noise scales in grid units, keep tables, thresholds, exact sums), each a named
constant with its reason. Invariant: a plan ``build_plan`` returns has noise every exact
sampler can draw, a keep table it can build, thresholds exact as doubles, and integer sums
that cannot overflow for any input (docs/privacy.md §3, §5, §6). Every refusal is a
``ConfigError`` (exit 2) naming the fields to change.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

from dp_ops.grid import rounded_bounds
from dp_ops.noise import DiscreteLaplace, NoiseDistribution
from dp_ops.samplers import MAX_LAPLACE_SCALE, MAX_SIGMA_SQUARED
from dp_ops.selection import (
    MAX_KEEP_TABLE_LENGTH,
    MIN_KEEP_TABLE_DELTA,
    keep_table_length_lower_bound,
)
from dp_ops.selection_rules import (
    GaussianThresholdSelection,
    LaplaceThresholdSelection,
    TruncatedGeometricSelection,
)
from pipelines.config import ConfigError, JobConfig
from pipelines.metric_kinds import kind_of

if TYPE_CHECKING:
    from pipelines.plan import ReleasePlan

# Limits on what the config's fields imply together (docs/privacy.md §3, §5, §6). Each
# field is in range at load time; these bound the derived numbers, in grid units.
#
# Largest discrete Laplace scale: the exact sampler refuses larger ones, since int64 would
# no longer hold every draw (dp_ops.samplers.MAX_LAPLACE_SCALE).
MAX_LAPLACE_SCALE_UNITS: Fraction = MAX_LAPLACE_SCALE  # 2**50
# Smallest discrete Laplace scale: the noise statistics (variance 1/(2·sinh²(1/(2b))))
# overflow double arithmetic below b = 1/710; 2**-8 keeps a margin (no config in range
# reaches it: b >= l1/EPSILON_MAX = 0.01).
MIN_LAPLACE_SCALE_UNITS = Fraction(1, 2**8)
# Largest discrete Gaussian σ² (σ <= 2**50): the exact sampler refuses larger ones, since
# its discrete Laplace proposals, of scale floor(σ) + 1, must fit int64
# (dp_ops.samplers.MAX_SIGMA_SQUARED).
MAX_GAUSSIAN_SIGMA_SQUARED_UNITS: Fraction = MAX_SIGMA_SQUARED  # 2**100
# Smallest discrete Gaussian σ² (σ >= 2**-8, as for Laplace): far inside σ² >= 2**-200,
# where the sampler's float enclosure of its acceptance exponent is proven (below it every
# draw takes the slow exact path).
MIN_GAUSSIAN_SIGMA_SQUARED_UNITS = Fraction(1, 2**16)
# Largest threshold T of laplace_threshold and gaussian_threshold selection: T and the keep
# probabilities P(X >= T - n) are computed with T as a double, exact only below 2**53.
MAX_SELECTION_THRESHOLD = 2**53
# The truncated_geometric keep table: at most MAX_KEEP_TABLE_LENGTH (10**7) entries, and a
# per-partition delta of at least MIN_KEEP_TABLE_DELTA (1e-15), see dp_ops.selection.
#
# Exact sums (check_exact_arithmetic): the largest |per-partition sum| decimal(38,0) holds,
# and the most rows Spark can count (row counts are longs).
_DECIMAL_LIMIT = 10**38 - 1
_MAX_ROWS = 2**63 - 1
_LONG_LIMIT = 2**63 - 1


class ArithmeticBoundError(ConfigError):
    """The configured bounds would allow an integer aggregate to overflow (exit 2)."""


def _power_of_two(value: Fraction) -> str:
    """``2**k`` for an exact power of two (the limits above), else the value as a float."""
    numerator, denominator = value.numerator, value.denominator
    if numerator == 1 and denominator & (denominator - 1) == 0:
        return f"2**-{denominator.bit_length() - 1}"
    if denominator == 1 and numerator & (numerator - 1) == 0:
        return f"2**{numerator.bit_length() - 1}"
    return f"{float(value):.6g}"


def check_noise(noise: NoiseDistribution, field: str, more_noise: str) -> None:
    """Refuse noise the exact samplers cannot draw, or whose statistics are not finite.

    ``field`` names the mechanism (``metrics[2] (sum_value)``); ``more_noise`` says which
    fields to change when the noise is too large. See docs/privacy.md §5.
    """
    if isinstance(noise, DiscreteLaplace):
        value, what = noise.scale, "discrete Laplace scale"
        low, low_name = MIN_LAPLACE_SCALE_UNITS, "MIN_LAPLACE_SCALE_UNITS"
        high, high_name = MAX_LAPLACE_SCALE_UNITS, "MAX_LAPLACE_SCALE_UNITS"
    else:
        value, what = noise.sigma_squared, "discrete Gaussian sigma²"
        low, low_name = MIN_GAUSSIAN_SIGMA_SQUARED_UNITS, "MIN_GAUSSIAN_SIGMA_SQUARED_UNITS"
        high, high_name = MAX_GAUSSIAN_SIGMA_SQUARED_UNITS, "MAX_GAUSSIAN_SIGMA_SQUARED_UNITS"
    if value > high:
        raise ConfigError(
            f"{field}: the noise ({what} {float(value):.4g} grid units) is above "
            f"{_power_of_two(high)} ({high_name}), the most the exact sampler draws within "
            f"int64: {more_noise}"
        )
    if value < low:
        raise ConfigError(
            f"{field}: the noise ({what} {float(value):.4g} grid units) is below "
            f"{_power_of_two(low)} ({low_name}), the least the noise statistics support: "
            "lower budget.epsilon"
        )


def check_rounding(config: JobConfig) -> None:
    """Refuse ``decimals`` that leave no rounded value inside its released range
    (docs/privacy.md §7)."""
    decimals = config.post_processing.decimals
    if decimals is None:
        return
    for metric in config.metrics:
        kind = kind_of(metric.metric)
        if not kind.rounds or kind.released_range is None:
            continue
        assert metric.lower is not None and metric.upper is not None
        try:
            rounded_bounds(*kind.released_range(metric.lower, metric.upper), decimals)
        except ValueError as error:
            raise ConfigError(
                f"post_processing.decimals: {error}, the bounds of {metric.output_name}; "
                "released means must stay inside their bounds: allow more decimals"
            ) from None


def check_keep_table(selection: TruncatedGeometricSelection, delta_field: str) -> None:
    """Refuse a keep table the plan cannot build, then build it (docs/privacy.md §6).

    Its length grows like ln(ε_p/δ_p)/ε_p plus min_units: a tiny per-partition epsilon
    asks for a huge table. Building it here (it is cached on the rule) makes `plan` refuse
    every table `run` would.
    """
    epsilon_p, delta_p = selection.epsilon_p, selection.delta_p
    if delta_p < MIN_KEEP_TABLE_DELTA:
        raise ConfigError(
            f"budget.delta: the per-partition delta of truncated_geometric selection, "
            f"{delta_field} / contribution_bounds.max_partitions_per_unit = {delta_p:.3g}, is "
            f"below {MIN_KEEP_TABLE_DELTA:g} (MIN_KEEP_TABLE_DELTA), the smallest a float64 "
            "keep table certifies: raise budget.delta, lower "
            "contribution_bounds.max_partitions_per_unit, or use laplace_threshold"
        )
    length = keep_table_length_lower_bound(epsilon_p, delta_p, selection.min_units)
    refusal = ConfigError(
        f"budget.epsilon: the truncated_geometric keep table for epsilon_p = {epsilon_p:.3g} "
        "(budget.epsilon x budget.weights.selection / "
        f"contribution_bounds.max_partitions_per_unit), delta_p = {delta_p:.3g} and "
        f"partition_selection.min_units = {selection.min_units:,} has more than "
        f"{MAX_KEEP_TABLE_LENGTH:,} entries (MAX_KEEP_TABLE_LENGTH)"
        f"{f', at least {length:,}' if MAX_KEEP_TABLE_LENGTH < length < 2**62 else ''}: raise "
        "budget.epsilon or budget.weights.selection, lower "
        "contribution_bounds.max_partitions_per_unit or partition_selection.min_units, or "
        "use laplace_threshold"
    )
    if length > MAX_KEEP_TABLE_LENGTH:
        raise refusal
    try:
        _ = selection.table  # builds and caches the table
    except ValueError:
        raise refusal from None


def check_threshold(selection: LaplaceThresholdSelection | GaussianThresholdSelection) -> None:
    """Refuse threshold noise the samplers cannot draw, or a threshold beyond exact doubles
    (docs/privacy.md §6)."""
    field = f"partition_selection.mechanism ({selection.spend().mechanism})"
    check_noise(
        selection.noise,
        field,
        "raise budget.epsilon, budget.weights.selection or budget.delta, or lower "
        "contribution_bounds.max_partitions_per_unit",
    )
    if selection.threshold >= MAX_SELECTION_THRESHOLD:
        raise ConfigError(
            f"{field}: the selection threshold {selection.threshold:,} is not below "
            f"2**{MAX_SELECTION_THRESHOLD.bit_length() - 1} (MAX_SELECTION_THRESHOLD), where "
            "doubles stop being exact: raise budget.epsilon, budget.weights.selection or "
            "budget.delta, or lower contribution_bounds.max_partitions_per_unit or "
            "partition_selection.min_units"
        )


def check_share(epsilon: float, key: str) -> None:
    """Refuse a budget share whose epsilon underflows to 0 (a weight far too small)."""
    if not epsilon > 0:
        raise ConfigError(
            f"budget.weights.{key}: budget.epsilon x this weight underflows to 0: "
            "give it a larger weight"
        )


def check_exact_arithmetic(plan: ReleasePlan) -> None:
    """Refuse plans whose integer sums could overflow for ANY input.

    Each kept (unit, partition) cell contributes at most Linf times a part's per-row bound
    (docs/privacy.md §4): that must fit a long (the cell's sums and contribution are
    longs), and 2**63 - 1 cells of it decimal(38,0) (the per-partition sums). Invariant:
    after this check, no aggregate of any dataset Spark can hold overflows (docs/privacy.md
    §3). Pure Python: ``build_plan`` runs it, so `dprelease plan` refuses what
    `dprelease run` would.
    """
    linf = plan.bounds.max_rows_per_unit_per_partition
    for index, output in enumerate(plan.outputs):
        encoding = output.encoding
        if encoding is None or not output.aggregates_column:
            continue
        largest_row = max(p.row_bound(encoding) for p in output.kind.parts if p.term)
        largest_cell = linf * largest_row
        if largest_cell > _LONG_LIMIT or largest_cell * _MAX_ROWS > _DECIMAL_LIMIT:
            raise ArithmeticBoundError(
                f"metrics[{index}] ({output.name}): bounds [{encoding.lower}, "
                f"{encoding.upper}] on grid {encoding.grid.step} give per-row integers up to "
                f"{largest_row:.4g}, so one cell of max_rows_per_unit_per_partition rows up to "
                f"{largest_cell:.4g}: that must fit a long (2**63 - 1) and 2**63 - 1 cells "
                "of it decimal(38,0) (10**38 - 1) in an exact sum: narrow the bounds, lower "
                "the epsilon share or contribution_bounds.max_rows_per_unit_per_partition"
            )
