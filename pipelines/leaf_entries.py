"""Leaf entries: how a quantile tree's kept values travel from rows to leaf counts.

A value's leaf is its bin on the tree's public grid (``encode_leaf``). A row carries one
long per tree through the bounding shuffle (``row_entry_column``), a kept cell one array
of at most Linf such longs per tree (``leaves_column``), and the leaf counts decode them
after one explode (``LeafEntries``). The layout, low bits first: the leaf, the tree's
index, then order bits (a digest or the value sample's keyed hash) that only rank rows
and are never decoded. Invariant: ``LeafEntries.tree`` and ``LeafEntries.leaf`` give back
exactly the tree and leaf an entry was made from, whatever its order bits (docs/privacy.md
§2 step 4, §4b).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dp_ops.quantile_tree import TreeShape
from pipelines.plan import ReleasePlan
from pipelines.source import column


def row_entry_column(metric_name: str) -> str:
    """Name of a tree metric's row-grain entry: content digest over (tree, leaf)."""
    return f"__entry__{metric_name}"


def leaves_column(metric_name: str) -> str:
    """Name of a tree metric's cell-grain array of kept leaf entries (at most Linf)."""
    return f"__leaves__{metric_name}"


@dataclass(frozen=True)
class LeafEntries:
    """How a kept value travels from its cell to the leaf counts: one long per value,
    ``(order & ~low) | (tree << leaf_bits) | leaf`` with ``low`` the ``low_bits`` mask.

    The low bits name the tree (its index in ``ReleasePlan.trees``) and the leaf; the
    bits above them, when present, are an order long's own (the row digest before the
    shuffle, the value sample's keyed hash after it) and are never decoded.
    Plain longs keep every step from the cell to the explode in Spark's generated code
    (sort, slice, concat, explode), with no per-element lambda.
    """

    tree_bits: int
    leaf_bits: int

    @staticmethod
    def of(plan: ReleasePlan) -> LeafEntries:
        """The entry layout of a plan's trees (no bits for the tree when there is one)."""
        shapes = [o.tree.shape for o in plan.trees if o.tree is not None]
        leaf_bits = max(shape.leaves - 1 for shape in shapes).bit_length()
        return LeafEntries((len(shapes) - 1).bit_length(), leaf_bits)

    @property
    def low_bits(self) -> int:
        """Bits under the order: the tree's and the leaf's."""
        return self.tree_bits + self.leaf_bits

    def entry(self, tree: int, leaf: Column) -> Column:
        """A tree's entry for a leaf (int column), without order bits."""
        return F.lit(tree << self.leaf_bits).cast(T.LongType()).bitwiseOR(leaf.cast(T.LongType()))

    def ordered(self, entry: Column, order: Column) -> Column:
        """``entry``'s tree and leaf under the high bits of ``order`` (a long)."""
        low = (1 << self.low_bits) - 1
        high = F.lit(~low).cast(T.LongType())  # a negative long: every bit above ``low``
        return order.bitwiseAND(high).bitwiseOR(entry.bitwiseAND(F.lit(low).cast(T.LongType())))

    def tree(self, entry: Column) -> Column:
        """The tree index of an entry (int)."""
        shifted = F.shiftright(entry, self.leaf_bits)
        return shifted.bitwiseAND(F.lit((1 << self.tree_bits) - 1)).cast(T.IntegerType())

    def leaf(self, entry: Column) -> Column:
        """The leaf of an entry (int)."""
        return entry.bitwiseAND(F.lit((1 << self.leaf_bits) - 1)).cast(T.IntegerType())


def kept_leaves(plan: ReleasePlan, metric_name: str) -> Column:
    """A cell's kept leaves of one tree as ints (for inspecting cells; the job decodes
    entries after its explode, ``LeafEntries.leaf``)."""
    bits = LeafEntries.of(plan)
    return F.transform(F.col(leaves_column(metric_name)), bits.leaf)


def encode_leaf(name: str, shape: TreeShape) -> Column:
    """The leaf of a value: clip(floor((clamp(x) − lower)·leaf_scale), 0, leaves − 1).

    The same double arithmetic as ``TreeShape.leaf_of`` (tested against it), as an int.
    """
    value = column(name).cast(T.DoubleType())
    clamped = F.least(F.greatest(value, F.lit(shape.lower)), F.lit(shape.upper))
    raw = F.floor((clamped - F.lit(shape.lower)) * F.lit(shape.leaf_scale))
    return F.least(F.greatest(raw, F.lit(0)), F.lit(shape.leaves - 1)).cast(T.IntegerType())
