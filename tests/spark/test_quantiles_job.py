"""Quantiles through the real job on Spark: leaves, the per-cell Linf sample, released
columns, the output contract and verify (docs/privacy.md §4b)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dp_ops.quantile_tree import TreeShape
from pipelines.bounding import BoundingSalt, bound_contributions, select_encoded, value_slots
from pipelines.config import config_from_mapping
from pipelines.job import run_release
from pipelines.leaf_entries import encode_leaf, kept_leaves, leaves_column
from pipelines.plan import ReleasePlan, build_plan
from pipelines.release import read_manifest
from pipelines.verification import verify_release
from tests.doubles import ZeroNoise
from tests.support import config_mapping, write_rows

ROWS = pa.schema(
    [("user", pa.string()), ("key", pa.string()), ("value", pa.float64()), ("ts", pa.int64())]
)
RANKS = [0.1, 0.5, 0.9]
QUANTILES = {"metric": "quantiles", "column": "value", "lower": 0.0, "upper": 100.0}


def _job(tmp: Path, data: Path, linf: int = 1, **overrides: Any) -> dict[str, Any]:
    metrics = [{"metric": "privacy_id_count"}, {**QUANTILES, "ranks": RANKS, "name": "v"}]
    return config_mapping(
        tmp / "releases",
        data,
        metrics=metrics,
        contribution_bounds={"max_partitions_per_unit": 2, "max_rows_per_unit_per_partition": linf},
        **overrides,
    )


def test_spark_leaf_matches_the_tree_shape(spark: SparkSession) -> None:
    """The Spark leaf expression and ``TreeShape.leaf_of`` agree value for value, edges,
    out-of-range and float-rounding boundaries included."""
    shape = TreeShape(-3.5, 1234.25)
    rng = np.random.default_rng(7)
    width = (shape.upper - shape.lower) / shape.leaves
    edges = shape.lower + np.arange(0, shape.leaves + 1, 997) * width
    values = np.concatenate(
        [
            rng.uniform(-10, 1300, 5000),
            edges,
            np.nextafter(edges, -np.inf),
            np.nextafter(edges, np.inf),
            [shape.lower, shape.upper, -1e300, 1e300, np.nextafter(shape.upper, 0)],
        ]
    )
    frame = spark.createDataFrame([(float(v),) for v in values], ["x"])
    leaves = [r[0] for r in frame.select(encode_leaf("x", shape)).collect()]
    assert leaves == shape.leaf_of(values).tolist()


def _cells(
    spark: SparkSession,
    tmp_path: Path,
    rows: list[dict[str, Any]],
    salt: BoundingSalt,
    linf: int = 2,
) -> tuple[ReleasePlan, DataFrame]:
    data = write_rows(tmp_path / "in" / f"rows{len(rows)}.parquet", rows, ROWS)
    plan = build_plan(config_from_mapping(_job(tmp_path, data, linf=linf)))
    frame = spark.read.parquet(str(data))
    return plan, _decoded(plan, bound_contributions(select_encoded(frame, plan), plan, salt))


def _decoded(plan: ReleasePlan, cells: DataFrame) -> DataFrame:
    """The kept cells with tree ``v``'s entries decoded to leaves (same column name)."""
    return cells.withColumn(leaves_column("v"), kept_leaves(plan, "v"))


