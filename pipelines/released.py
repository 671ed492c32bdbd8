"""The released columns: one definition, from which every schema of the release is built.

Each metric releases four columns: its value, the noise standard deviation ``_std`` and
the noise-only interval ``_ci_low`` / ``_ci_high`` (docs/privacy.md §7), and, when
``post_processing.reliability_share`` is set, a boolean ``_unreliable`` flag. The Spark struct
of the noise step, the Arrow schema of the Parquet files and the manifest's column lists
are all built from ``released_columns``; nothing else spells the suffixes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pipelines.metric_kinds import MetricKind

Statistic = Literal["value", "std", "ci_low", "ci_high", "unreliable"]
#: Column-name suffix of each statistic every metric releases.
SUFFIXES: dict[Statistic, str] = {
    "value": "",
    "std": "_std",
    "ci_low": "_ci_low",
    "ci_high": "_ci_high",
}
#: The reliability flag's statistic, released when the config sets a share.
FLAG: Statistic = "unreliable"
_FLAG_SUFFIX = "_unreliable"


@dataclass(frozen=True)
class ReleasedColumn:
    """One column of the released table (after the partition keys)."""

    name: str
    output: str  # the output name of the metric it belongs to
    statistic: Statistic
    integer: bool  # int64 (counts and their intervals), else float64
    boolean: bool = False  # the reliability flag (bool), whatever ``integer`` says


def released_name(metric: str, statistic: Statistic) -> str:
    """The column holding ``statistic`` of the metric called ``metric``."""
    suffix = _FLAG_SUFFIX if statistic == FLAG else SUFFIXES[statistic]
    return f"{metric}{suffix}"


def released_names(metric: str) -> tuple[str, ...]:
    """The four columns a metric releases, in release order."""
    return tuple(released_name(metric, s) for s in SUFFIXES)


def released_columns(
    metrics: Iterable[tuple[str, MetricKind]], flagged: bool = False
) -> tuple[ReleasedColumn, ...]:
    """Every released column after the keys: value, std, ci_low, ci_high per metric, then
    its ``_unreliable`` flag when ``flagged`` (the config sets a reliability share)."""
    statistics: list[Statistic] = [*SUFFIXES, FLAG] if flagged else list(SUFFIXES)
    return tuple(
        ReleasedColumn(
            released_name(name, statistic),
            name,
            statistic,
            kind.integer_valued and statistic not in ("std", FLAG),
            boolean=statistic == FLAG,
        )
        for name, kind in metrics
        for statistic in statistics
    )
