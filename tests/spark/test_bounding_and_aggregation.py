"""Contribution bounding invariants and exact, partitioning-independent aggregation."""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from benchmarks.pipeline import sorts_of_row_grain_data
from pipelines.aggregation import aggregate_partitions
from pipelines.bounding import (
    UNIT,
    BoundingSalt,
    bound_contributions,
    select_encoded,
)
from pipelines.cell_rules import encoded_column, encoded_columns
from pipelines.job import clean_rows
from pipelines.metric_kinds import ROWS
from pipelines.plan import ReleasePlan, build_plan
from tests.support import job_config, write_rows

SCHEMA = pa.schema([("user", pa.string()), ("key", pa.string()), ("value", pa.float64())])


@pytest.fixture(scope="module")
def heavy_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 rows: heavy units across many keys, awkward floats, duplicates."""
    rng = random.Random(7)
    rows = []
    for unit in range(60):
        keys = rng.sample(range(40), k=1 + unit % 12)
        for _ in range(10 + 3 * (unit % 7)):
            rows.append(
                {
                    "user": f"user{unit}",
                    "key": f"k{rng.choice(keys)}",
                    "value": rng.choice([0.1, 0.2, 0.3, 1e-9, 7.77, 9.99, 123.0, -4.0]),
                }
            )
    rng.shuffle(rows)
    return write_rows(tmp_path_factory.mktemp("heavy") / "rows.parquet", rows[:3000], SCHEMA)


def test_each_unit_keeps_at_most_l0_cells_each_inside_its_bounds(
    spark: SparkSession, tmp_path: Path, heavy_rows: Path
) -> None:
    plan = build_plan(job_config(tmp_path, heavy_rows))
    frame = clean_rows(spark.read.parquet(str(heavy_rows)), plan)
    cells = bound_contributions(select_encoded(frame, plan), plan, BoundingSalt.fresh()).collect()
    assert len({(r[UNIT], r["key"]) for r in cells}) == len(cells)  # one row per cell
    per_unit = Counter(r[UNIT] for r in cells)
    assert max(per_unit.values()) <= 3
    # Units with at least 3 keys keep exactly 3 (the sample never drops below L0).
    assert sum(count == 3 for count in per_unit.values()) >= 40
    sums, means = plan.encodings["sum_value"], plan.encodings["mean_value"]
    for row in cells:
        c = row[ROWS]
        assert 1 <= c <= 2
        assert c * sums.lo_units <= row["sum__sum_value"] <= c * sums.hi_units
        assert abs(row["nsum__mean_value"]) <= c * means.width


def _reference_cells(
    rows: list[dict[str, object]], plan: ReleasePlan
) -> dict[tuple[object, object], dict[str, int]]:
    """The bounding rule of docs/privacy.md §2 step 2, in plain Python integers (the oracle)."""
    linf = plan.bounds.max_rows_per_unit_per_partition
    sums, means = plan.encodings["sum_value"], plan.encodings["mean_value"]
    grouped: dict[tuple[object, object], list[float]] = {}
    for row in rows:
        grouped.setdefault((row["user"], row["key"]), []).append(float(row["value"]))  # type: ignore[arg-type]
    out = {}
    for cell, values in grouped.items():
        n, c = len(values), min(len(values), linf)
        units = [int(u) for u in sums.grid.encode(values, sums.lower, sums.upper)]
        total = min(max(sum(units), c * sums.lo_units), c * sums.hi_units)
        m_units = [int(u) for u in means.grid.encode(values, means.lower, means.upper)]
        centred = sum(2 * (u - means.lo_units) - means.width for u in m_units)
        scaled = abs(centred) * c // n
        out[cell] = {
            ROWS: c,
            "sum__sum_value": total,
            "nsum__mean_value": scaled if centred >= 0 else -scaled,
        }
    return out


def test_cell_contributions_match_the_reference_definition(
    spark: SparkSession, tmp_path: Path, heavy_rows: Path
) -> None:
    """Aggregate-first bounding: c = min(n, Linf), sums clamped, centred sums scaled by c/n."""
    bounds = {"max_partitions_per_unit": 1000, "max_rows_per_unit_per_partition": 3}
    plan = build_plan(job_config(tmp_path, heavy_rows, contribution_bounds=bounds))
    frame = clean_rows(spark.read.parquet(str(heavy_rows)), plan)
    cells = bound_contributions(select_encoded(frame, plan), plan, BoundingSalt.fresh())
    raw = [r.asDict() for r in frame.collect()]
    reference = _reference_cells(raw, plan)
    assert any(len([r for r in raw if (r["user"], r["key"]) == k]) > 3 for k in reference)
    got = {
        (r[UNIT], r["key"]): {
            name: r[name] for name in (ROWS, "sum__sum_value", "nsum__mean_value")
        }
        for r in cells.collect()
    }
    assert got == reference


def _sorted_aggregates(frame: DataFrame) -> list[tuple[object, ...]]:
    return sorted(tuple(row) for row in frame.collect())


def test_aggregates_are_bit_identical_under_repartitioning_and_shuffles(
    spark: SparkSession, tmp_path: Path, heavy_rows: Path
) -> None:
    plan = build_plan(job_config(tmp_path, heavy_rows))
    salt = BoundingSalt.fresh()
    source = clean_rows(spark.read.parquet(str(heavy_rows)), plan)

    def aggregates(frame: DataFrame) -> list[tuple[object, ...]]:
        return _sorted_aggregates(
            aggregate_partitions(bound_contributions(select_encoded(frame, plan), plan, salt), plan)
        )

    reference = aggregates(source.repartition(1))
    for partitions in (2, 7, 64):
        assert aggregates(source.repartition(partitions)) == reference
    assert aggregates(source.orderBy(F.rand(seed=11)).repartition(5)) == reference
    assert aggregates(source.orderBy(F.desc("value")).coalesce(3)) == reference

    # The same sums computed exactly with Fractions from the bounded cells.
    bounded = bound_contributions(select_encoded(source, plan), plan, salt).collect()
    encoding = plan.encodings["sum_value"]
    exact: dict[str, Fraction] = {}
    for row in bounded:
        exact[row["key"]] = exact.get(row["key"], Fraction(0)) + Fraction(
            row["sum__sum_value"]
        ) * Fraction(encoding.grid.step)
    by_key = {row[0]: row for row in reference}
    columns = aggregate_partitions(
        bound_contributions(select_encoded(source, plan), plan, salt), plan
    ).columns
    sum_index = columns.index("sum__sum_value")
    for key, total in exact.items():
        value = by_key[key][sum_index]
        assert isinstance(value, int | Decimal)  # a long or a decimal(38,0) sum
        assert Fraction(int(value)) * Fraction(encoding.grid.step) == total


def test_the_sample_depends_only_on_the_units_own_rows(
    spark: SparkSession, tmp_path: Path, heavy_rows: Path
) -> None:
    plan = build_plan(job_config(tmp_path, heavy_rows))
    salt = BoundingSalt.fresh()
    frame = clean_rows(spark.read.parquet(str(heavy_rows)), plan)
    everyone = bound_contributions(select_encoded(frame, plan), plan, salt)
    without_others = bound_contributions(
        select_encoded(frame.filter(F.col("user") == "user5"), plan), plan, salt
    )
    kept_alone = _sorted_aggregates(without_others)
    kept_with_others = _sorted_aggregates(everyone.filter(F.col(UNIT) == "user5"))
    assert kept_alone == kept_with_others


def test_physical_plan_shuffles_twice_and_sorts_no_rows(
    spark: SparkSession, tmp_path: Path, heavy_rows: Path
) -> None:
    """One shuffle of rows by unit, one of cells by key; the only sort is of cells."""
    plan = build_plan(job_config(tmp_path, heavy_rows))
    frame = clean_rows(spark.read.parquet(str(heavy_rows)), plan)
    aggregated = aggregate_partitions(
        bound_contributions(select_encoded(frame, plan), plan, BoundingSalt.fresh()), plan
    )
    physical = aggregated._jdf.queryExecution().executedPlan().toString()
    exchanges = [line for line in physical.splitlines() if "Exchange hashpartitioning" in line]
    assert len(exchanges) == 2, physical
    assert f"hashpartitioning({UNIT}" in exchanges[-1], physical
    assert sorts_of_row_grain_data(physical) == [], physical


def test_equal_encodings_share_one_column_and_different_ones_do_not(
    spark: SparkSession, tmp_path: Path, heavy_rows: Path
) -> None:
    plan = build_plan(job_config(tmp_path, heavy_rows))
    same = plan.encodings["sum_value"] == plan.encodings["mean_value"]
    columns = select_encoded(spark.read.parquet(str(heavy_rows)), plan).columns
    encoded = [c for c in columns if c.startswith("__units__")]
    assert len(encoded) == (1 if same else 2)
    assert encoded_columns(plan)["sum_value"] == encoded_column("sum_value")

    metrics = [
        {"metric": "sum", "column": "value", "lower": 0.0, "upper": 10.0},
        {"metric": "mean", "column": "value", "lower": -5.0, "upper": 5.0},
    ]
    apart = build_plan(job_config(tmp_path, heavy_rows, metrics=metrics))
    assert encoded_columns(apart) == {
        "sum_value": encoded_column("sum_value"),
        "mean_value": encoded_column("mean_value"),
    }
    columns = select_encoded(spark.read.parquet(str(heavy_rows)), apart).columns
    assert [c for c in columns if c.startswith("__units__")] == list(
        encoded_columns(apart).values()
    )
