"""Leaf entries on Spark: the packed (order, tree, leaf) long decodes to what it was made
from, and with several quantile metrics each tree counts its own column's values."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from dp_ops.quantile_tree import TreeShape
from pipelines.bounding import BoundingSalt, bound_contributions, select_encoded
from pipelines.config import config_from_mapping
from pipelines.leaf_entries import LeafEntries
from pipelines.plan import build_plan
from pipelines.quantiles import LEAF, TREE, VALUES, leaf_counts
from tests.support import config_mapping, write_rows

ROWS = pa.schema(
    [("user", pa.string()), ("key", pa.string()), ("value", pa.float64()), ("ts", pa.int64())]
)


def test_an_entry_gives_back_its_tree_and_leaf_under_any_order_bits(spark: SparkSession) -> None:
    """Three trees of 65,536 leaves: every (tree, leaf) survives packing under orders of
    either sign, the extremes included, and ``ordered`` keeps the order's high bits."""
    bits = LeafEntries(tree_bits=2, leaf_bits=16)
    rng = np.random.default_rng(11)
    orders = [0, -1, 2**63 - 1, -(2**63), *rng.integers(-(2**63), 2**63 - 1, 40).tolist()]
    cases = [(t, leaf, o) for t in range(3) for leaf in (0, 1, 40_000, 65_535) for o in orders]
    frame = spark.createDataFrame(cases, "t int, leaf int, o long")
    entry = F.coalesce(*[F.when(F.col("t") == t, bits.entry(t, F.col("leaf"))) for t in range(3)])
    packed = bits.ordered(entry, F.col("o"))
    rows = frame.select(
        "t",
        "leaf",
        "o",
        bits.tree(packed).alias("tree"),
        bits.leaf(packed).alias("decoded"),
        F.shiftright(packed, bits.low_bits).alias("high"),
    ).collect()
    assert all(r["tree"] == r["t"] and r["decoded"] == r["leaf"] for r in rows)
    assert all(r["high"] == r["o"] >> bits.low_bits for r in rows)


def test_each_of_two_trees_counts_its_own_column(spark: SparkSession, tmp_path: Path) -> None:
    """Two quantile metrics (on ``value`` and on ``ts``), Linf = 2, cells of one or two
    distinct rows: every value is kept, and each tree's exact leaf counts are exactly its
    own column's leaves, key by key."""
    rng = np.random.default_rng(5)
    rows = [
        {"user": f"u{u}", "key": "AB"[u % 2], "value": float(rng.uniform(0, 100)), "ts": int(i)}
        for u in range(200)
        for i in range(1 + u % 2)
    ]
    data = write_rows(tmp_path / "in" / "rows.parquet", rows, ROWS)
    quantiles = {"metric": "quantiles", "lower": 0.0, "ranks": [0.5]}
    metrics = [
        {"metric": "privacy_id_count"},
        {**quantiles, "column": "value", "upper": 100.0, "name": "v"},
        {**quantiles, "column": "ts", "upper": 4.0, "name": "t"},
    ]
    raw = config_mapping(
        tmp_path / "releases",
        data,
        metrics=metrics,
        contribution_bounds={"max_partitions_per_unit": 1, "max_rows_per_unit_per_partition": 2},
    )
    plan = build_plan(config_from_mapping(raw))
    cells = bound_contributions(
        select_encoded(spark.read.parquet(str(data)), plan), plan, BoundingSalt.fresh()
    )
    counts = {(r["key"], r[TREE], r[LEAF]): r[VALUES] for r in leaf_counts(cells, plan).collect()}
    expected: Counter[tuple[str, int, int]] = Counter()
    for index, output in enumerate(plan.trees):
        column = "value" if output.name == "v" else "ts"
        shape = TreeShape(0.0, 100.0) if column == "value" else TreeShape(0.0, 4.0)
        for row in rows:
            expected[(str(row["key"]), index, int(shape.leaf_of(np.array([row[column]]))[0]))] += 1
    assert counts == dict(expected)
