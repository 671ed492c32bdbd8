"""Planning answers against realised noise: `plan`'s expected std and interval at a
partition size, checked on a real release with exact CSPRNG noise.

300 public keys, each with exactly 100 units of one row at the middle of the mean's bounds
(so the true mean is the middle and the true count is 100): the released values' spread
around the truth is the noise alone. False-failure rate: each std check allows 35% around
the planned value, more than 5 standard errors of a sample std of 300 draws with Laplace
tails (relative standard error sqrt((kurtosis - 1) / (4 N)) = 0.065), so below 1e-6
each; the coverage check fails with probability below 1e-6 (binomial, 300 draws at a
coverage of about 95%, threshold 88%: 5 standard errors).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from pipelines.accuracy import expected_accuracy
from pipelines.config import config_from_mapping
from pipelines.job import run_release
from tests.support import audit_config, public_selection

KEYS, UNITS, MIDDLE = 300, 100, 5.0


def test_planned_std_and_interval_match_the_realised_noise(
    spark: SparkSession, tmp_path: Path
) -> None:
    rows = [
        {"user": f"u{k}-{u}", "key": f"k{k:03d}", "value": MIDDLE}
        for k in range(KEYS)
        for u in range(UNITS)
    ]
    data = tmp_path / "input"
    data.mkdir()
    schema = pa.schema([("user", pa.string()), ("key", pa.string()), ("value", pa.float64())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), data / "part-0.parquet")
    keys = tmp_path / "keys.csv"
    keys.write_text("key\n" + "".join(f"k{k:03d}\n" for k in range(KEYS)), encoding="utf-8")
    raw = audit_config(
        tmp_path / "releases",
        data,
        contribution_bounds={"max_partitions_per_unit": 1, "max_rows_per_unit_per_partition": 1},
        metrics=[
            {"metric": "count"},
            {"metric": "mean", "column": "value", "lower": 0.0, "upper": 10.0},
        ],
        budget={"epsilon": 0.5, "delta": 0.0},
        partition_selection={"mechanism": "public", "public_keys": {"path": str(keys)}},
        accuracy={"units": [UNITS]},
    )
    config = config_from_mapping(raw)
    planned = expected_accuracy(config)
    count_plan, mean_plan = planned["count"][0], planned["mean_value"][0]
    released = pq.read_table(Path(run_release(spark, config).path) / "data").to_pylist()
    assert len(released) == KEYS
    count_errors = [row["count"] - UNITS for row in released]
    mean_errors = [row["mean_value"] - MIDDLE for row in released]
    assert max(abs(e) for e in mean_errors) < MIDDLE  # no clamping at the bounds
    count_std = statistics.pstdev(count_errors)
    mean_std = statistics.pstdev(mean_errors)
    assert count_std == pytest.approx(count_plan.accuracy.std, rel=0.35)
    assert mean_std == pytest.approx(mean_plan.accuracy.std, rel=0.35)
    # The planned (conservative) interval covers at least its level of the realised means.
    covered = sum(abs(e) <= mean_plan.accuracy.half_width for e in mean_errors) / KEYS
    assert covered >= 0.88


QUANTILE_UNITS = 1000


def test_planned_rank_half_width_of_a_median_holds_on_a_real_release(
    spark: SparkSession, tmp_path: Path
) -> None:
    """300 public keys, each with 1,000 units of one value on an even grid over [0, 100]
    (so the exact rank of any value is known): the released median's rank error
    |share of values <= p50 - 0.5| stays inside the plan's 95% rank half-width for at
    least 88% of the keys (false-failure rate below 1e-6 at a true coverage of 95%, as
    above; simulated coverage of the model is about 98%). Power: half that width holds
    fewer than 88% (about 77% in simulation), so a plan 2x too optimistic is caught.
    """
    grid = [100.0 * (u + 0.5) / QUANTILE_UNITS for u in range(QUANTILE_UNITS)]
    users = [f"u{k}-{u}" for k in range(KEYS) for u in range(QUANTILE_UNITS)]
    table = pa.table(
        {
            "user": users,
            "key": [f"k{k:03d}" for k in range(KEYS) for _ in range(QUANTILE_UNITS)],
            "value": grid * KEYS,
        }
    )
    data = tmp_path / "input"
    data.mkdir()
    pq.write_table(table, data / "part-0.parquet")
    quantiles = {"metric": "quantiles", "column": "value", "lower": 0.0, "upper": 100.0}
    raw = audit_config(
        tmp_path / "releases",
        data,
        contribution_bounds={"max_partitions_per_unit": 1, "max_rows_per_unit_per_partition": 1},
        metrics=[{**quantiles, "ranks": [0.5], "name": "v"}],
        budget={"epsilon": 1.0, "delta": 0.0},
        partition_selection=public_selection(tmp_path, [f"k{k:03d}" for k in range(KEYS)]),
        accuracy={"units": [QUANTILE_UNITS]},
    )
    config = config_from_mapping(raw)
    half_width = expected_accuracy(config)["v"][0].accuracy.half_width
    released = pq.read_table(Path(run_release(spark, config).path) / "data").to_pylist()
    assert len(released) == KEYS
    errors = [abs(sum(g <= row["v_p50"] for g in grid) / QUANTILE_UNITS - 0.5) for row in released]
    print(f"planned rank half-width {half_width:.4f}, max error {max(errors):.4f}")
    assert sum(e <= half_width for e in errors) / KEYS >= 0.88
    assert sum(e <= half_width / 2 for e in errors) / KEYS < 0.88
