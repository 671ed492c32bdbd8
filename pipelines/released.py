"""The released columns: one definition, from which every schema of the release is built.

Each metric releases four columns: its value, the noise standard deviation ``_std`` and
the noise-only interval ``_ci_low`` / ``_ci_high`` (docs/privacy.md §7), and, when
``post_processing.reliability_share`` is set, a boolean ``_unreliable`` flag. The Spark struct
of the noise step, the Arrow schema of the Parquet files and the manifest's column lists
are all built from ``released_columns``; nothing else spells the suffixes.

A tree kind (``quantiles``) releases, per configured rank, the value ``<metric>_p50`` and its
interval ``<metric>_p50_ci_low`` / ``_ci_high`` (``rank_name``); no ``_std`` (its noise acts
on ranks, not on values: docs/privacy.md §4b) and no reliability flag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
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
#: The statistics a tree kind releases per rank (no std: its noise acts on ranks).
RANK_STATISTICS: tuple[Statistic, ...] = ("value", "ci_low", "ci_high")


@dataclass(frozen=True)
class ReleasedColumn:
    """One column of the released table (after the partition keys)."""

    name: str
    output: str  # the output name of the metric it belongs to
    statistic: Statistic
    integer: bool  # int64 (counts and their intervals), else float64
    boolean: bool = False  # the reliability flag (bool), whatever ``integer`` says
    rank: float | None = None  # a tree kind's rank (quantiles), else None


def released_name(metric: str, statistic: Statistic) -> str:
    """The column holding ``statistic`` of the metric called ``metric``."""
    suffix = _FLAG_SUFFIX if statistic == FLAG else SUFFIXES[statistic]
    return f"{metric}{suffix}"


def released_names(metric: str) -> tuple[str, ...]:
    """The four columns a metric releases, in release order."""
    return tuple(released_name(metric, s) for s in SUFFIXES)


def rank_name(metric: str, rank: float) -> str:
    """The column stem of ``rank`` of the tree metric ``metric``: ``los_p50`` for 0.5,
    ``los_p99_5`` for 0.995 (the rank in percent, its decimal point written ``_``).

    Invariant: distinct ranks (doubles) give distinct names (shortest round-trip digits).
    """
    percent = format((Decimal(repr(rank)) * 100).normalize(), "f").replace(".", "_")
    return f"{metric}_p{percent}"


def metric_column_names(metric: str, ranks: Sequence[float] | None) -> tuple[str, ...]:
    """Every column the metric ``metric`` may release: its four statistics and its flag,
    or, for a tree metric (``ranks`` given), each rank's value and interval."""
    if ranks is None:
        return (*released_names(metric), released_name(metric, FLAG))
    return tuple(
        released_name(rank_name(metric, rank), s) for rank in ranks for s in RANK_STATISTICS
    )


def _rank_columns(name: str, ranks: Sequence[float]) -> tuple[ReleasedColumn, ...]:
    return tuple(
        ReleasedColumn(released_name(rank_name(name, rank), s), name, s, False, rank=rank)
        for rank in ranks
        for s in RANK_STATISTICS
    )


def released_columns(
    metrics: Iterable[tuple[str, MetricKind]],
    flagged: bool = False,
    ranks: Mapping[str, Sequence[float]] | None = None,
) -> tuple[ReleasedColumn, ...]:
    """Every released column after the keys: value, std, ci_low, ci_high per metric, then
    its ``_unreliable`` flag when ``flagged`` (the config sets a reliability share); a
    tree metric, each of its ``ranks[name]`` in configured order (``RANK_STATISTICS``)."""
    statistics: list[Statistic] = [*SUFFIXES, FLAG] if flagged else list(SUFFIXES)
    columns: list[ReleasedColumn] = []
    for name, kind in metrics:
        if kind.tree:
            columns.extend(_rank_columns(name, (ranks or {})[name]))
            continue
        columns.extend(
            ReleasedColumn(
                released_name(name, statistic),
                name,
                statistic,
                kind.integer_valued and statistic not in ("std", FLAG),
                boolean=statistic == FLAG,
            )
            for statistic in statistics
        )
    return tuple(columns)


def value_columns(metric: str, tree: bool, columns: Sequence[str]) -> list[str]:
    """The value columns of a released metric, from its listed ``columns`` (the manifest's):
    a tree metric's per-rank values (first of each ``RANK_STATISTICS`` group), else its own
    name. Each has its ``_ci_low`` and ``_ci_high`` beside it."""
    return list(columns[:: len(RANK_STATISTICS)]) if tree else [metric]
