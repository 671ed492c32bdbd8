"""Quantile trees on Spark: exact leaf counts, then one noisy tree per released partition.

Invariants (docs/privacy.md §4b):
- a partition's tree counts only the values its kept cells carry (``bounded_cells``: at
  most Linf per cell, at most L0 cells per unit), so one unit moves each level of a
  partition's node vector by at most Linf;
- leaf counts are exact integers from a hash aggregate of the kept cells' entries
  (``leaf_counts``, map-side partial counts), read from the same kept cells as the
  partitions' aggregates (``tree_cells``: one pass over the rows for both);
  no partition's values are ever collected, only its non-empty leaves (at most
  ``TreeShape.leaves`` per tree, a public bound);
- trees are built for the partitions the noisy table released only (read back from the
  staged noisy table), and every released partition gets one, empty or not;
- node noise is exact integer noise from the run's ``NoiseSource`` inside the task, each
  value used at most once (``PooledDraws``); the result is written once to staging and
  nothing else reads its lineage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dp_ops.noise import NoiseDistribution
from dp_ops.quantile_tree import IntArray, NoisyTree, TreeShape
from pipelines.aggregation import summed_columns
from pipelines.leaf_entries import LeafEntries, leaves_column
from pipelines.noising import NoiseSource
from pipelines.plan import ReleasePlan
from pipelines.source import column

TREE = "__tree"  # the tree's index in ``ReleasePlan.trees``
LEAF = "__leaf"
ENTRY = "__entry"  # one kept value's packed tree and leaf (``LeafEntries``)
VALUES = "__values"  # exact count of kept values in one (partition, tree, leaf)
NODES = "__nodes"  # one partition's (tree, leaf, values) entries
POOL = 4096  # noise values drawn per call to the source


class PooledDraws:
    """Exact noise handed out from blocks of ``POOL`` draws of the source, each value once.

    The values of one block are independent draws of one distribution, so handing them
    out in order is the same as drawing each on demand; values left at the end of a task
    are discarded, never used. A new instance per task: nothing is shared across tasks.
    """

    def __init__(self, source: NoiseSource) -> None:
        self._source = source
        self._pools: dict[NoiseDistribution, tuple[IntArray, int]] = {}

    def __call__(self, noise: NoiseDistribution, size: int) -> IntArray:
        """``size`` fresh independent draws of ``noise``."""
        pool, used = self._pools.get(noise, (np.empty(0, dtype=np.int64), 0))
        if used + size > len(pool):
            pool = np.asarray(self._source.integer_noise(noise, max(POOL, size)), dtype=np.int64)
            used = 0
        self._pools[noise] = (pool, used + size)
        return pool[used : used + size]


@dataclass(frozen=True)
class _Tree:
    """One tree metric as the task needs it: shape, node noise, ranks, column names."""

    shape: TreeShape
    noise: NoiseDistribution
    ranks: tuple[float, ...]
    columns: tuple[tuple[str, str, str], ...]  # per rank: value, ci_low, ci_high


@dataclass(frozen=True)
class TreeStep:
    """What the tree task needs, picklable and small: no config, no data, no generator."""

    keys: tuple[str, ...]
    trees: tuple[_Tree, ...]
    alpha: float

    @property
    def columns(self) -> list[str]:
        """The released tree columns, in release order."""
        return [name for tree in self.trees for names in tree.columns for name in names]


def tree_step(plan: ReleasePlan) -> TreeStep:
    """The trees' parameters from the plan (driver side, before any data)."""
    trees = []
    for output in plan.trees:
        assert output.tree is not None
        names = {(c.rank, c.statistic): c.name for c in plan.released if c.output == output.name}
        ranks = output.tree.ranks
        columns = tuple(
            (names[(r, "value")], names[(r, "ci_low")], names[(r, "ci_high")]) for r in ranks
        )
        trees.append(_Tree(output.tree.shape, output.tree.nodes.noise, ranks, columns))
    return TreeStep(plan.columns.partition_columns, tuple(trees), plan.alpha)


def tree_cells(cells: DataFrame, plan: ReleasePlan) -> DataFrame:
    """The kept cells narrowed to what the release reads from them: partition keys, the
    summed contributions (``aggregate_partitions``) and each tree's kept entries
    (``leaf_counts``). The job keeps this frame for its pass, so the two aggregates are
    computed from one pass over the rows.
    """
    keys = [column(name) for name in plan.columns.partition_columns]
    entries = [F.col(leaves_column(o.name)) for o in plan.trees]
    # One row per kept (unit, partition) cell, without the unit.
    return cells.select(*keys, *summed_columns(plan), *entries)


