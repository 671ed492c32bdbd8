"""Contribution bounding on Spark, aggregate first: cells, bounded cells, at most L0 per unit.

Invariant after ``bound_contributions``: one row per kept (unit, partition) cell; each unit
keeps at most L0 cells, a uniform sample ranked by a keyed hash of (salt, unit, key); each
cell carries its bounded contribution to every aggregate, which lies inside the
per-partition bound its metric kind declares (docs/privacy.md §4): COUNT c = min(n, Linf),
SUM the cell's total clamped to [c·lower, c·upper], MEAN's and VARIANCE's centred sums
scaled by c/n with integer rounding toward zero. A cell's contribution is a function of
that unit's own rows only, and the sample of a function of them and the per-run salt.

No sort of row-grain data: rows are shuffled once, by unit, and reduced to cells by a hash
aggregate; the L0 sample ranks cells (cell grain) within each unit's Spark partition.
With a quantile tree, each cell also keeps the leaves of at most Linf of its rows, by a
keyed hash of (salt, unit, key, row digest) (``leaf_sample``, docs/privacy.md §2
step 4, §4b): by hash aggregates alone for Linf <= 16, by a window (rows sorted inside
each unit's Spark partition, no extra shuffle) beyond.
The per-cell rules and their exact arithmetic live in ``pipelines.cell_rules``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.cell_rules import (
    CELL_ROWS,
    cell_sums,
    contributions,
    encoded_column,
    encoded_columns,
)
from pipelines.derivation import Encoding
from pipelines.leaf_entries import (
    LeafEntries,
    encode_leaf,
    leaves_column,
    row_entry_column,
)
from pipelines.plan import ReleasePlan
from pipelines.source import column

UNIT = "__unit"
CELL_HASH = "__cell_hash"
CELL_RANK = "__cell_rank"
ROW_RANK = "__row_rank"  # a row's rank in its cell by keyed hash (trees, Linf > 16)
VALUE_SLOT = "__value_slot"  # a row's slot in the sort-free value sample (trees)


@dataclass(frozen=True)
class BoundingSalt:
    """A per-run secret from the OS CSPRNG that keys the sampling hashes.

    Never logged, never written: it only makes the sample unpredictable and fixed for the run
    (so a Spark recompute picks the same cells).
    """

    value: str

    @staticmethod
    def fresh() -> BoundingSalt:
        """A new 128-bit salt from the OS CSPRNG."""
        return BoundingSalt(secrets.token_hex(16))

    def __repr__(self) -> str:
        return "BoundingSalt(<secret>)"


def encode_value(name: str, encoding: Encoding) -> Column:
    """Clamp to [lower, upper], then round half-to-even to whole grid units (long)."""
    value = column(name).cast(T.DoubleType())
    clamped = F.least(F.greatest(value, F.lit(encoding.lower)), F.lit(encoding.upper))
    return F.bround(clamped / F.lit(encoding.grid.step), 0).cast(T.LongType())


def _hashable(data_type: T.DataType) -> bool:
    """Spark's xxhash64 takes any type but maps (also nested in arrays and structs)."""
    if isinstance(data_type, T.MapType):
        return False
    if isinstance(data_type, T.ArrayType):
        return _hashable(data_type.elementType)
    if isinstance(data_type, T.StructType):
        return all(_hashable(f.dataType) for f in data_type.fields)
    return True


def _tree_columns(rows: DataFrame, plan: ReleasePlan) -> list[Column]:
    """Per tree metric one long, the row's tree and leaf under the high bits of its content
    digest (``LeafEntries.ordered``), when the plan has trees.

    The digest covers every hashable input column, so rows with equal values but other
    content rank apart in the cell's keyed sample; it is unsalted, never written or
    logged, and only ever hashed again with the salt (``_value_order``). One long per
    tree is all a row carries through the shuffle for its trees.
    """
    if not plan.trees:
        return []
    content = [column(f.name) for f in rows.schema.fields if _hashable(f.dataType)]
    digest = F.xxhash64(*content)
    bits = LeafEntries.of(plan)
    return [
        bits.ordered(bits.entry(index, encode_leaf(o.tree.column, o.tree.shape)), digest).alias(
            row_entry_column(o.name)
        )
        for index, o in enumerate(plan.trees)
        if o.tree is not None
    ]


def select_encoded(rows: DataFrame, plan: ReleasePlan) -> DataFrame:
    """Keep only what the release needs: unit, partition keys, one encoded column per metric,
    and for quantile trees one entry long per tree (``row_entry_column``).

    Expects rows that meet the input contract (no null unit or key, finite values).
    """
    columns = encoded_columns(plan)
    # One row per input row: unit, keys, one integer-encoded value per distinct encoding.
    return rows.select(
        column(plan.columns.privacy_unit).alias(UNIT),
        *[column(name) for name in plan.columns.partition_columns],
        *[
            encode_value(encoding.column, encoding).alias(columns[name])
            for name, encoding in plan.encodings.items()
            if columns[name] == encoded_column(name)
        ],
        *_tree_columns(rows, plan),
    )


