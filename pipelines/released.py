"""The released columns: one definition, from which every schema of the release is built.

Each metric releases four columns: its value, the noise standard deviation ``_std`` and
the noise-only interval ``_ci_low`` / ``_ci_high`` (docs/privacy.md §7). The Spark struct
of the noise step, the Arrow schema of the Parquet files and the manifest's column lists
are all built from ``released_columns``; nothing else spells the suffixes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pipelines.metric_kinds import MetricKind

Statistic = Literal["value", "std", "ci_low", "ci_high"]
#: Column-name suffix of each released statistic of a metric.
SUFFIXES: dict[Statistic, str] = {
    "value": "",
    "std": "_std",
    "ci_low": "_ci_low",
    "ci_high": "_ci_high",
}


@dataclass(frozen=True)
class ReleasedColumn:
    """One column of the released table (after the partition keys)."""

    name: str
    output: str  # the output name of the metric it belongs to
    statistic: Statistic
    integer: bool  # int64 (counts and their intervals), else float64


def released_name(metric: str, statistic: Statistic) -> str:
    """The column holding ``statistic`` of the metric called ``metric``."""
    return f"{metric}{SUFFIXES[statistic]}"


def released_names(metric: str) -> tuple[str, ...]:
    """The four columns a metric releases, in release order."""
    return tuple(released_name(metric, s) for s in SUFFIXES)


def released_columns(metrics: Iterable[tuple[str, MetricKind]]) -> tuple[ReleasedColumn, ...]:
    """Every released column after the keys: value, std, ci_low, ci_high per metric."""
    return tuple(
        ReleasedColumn(
            released_name(name, statistic),
            name,
            statistic,
            kind.integer_valued and statistic != "std",
        )
        for name, kind in metrics
        for statistic in SUFFIXES
    )