def leaf_counts(cells: DataFrame, plan: ReleasePlan) -> DataFrame:
    """One row per (partition, tree, non-empty leaf): the exact count of kept values.

    Expects kept cells (``bound_contributions``, or ``tree_cells`` of them): each tree's
    leaves column holds at most Linf ``LeafEntries`` per cell. One shuffle, with map-side
    partial counts; a count is never more than the cells' entries of that leaf.
    """
    keys = [column(name) for name in plan.columns.partition_columns]
    bits = LeafEntries.of(plan)
    entries = F.concat(*[F.col(leaves_column(o.name)) for o in plan.trees])
    # One row per kept value: its partition and its packed (tree, leaf).
    values = cells.select(*keys, F.explode(entries).alias(ENTRY))
    tree = bits.tree(F.col(ENTRY)).alias(TREE)
    leaf = bits.leaf(F.col(ENTRY)).cast(T.LongType()).alias(LEAF)
    # One row per (partition, tree, non-empty leaf): exact counts, partial counts map-side.
    return values.groupBy(*keys, tree, leaf).agg(F.count(F.lit(1)).alias(VALUES))


def tree_inputs(counts: DataFrame, released_keys: DataFrame, plan: ReleasePlan) -> DataFrame:
    """One row per released partition: its keys and its non-empty leaves (null if none)."""
    keys = list(plan.columns.partition_columns)
    # One row per (released partition, tree, non-empty leaf): the others are never read.
    released = counts.join(released_keys, on=keys, how="left_semi")
    # One row per released partition with kept values: at most trees × leaves entries.
    nodes = released.groupBy(*[column(k) for k in keys]).agg(
        F.collect_list(F.struct(TREE, LEAF, VALUES)).alias(NODES)
    )
    # One row per released partition (the left join keeps partitions without values).
    return released_keys.join(nodes, on=keys, how="left")


def _flat_nodes(batch: pa.RecordBatch) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Row index (ascending: entries stay in row order), tree index, leaf and count of
    every node entry of the batch."""
    nodes = batch.column(NODES)
    parents = np.asarray(pc.list_parent_indices(nodes), dtype=np.int64)
    flat = pc.list_flatten(nodes)
    fields = [np.asarray(flat.field(name), dtype=np.int64) for name in (TREE, LEAF, VALUES)]
    return parents, fields[0], fields[1], fields[2]


def tree_batch(step: TreeStep, batch: pa.RecordBatch, draw: PooledDraws) -> pa.RecordBatch:
    """One batch of released partitions → keys and every tree column (same rows).

    Each (row, tree) gets one ``NoisyTree`` from its exact leaf counts; its quantiles and
    noise-only intervals are post-processing of that one noisy tree.
    """
    rows = batch.num_rows
    parents, trees, leaves, counts = _flat_nodes(batch)
    bounds = np.searchsorted(parents, np.arange(rows + 1))
    out = {name: np.empty(rows, dtype=np.float64) for name in step.columns}
    for row in range(rows):
        lo, hi = int(bounds[row]), int(bounds[row + 1])
        for index, tree in enumerate(step.trees):
            mine = (
                slice(lo, hi)
                if len(step.trees) == 1
                else lo + np.flatnonzero(trees[lo:hi] == index)
            )
            noisy = NoisyTree(tree.shape, leaves[mine], counts[mine], tree.noise, draw)
            values = noisy.quantiles(tree.ranks)
            low, high = noisy.intervals(tree.ranks, step.alpha)
            for position, (value, ci_low, ci_high) in enumerate(tree.columns):
                out[value][row] = values[position]
                out[ci_low][row] = low[position]
                out[ci_high][row] = high[position]
    arrays = [batch.column(k) for k in step.keys] + [pa.array(out[c]) for c in step.columns]
    return pa.RecordBatch.from_arrays(arrays, names=[*step.keys, *step.columns])


def noisy_trees(inputs: DataFrame, plan: ReleasePlan, source: NoiseSource) -> DataFrame:
    """One row per released partition: keys, then each tree's per-rank value and interval.

    Invariant: the caller writes the result once before anything reads it (the tree noise
    is drawn in this step's tasks).
    """
    step = tree_step(plan)
    fields = [inputs.schema[k] for k in step.keys]
    fields += [T.StructField(name, T.DoubleType(), False) for name in step.columns]

    def draw_trees(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        draw = PooledDraws(source)
        for batch in batches:
            yield tree_batch(step, batch, draw)

    # One row per released partition, its trees drawn once.
    return inputs.mapInArrow(draw_trees, T.StructType(fields))


def stage_trees(
    counts: DataFrame, noisy: Path, plan: ReleasePlan, source: NoiseSource, out: Path
) -> None:
    """Write the trees of the partitions staged in ``noisy`` to ``out`` (staging only);
    ``counts``: the exact leaf counts (``leaf_counts``)."""
    spark = counts.sparkSession
    keys = list(plan.columns.partition_columns)
    # One row per released partition: its keys, read back from the staged noisy table.
    released = spark.read.parquet(str(noisy)).select(*[column(k) for k in keys])
    inputs = tree_inputs(counts, released, plan)
    noisy_trees(inputs, plan, source).write.mode("errorifexists").parquet(str(out))
