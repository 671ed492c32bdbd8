"""Quantile trees on Spark: exact leaf counts, then one noisy tree per released partition.

Invariants (docs/privacy.md §4b):
- a partition's tree counts only the values its kept cells carry (``bounded_cells``: at
  most Linf per cell, at most L0 cells per unit), so one unit moves each level of a
  partition's node vector by at most Linf;
- leaf counts are exact integers from a hash aggregate with map-side partial counts;
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
from functools import reduce
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dp_ops.noise import NoiseDistribution
from dp_ops.quantile_tree import IntArray, NoisyTree, TreeShape
from pipelines.bounding import leaves_column
from pipelines.noising import NoiseSource
from pipelines.plan import ReleasePlan
from pipelines.source import column

TREE = "__tree"  # the tree's index in ``ReleasePlan.trees``
LEAF = "__leaf"
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


def leaf_counts(cells: DataFrame, plan: ReleasePlan) -> DataFrame:
    """One row per (partition, tree, non-empty leaf): the exact count of kept values.

    Expects the kept cells of ``bound_contributions`` (each tree's leaves column holds at
    most Linf leaves per cell).
    """
    keys = [column(name) for name in plan.columns.partition_columns]
    exploded = [
        # One row per (kept cell, kept value) of tree ``index``: its leaf.
        cells.select(
            *keys,
            F.lit(index).alias(TREE),
            F.explode(F.col(leaves_column(output.name))).alias(LEAF),
        )
        for index, output in enumerate(plan.trees)
    ]
    values = reduce(DataFrame.unionByName, exploded)
    # One row per (partition, tree, leaf): exact counts, partial counts map-side.
    return values.groupBy(*keys, TREE, LEAF).agg(F.count(F.lit(1)).alias(VALUES))


def tree_inputs(counts: DataFrame, released_keys: DataFrame, plan: ReleasePlan) -> DataFrame:
    """One row per released partition: its keys and its non-empty leaves (null if none)."""
    keys = list(plan.columns.partition_columns)
    # One row per partition with kept values: at most trees × leaves entries (public).
    nodes = counts.groupBy(*[column(k) for k in keys]).agg(
        F.collect_list(F.struct(TREE, LEAF, VALUES)).alias(NODES)
    )
    # One row per released partition (the left join keeps partitions without values).
    return released_keys.join(nodes, on=keys, how="left")


def _flat_nodes(batch: pa.RecordBatch) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Row index, tree index, leaf and count of every node entry of the batch."""
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
    order = np.lexsort((leaves, trees, parents))
    group = (parents * len(step.trees) + trees)[order]
    out = {name: np.empty(rows, dtype=np.float64) for name in step.columns}
    for index, tree in enumerate(step.trees):
        for row in range(rows):
            wanted = row * len(step.trees) + index
            lo, hi = np.searchsorted(group, [wanted, wanted + 1])
            picked = order[lo:hi]
            noisy = NoisyTree(tree.shape, leaves[picked], counts[picked], tree.noise, draw)
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
    cells: DataFrame, noisy: Path, plan: ReleasePlan, source: NoiseSource, out: Path
) -> None:
    """Write the trees of the partitions staged in ``noisy`` to ``out`` (staging only)."""
    spark = cells.sparkSession
    keys = list(plan.columns.partition_columns)
    # One row per released partition: its keys, read back from the staged noisy table.
    released = spark.read.parquet(str(noisy)).select(*[column(k) for k in keys])
    inputs = tree_inputs(leaf_counts(cells, plan), released, plan)
    noisy_trees(inputs, plan, source).write.mode("errorifexists").parquet(str(out))
