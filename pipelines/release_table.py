"""The released table as readers see it: rows in a version's data files, with their metrics.

Reads only a version's published (or staged) files and its manifest: the noisy values,
their std and interval columns, and the keys DP selection released (docs/privacy.md §9).
Nothing here touches the private input, and ordering by a noisy count is post-processing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.display import format_interval
from pipelines.metric_kinds import MetricKind, kind_of
from pipelines.released import released_name, value_columns

__all__ = ["ReleasedMetric", "ReleasedTable", "read_released"]


def _ranking_order(kind: MetricKind) -> int | None:
    """Rank a table by a noisy count, the row count first; None: not a count."""
    if kind.serves_as_count:
        return 0
    return 1 if kind.integer_valued else None


@dataclass(frozen=True)
class ReleasedMetric:
    """One released statistic: its value column's name (a quantile: one per rank), kind
    and value bounds (if measured)."""

    name: str
    metric: str
    lower: float | None
    upper: float | None

    @property
    def kind(self) -> MetricKind:
        """Its metric kind (``pipelines.metric_kinds``)."""
        return kind_of(self.metric)


@dataclass(frozen=True)
class ReleasedTable:
    """A version's released rows (sorted by key, as published) and what they hold."""

    table: pa.Table
    keys: list[str]
    metrics: list[ReleasedMetric]

    @property
    def rows(self) -> int:
        """Number of released rows (partitions)."""
        return int(self.table.num_rows)

    @property
    def ranking_metric(self) -> ReleasedMetric | None:
        """The noisy count rows are ranked by (row count first), if the release has one."""
        ranked = [(_ranking_order(m.kind), i, m) for i, m in enumerate(self.metrics)]
        counts = [(order, i, m) for order, i, m in ranked if order is not None]
        return min(counts, key=lambda item: (item[0], item[1]))[2] if counts else None

    def ranked(self) -> ReleasedTable:
        """Rows by decreasing noisy count (ties keep key order); as published without one."""
        ranking = self.ranking_metric
        if ranking is None or self.rows == 0:
            return self
        values = [_number(v) for v in self.table.column(ranking.name).to_pylist()]
        order = sorted(range(self.rows), key=lambda i: -values[i] if values[i] == values[i] else 0)
        return ReleasedTable(self.table.take(order), self.keys, self.metrics)

    def head(self, limit: int, offset: int = 0) -> ReleasedTable:
        """``limit`` rows from ``offset`` (a page of the table)."""
        return ReleasedTable(self.table.slice(offset, limit), self.keys, self.metrics)

    def display_rows(self) -> list[list[str]]:
        """Each row as text: key values, then ``value ± half-width`` per metric."""
        columns = {name: self.table.column(name).to_pylist() for name in self.table.schema.names}
        out = []
        for index in range(self.rows):
            cells = [str(columns[key][index]) for key in self.keys]
            for metric in self.metrics:
                value, low, high = (
                    _number(columns[name][index])
                    for name in (
                        metric.name,
                        released_name(metric.name, "ci_low"),
                        released_name(metric.name, "ci_high"),
                    )
                )
                cells.append(format_interval(value, low, high))
            out.append(cells)
        return out

    def header(self) -> list[str]:
        """Column titles of ``display_rows``."""
        return [*self.keys, *(m.name for m in self.metrics)]


def _number(value: object) -> float:
    """A released cell as a float (NaN for a null, which the output contract refuses)."""
    return float(value) if isinstance(value, int | float) else math.nan


def read_released(version_dir: Path, manifest: dict[str, Any]) -> ReleasedTable:
    """The released table of a version (its ``data/`` files, as the manifest lists them)."""
    files = [version_dir / entry["path"] for entry in manifest["data"]["files"]]
    tables = [pq.read_table(path) for path in files]
    names = [column["name"] for column in manifest["data"]["schema"]]
    if tables:
        table = pa.concat_tables(tables).select(names)
    else:
        table = pa.table({name: pa.array([], pa.null()) for name in names})
    metrics = [
        ReleasedMetric(name, c["metric"], c.get("lower"), c.get("upper"))
        for c in manifest["columns"]
        for name in value_columns(c["name"], kind_of(c["metric"]).tree, c["columns"])
    ]
    return ReleasedTable(table, list(manifest["partitions"]["columns"]), metrics)