MAX_VALUE_SLOTS = 32  # past this (Linf > 16) the exact window sample is used instead


def value_slots(linf: int) -> int | None:
    """Slots of the sort-free value sample, each keeping its smallest and largest row: one
    for Linf <= 2 (the min and the max are a uniform pair), else the power of two >=
    2·Linf; None past 32."""
    if linf <= 2:
        return 1
    slots = 1 << (2 * linf - 1).bit_length()
    return slots if slots <= MAX_VALUE_SLOTS else None


def _value_order(plan: ReleasePlan, salt: BoundingSalt) -> Column:
    """h = xxhash64(salt, "value", unit, keys, row digest): the value sample's keyed hash.

    The row digest is the high bits of the first tree's row entry (the same for every
    tree: ``_tree_columns``)."""
    keys = [column(name) for name in plan.columns.partition_columns]
    digest = F.shiftrightunsigned(
        F.col(row_entry_column(plan.trees[0].name)), LeafEntries.of(plan).low_bits
    )
    return F.xxhash64(F.lit(salt.value), F.lit("value"), F.col(UNIT), *keys, digest)


def _ordered_entries(plan: ReleasePlan, order: Column) -> dict[str, Column]:
    """Per tree, its row entry under the high bits of the keyed hash ``order``."""
    bits = LeafEntries.of(plan)
    return {o.name: bits.ordered(F.col(row_entry_column(o.name)), order) for o in plan.trees}


@dataclass(frozen=True)
class LeafSample:
    """How a cell's kept leaves are computed: row-grain frame, cell aggregates, cell columns."""

    rows: DataFrame
    aggregates: list[Column]
    kept: list[Column]  # per tree: its array of at most Linf kept entries (LeafEntries)


def _slot_name(metric_name: str, slot: int, end: str) -> str:
    """A tree's cell-grain minimum or maximum (``end``) of one slot."""
    return f"__slot{slot}{end}__{metric_name}"


def _packed_name(metric_name: str) -> str:
    """A tree's row-grain (order bits, leaf) long."""
    return f"__packed__{metric_name}"


def _slotted_sample(by_unit: DataFrame, plan: ReleasePlan, salt: BoundingSalt) -> LeafSample:
    """Per cell, the rows of smallest and largest keyed hash in each of S hash slots, then
    the Linf smallest of those candidates: at most Linf entries, by hash aggregates only.

    The hash's low bits pick the slot, its high bits order the rows; each tree's entry is
    packed under them (``LeafEntries.ordered``), so one ``min`` and one ``max`` per (slot,
    tree) pick the same rows for every tree. A cell loses none of its n <= Linf distinct
    rows unless three share a slot (never for Linf <= 2). Rows are exchangeable under the
    hash, so the kept rows are a uniform sample of the cell's rows.
    """
    linf = plan.bounds.max_rows_per_unit_per_partition
    slots = value_slots(linf)
    assert slots is not None
    order = _value_order(plan, salt)
    packed = _ordered_entries(plan, order)
    # One row per input row: its slot and, per tree, (order bits, entry) as one long.
    rows = by_unit.select(
        "*",
        order.bitwiseAND(F.lit(slots - 1)).cast(T.IntegerType()).alias(VALUE_SLOT),
        *[value.alias(_packed_name(name)) for name, value in packed.items()],
    )
    ends = {"min": F.min, "max": F.max}
    aggregates = [
        ends[end](F.when(F.col(VALUE_SLOT) == F.lit(slot), F.col(_packed_name(o.name)))).alias(
            _slot_name(o.name, slot, end)
        )
        for o in plan.trees
        for slot in range(slots)
        for end in ends
    ]
    no_row = F.array(F.lit(None).cast(T.LongType()))
    kept = []
    for o in plan.trees:
        ends_of = [F.col(_slot_name(o.name, slot, end)) for slot in range(slots) for end in ends]
        # Distinct rows only (a slot of one row gives it as both ends), no empty slot.
        candidates = F.array_except(F.array(*ends_of), no_row)
        smallest = F.slice(F.sort_array(candidates), 1, linf)
        kept.append(smallest.alias(leaves_column(o.name)))
    return LeafSample(rows, aggregates, kept)