def test_a_cell_keeps_at_most_linf_leaves_whatever_the_layout(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Linf = 2: a cell of 30 rows keeps 2 leaves, a cell of one row keeps its one; the
    same salt gives the same sample whatever the input's order and partitioning."""
    rows = [{"user": "u1", "key": "A", "value": float(i), "ts": i} for i in range(30)]
    rows += [{"user": "u2", "key": "A", "value": 50.0, "ts": 0}]
    salt = BoundingSalt.fresh()
    plan, cells = _cells(spark, tmp_path, rows, salt)
    column = leaves_column("v")
    kept = {r["__unit"]: sorted(r[column]) for r in cells.collect()}
    assert len(kept["u1"]) == 2 and kept["u2"] == [
        TreeShape(0.0, 100.0).leaf_of(np.array([50.0]))[0]
    ]
    shuffled = spark.read.parquet(str(tmp_path / "in" / "rows31.parquet")).orderBy(F.rand())
    again = _decoded(
        plan, bound_contributions(select_encoded(shuffled.repartition(7), plan), plan, salt)
    )
    assert {r["__unit"]: sorted(r[column]) for r in again.collect()} == kept


def test_the_cell_sample_is_uniform_over_rows_not_over_values(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Row content is in the sampling hash: 400 cells of ten rows at 5 and one at 90
    (other columns differ), Linf = 2, keep the 90 with probability 2/11 (mean 72.7,
    sd 7.7 over 400 cells). Bounds [40, 120] fail falsely with probability < 1e-4; a
    hash of the value alone keeps it half of the time (mean 200), far above 120."""
    rows = [
        {"user": f"u{u}", "key": "A", "value": 5.0 if i < 10 else 90.0, "ts": i}
        for u in range(400)
        for i in range(11)
    ]
    _, cells = _cells(spark, tmp_path, rows, BoundingSalt.fresh())
    high = TreeShape(0.0, 100.0).leaf_of(np.array([90.0]))[0]
    with_high = sum(high in r[leaves_column("v")] for r in cells.collect())
    assert 40 <= with_high <= 120


def test_slots_grow_with_linf_and_give_way_to_the_exact_window_past_sixteen() -> None:
    """One slot up to Linf 2 (its min and max), then 2·Linf slots rounded up to a power of
    two, at most 32; past that, no slots."""
    assert [value_slots(linf) for linf in (1, 2, 3, 4, 16, 17)] == [1, 1, 8, 8, 32, None]


def test_a_slotted_cell_of_at_most_linf_rows_loses_one_only_when_three_share_a_slot(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Each slot keeps its smallest and largest row. Linf = 2 (one slot): 300 cells of 2
    rows all keep both. Linf = 3 (8 slots): of 1,000 cells of 3 rows, those whose three
    rows share one slot (probability 1/64: mean 15.6) keep 2, the rest all 3; never more
    than Linf. Bounds [3, 35] fail falsely with probability < 1e-4; a slot keeping only
    its smallest row loses a row whenever two share a slot (probability 0.34: about 340)."""
    pairs = [
        {"user": f"u{u}", "key": "A", "value": float(i), "ts": i}
        for u in range(300)
        for i in range(2)
    ]
    _, cells = _cells(spark, tmp_path, pairs, BoundingSalt.fresh())
    assert [len(r[leaves_column("v")]) for r in cells.collect()] == [2] * 300
    triples = [
        {"user": f"u{u}", "key": "A", "value": float(i), "ts": i}
        for u in range(1000)
        for i in range(3)
    ]
    _, cells = _cells(spark, tmp_path, triples, BoundingSalt.fresh(), linf=3)
    sizes = [len(r[leaves_column("v")]) for r in cells.collect()]
    assert set(sizes) <= {2, 3} and 3 <= sizes.count(2) <= 35


def test_past_sixteen_values_a_cell_keeps_exactly_linf_by_the_window(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Linf = 20 (no slots): a cell of 30 rows keeps exactly 20 of its values, one of 5
    keeps all 5, and the same salt keeps the same values whatever the input's order."""
    rows = [{"user": "u1", "key": "A", "value": float(i), "ts": i} for i in range(30)]
    rows += [{"user": "u2", "key": "A", "value": float(60 + i), "ts": i} for i in range(5)]
    salt = BoundingSalt.fresh()
    plan, cells = _cells(spark, tmp_path, rows, salt, linf=20)
    kept = {r["__unit"]: sorted(r[leaves_column("v")]) for r in cells.collect()}
    shape = TreeShape(0.0, 100.0)
    assert len(kept["u1"]) == 20 and len(set(kept["u1"])) == 20
    assert kept["u2"] == shape.leaf_of(np.array([60.0, 61.0, 62.0, 63.0, 64.0])).tolist()
    shuffled = spark.read.parquet(str(tmp_path / "in" / "rows35.parquet")).orderBy(F.rand())
    again = _decoded(
        plan, bound_contributions(select_encoded(shuffled.repartition(5), plan), plan, salt)
    )
    assert {r["__unit"]: sorted(r[leaves_column("v")]) for r in again.collect()} == kept


def _release(spark: SparkSession, tmp: Path, raw: dict[str, Any]) -> tuple[Path, pa.Table]:
    result = run_release(spark, config_from_mapping(raw), source=ZeroNoise())
    version = Path(result.path)
    return version, pq.read_table(version / "data")


def test_noiseless_quantiles_fall_in_the_leaf_of_the_exact_order_statistic(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Zero noise: each released quantile lies in the leaf of the ceil(r·n)-th smallest
    kept value; Linf = 1 keeps one of a unit's rows; the columns are float64 in rank
    order, inside their intervals, and the release verifies."""
    rng = np.random.default_rng(3)
    rows: list[dict[str, Any]] = []
    exact: dict[str, list[float]] = {"A": [], "B": []}
    for u in range(300):
        for key, centre in (("A", 30.0), ("B", 70.0)):
            value = float(np.clip(rng.normal(centre, 10.0), 0, 100))
            exact[key].append(value)
            rows.append({"user": f"u{u}", "key": key, "value": value, "ts": 0})
    rows += [{"user": "heavy", "key": "A", "value": 100.0, "ts": t} for t in range(500)]
    exact["A"].append(100.0)  # Linf = 1: one of the heavy unit's 500 rows counts
    data = write_rows(tmp_path / "in" / "q.parquet", rows, ROWS)
    version, table = _release(spark, tmp_path, _job(tmp_path, data))
    names = [f"v_p{p}{s}" for p in (10, 50, 90) for s in ("", "_ci_low", "_ci_high")]
    assert table.column_names == [
        "key",
        "privacy_id_count",
        *[f"privacy_id_count{s}" for s in ("_std", "_ci_low", "_ci_high")],
        *names,
    ]
    assert all(table.schema.field(n).type == pa.float64() for n in names)
    shape = TreeShape(0.0, 100.0)
    for row in table.to_pylist():
        values = np.sort(np.asarray(exact[row["key"]]))
        released = [row[f"v_p{p}"] for p in (10, 50, 90)]
        assert released == sorted(released)
        for rank, value in zip(RANKS, released, strict=True):
            k = int(np.ceil(rank * len(values)))
            low, high = shape.leaf_edges(shape.leaf_of(values[k - 1 : k]))
            assert low[0] <= value <= high[0], (row["key"], rank, value, values[k - 1])
            p = f"v_p{int(rank * 100)}"
            assert row[f"{p}_ci_low"] <= value <= row[f"{p}_ci_high"]
    assert verify_release(version) == []
    manifest = read_manifest(version)
    tree = next(m for m in manifest["mechanisms"] if m["name"] == "v")["tree"]
    assert (tree["height"], tree["branching"], tree["ranks"]) == (4, 16, RANKS)


def test_a_public_key_without_rows_gets_the_empty_tree(spark: SparkSession, tmp_path: Path) -> None:
    """A public key absent from the data still gets a tree: zero noise gives the range's
    midpoint, and its interval is the whole range."""
    rows = [{"user": f"u{u}", "key": "A", "value": 10.0, "ts": 0} for u in range(20)]
    data = write_rows(tmp_path / "in" / "p.parquet", rows, ROWS)
    selection = {"mechanism": "public", "public_keys": {"values": {"key": ["A", "Z"]}}}
    _, table = _release(spark, tmp_path, _job(tmp_path, data, partition_selection=selection))
    empty = next(r for r in table.to_pylist() if r["key"] == "Z")
    assert empty["v_p50"] == 50.0
    assert (empty["v_p50_ci_low"], empty["v_p50_ci_high"]) == (0.0, 100.0)
    full = next(r for r in table.to_pylist() if r["key"] == "A")
    assert 9.99 <= full["v_p50"] <= 10.01


@pytest.mark.parametrize("keys", [100_000])
def test_quantiles_for_a_hundred_thousand_partitions(
    spark: SparkSession, tmp_path: Path, keys: int
) -> None:
    """100,000 released partitions with real noise: one tree each, all columns finite,
    monotone in rank and inside [lower, upper] (the output contract passed to publish)."""
    users = np.arange(keys * 2)
    rows = pa.table(
        {
            "user": pa.array([f"u{u}" for u in users]),
            "key": pa.array([f"k{u // 2}" for u in users]),
            "value": pa.array((users % 97).astype(np.float64)),
            "ts": pa.array(users.astype(np.int64)),
        },
        schema=ROWS,
    )
    data = tmp_path / "in" / "wide.parquet"
    data.parent.mkdir(parents=True)
    pq.write_table(rows, data)
    listed = tmp_path / "keys.csv"
    listed.write_text("key\n" + "".join(f"k{i}\n" for i in range(keys)))
    selection = {"mechanism": "public", "public_keys": {"path": str(listed)}}
    raw = _job(tmp_path, data, partition_selection=selection)
    result = run_release(spark, config_from_mapping(raw))
    table = pq.read_table(Path(result.path) / "data")
    assert table.num_rows == keys
    stacked = np.stack([table.column(f"v_p{p}").to_numpy() for p in (10, 50, 90)])
    assert np.all(np.diff(stacked, axis=0) >= 0)
    assert np.all((stacked >= 0) & (stacked <= 100))