def _ranked_sample(by_unit: DataFrame, plan: ReleasePlan, salt: BoundingSalt) -> LeafSample:
    """Per cell, the entries of its Linf rows of smallest keyed hash, exactly (Linf > 16).

    A window partitioned by (unit, keys) over rows already hash-partitioned by unit: a
    sort inside each Spark partition, no shuffle; it spills for a cell of any size. Ties
    are broken by the first tree's leaf (tied rows then give the same entries).
    """
    keys = [column(name) for name in plan.columns.partition_columns]
    packed = _ordered_entries(plan, _value_order(plan, salt))
    first = packed[plan.trees[0].name]
    in_cell = Window.partitionBy(UNIT, *keys).orderBy(first)
    # One row per input row, with its rank in its cell.
    rows = by_unit.withColumn(ROW_RANK, F.row_number().over(in_cell))
    linf = plan.bounds.max_rows_per_unit_per_partition
    aggregates = [
        F.collect_list(F.when(F.col(ROW_RANK) <= F.lit(linf), value)).alias(leaves_column(name))
        for name, value in packed.items()
    ]
    return LeafSample(rows, aggregates, [F.col(leaves_column(o.name)) for o in plan.trees])


def leaf_sample(by_unit: DataFrame, plan: ReleasePlan, salt: BoundingSalt) -> LeafSample:
    """Each cell's kept leaf entries per tree (``LeafEntries``): at most Linf, chosen by
    the keyed value hash.

    Sort-free slots for Linf <= 16 (``_slotted_sample``), the exact window beyond.
    """
    if value_slots(plan.bounds.max_rows_per_unit_per_partition) is None:
        return _ranked_sample(by_unit, plan, salt)
    return _slotted_sample(by_unit, plan, salt)


def bounded_cells(
    encoded: DataFrame, plan: ReleasePlan, salt: BoundingSalt | None = None
) -> DataFrame:
    """One row per (unit, partition) cell with its bounded contributions (before L0).

    Rows are shuffled once, by unit (the one row-grain shuffle), and reduced to cells by a
    hash aggregate (no sort); the cells stay hash-partitioned by unit. With quantile
    trees (``salt`` required), each cell also carries each tree's kept leaves
    (``leaf_sample``, ``leaves_column``).
    """
    keys = [column(name) for name in plan.columns.partition_columns]
    # One row per input row, hash-partitioned by unit.
    by_unit = encoded.repartition(UNIT)
    sample = LeafSample(by_unit, [], [])
    if plan.trees:
        assert salt is not None, "quantile trees sample values by a keyed hash: pass the salt"
        sample = leaf_sample(by_unit, plan, salt)
    # One row per (unit, partition) cell: n, the exact sums, the leaf sample's aggregates.
    cells = sample.rows.groupBy(UNIT, *keys).agg(
        F.count(F.lit(1)).alias(CELL_ROWS), *cell_sums(plan), *sample.aggregates
    )
    # One row per cell: its bounded contribution to every aggregate, and kept leaves.
    return cells.select(
        UNIT,
        *keys,
        *[value.alias(name) for name, value in contributions(plan).items()],
        *sample.kept,
    )


def cell_hash(plan: ReleasePlan, salt: BoundingSalt) -> Column:
    """The keyed hash that ranks a unit's cells: xxhash64(salt, "partition", unit, key)."""
    keys = [column(name) for name in plan.columns.partition_columns]
    return F.xxhash64(F.lit(salt.value), F.lit("partition"), F.col(UNIT), *keys)


def keep_l0_cells(cells: DataFrame, plan: ReleasePlan, salt: BoundingSalt) -> DataFrame:
    """At most L0 cells per unit: those of smallest ``cell_hash`` (keys break ties).

    A window over cells, partitioned by unit as the cells already are (no shuffle); it
    sorts cells, never rows, and spills to disk for a unit with any number of cells.
    Of the three ways measured (BENCHMARKS.md: this window, ``collect_list`` with a sorted
    slice, an Arrow pass), it was the fastest at 10M rows; the other two were 10-22%
    faster at 1M rows only, and ``collect_list`` holds each unit's cells in one in-memory
    array: a unit with millions of keys could fail the task, a failure that depends on
    one unit's data. The window never does.
    """
    keys = [column(name) for name in plan.columns.partition_columns]
    by_unit = Window.partitionBy(UNIT).orderBy(CELL_HASH, *keys)
    # One row per kept cell.
    return (
        cells.withColumn(CELL_HASH, cell_hash(plan, salt))
        .withColumn(CELL_RANK, F.row_number().over(by_unit))
        .filter(F.col(CELL_RANK) <= plan.bounds.max_partitions_per_unit)
        .drop(CELL_RANK, CELL_HASH)
    )


def bound_contributions(encoded: DataFrame, plan: ReleasePlan, salt: BoundingSalt) -> DataFrame:
    """One row per kept (unit, partition) cell with its bounded contributions.

    ``bounded_cells`` then ``keep_l0_cells``: each unit keeps the L0 cells of smallest
    keyed hash of (salt, unit, key), a uniform sample that depends only on the unit's own
    cells and the salt.
    """
    return keep_l0_cells(bounded_cells(encoded, plan, salt), plan, salt)
