"""Key leak: how often the REAL job releases a key that exactly one unit holds.

Design: one run over n unique keys, each held by its own unit (4 rows each), so one
run gives n independent trials of "a 1-unit key is released".

Why the test is a LOWER confidence bound against delta_p. The hazard table asks for
"release rate's upper confidence bound <= delta_p". For the truncated geometric rule the
keep probability of a 1-unit partition is EXACTLY delta_p (pi(1) = delta_p, the rule is
tight), so the true rate sits on the boundary and an upper confidence bound is above
delta_p at every sample size: that test would fail a correct job with probability about
1 - alpha. The meaningful, falsifiable version is the hypothesis test "rate <= delta_p":
a violation is DETECTED when the one-sided lower confidence bound exceeds the manifest's
delta_p (false-failure rate alpha). The test reports the UCB, checks that the observed
rate is consistent with the exact keep probability from the manifest, and checks its own
power: a selection that keeps 1-unit keys 3x too often, and a selection thresholding on
row counts, are both caught at the same n and delta. delta is raised for the test
(delta_p = 2e-3 at n = 10^4; 2e-4 at n = 10^5 in the full tier) so that a 3x violation
is visible: at a production delta of 1e-6 no feasible audit can see a 3x violation.
Threshold mechanisms (Laplace / Gaussian) release a 1-unit key with probability
strictly below delta_p: the test checks their rate against that exact value too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from pipelines.config import config_from_mapping
from pipelines.job import run_release
from pipelines.release import read_manifest
from tests.privacy.auditing import rate_interval
from tests.privacy.broken import ShiftedNoise, TripledKeepNoise, use_variant
from tests.privacy.neighbours import EVENTS
from tests.support import audit_config

# These audits need ceilings above production (see the fixture).
pytestmark = pytest.mark.usefixtures("audit_limits")

ROWS_PER_UNIT = 4
# Family-wise false-failure rate of one key-leak check: alpha/2 for the violation test
# (LCB > delta_p), alpha/2 for the two-sided consistency with the exact keep probability.
ALPHA = 1e-3


def unique_keys(directory: Path, n: int) -> Path:
    """n keys, each held by exactly one unit with ROWS_PER_UNIT rows."""
    users = [f"lonely-{i}" for i in range(n) for _ in range(ROWS_PER_UNIT)]
    keys = [f"key-{i}" for i in range(n) for _ in range(ROWS_PER_UNIT)]
    table = pa.table(
        {"user": users, "key": keys, "value": [1.0] * len(users)},
        schema=EVENTS,
    )
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, directory / "unique.parquet")
    return directory / "unique.parquet"


def release_rate(
    spark: SparkSession,
    directory: Path,
    data: Path,
    n: int,
    delta: float,
    mechanism: str = "truncated_geometric",
    source: Any = None,
    post_aggregation: bool = False,
) -> tuple[int, dict[str, Any]]:
    """(released keys, the manifest's partitions section) of one real run.

    With ``post_aggregation``, the release has a privacy_id_count and the threshold rule
    selects on it (the count's share joins selection's: the rule's epsilon is 0.5 too).
    """
    metrics: list[dict[str, Any]] = [{"metric": "count"}]
    weights = {"selection": 0.5, "count": 0.5}
    if post_aggregation:
        metrics.insert(0, {"metric": "privacy_id_count"})
        weights = {"selection": 0.25, "privacy_id_count": 0.25, "count": 0.5}
    raw = audit_config(
        directory / "releases",
        data,
        metrics=metrics,
        budget={"epsilon": 1.0, "delta": delta, "weights": weights},
        partition_selection={"mechanism": mechanism, "post_aggregation": post_aggregation},
        contracts={"empty_input": "publish"},
        # The released count as drawn: consistent rows may lower it below T afterwards.
        post_processing={"consistent_rows": not post_aggregation},
    )
    raw["release"]["name"] = f"leak_{mechanism}"
    result = run_release(spark, config_from_mapping(raw), source=source)
    table = pq.read_table(Path(result.path) / "data")
    released = set(table.column("key").to_pylist())
    assert released <= {f"key-{i}" for i in range(n)}
    partitions = read_manifest(Path(result.path))["partitions"]
    assert partitions.get("post_aggregation", False) == post_aggregation
    if post_aggregation:  # the released count is the thresholded one: never below T
        assert all(
            v >= partitions["threshold"] for v in table.column("privacy_id_count").to_pylist()
        )
    return len(released), partitions


def assess(k: int, n: int, partitions: dict[str, Any]) -> tuple[bool, str, float]:
    """(violation detected, report, exact keep probability of a 1-unit key)."""
    delta_p = float(partitions["delta_per_partition"])
    exact = float(partitions["keep_probability_by_units"]["1"])
    lcb, ucb = rate_interval(k, n, ALPHA / 2)
    report = (
        f"{partitions['mechanism']}: {k}/{n} 1-unit keys released, rate {k / n:.3g}, "
        f"LCB {lcb:.3g}, UCB {ucb:.3g} (one-sided, alpha {ALPHA / 2:g}), delta_p {delta_p:g}, "
        f"exact keep probability {exact:.3g}"
    )
    print(report)
    return lcb > delta_p, report, exact


def check_correct(k: int, n: int, partitions: dict[str, Any]) -> None:
    violation, report, exact = assess(k, n, partitions)
    assert not violation, report
    low, high = rate_interval(k, n, ALPHA / 4)
    assert low <= exact <= high, f"rate inconsistent with the exact keep probability: {report}"


def check_key_leak(spark: SparkSession, tmp_path: Path, n: int, delta: float) -> None:
    data = unique_keys(tmp_path / "input", n)
    k, partitions = release_rate(spark, tmp_path / "ok", data, n, delta)
    assert float(partitions["keep_probability_by_units"]["1"]) == pytest.approx(
        partitions["delta_per_partition"], rel=1e-6
    )
    check_correct(k, n, partitions)
    # Power: the same n and delta catch a selection that keeps 1-unit keys 3x too often.
    k, partitions = release_rate(spark, tmp_path / "x3", data, n, delta, source=TripledKeepNoise())
    violation, report, _ = assess(k, n, partitions)
    assert violation, f"a 3x key leak went undetected: {report}"


def test_key_leak_release_rate_of_a_unique_key_is_at_most_delta_p(
    spark: SparkSession, tmp_path: Path
) -> None:
    """10,000 unique 1-unit keys in one run; delta_p = 2e-3 (expected ~20 releases).

    False-failure rate: 1e-3 (5e-4 for LCB > delta_p, 5e-4 for the consistency check).
    Smallest violation detected: a release rate of 3x delta_p (power ~0.999 at this n);
    the check is run on that variant (TripledKeepNoise) and must flag it.
    """
    check_key_leak(spark, tmp_path, 10_000, 2e-3)


@pytest.mark.privacy_full
def test_key_leak_release_rate_full(spark: SparkSession, tmp_path: Path) -> None:
    """100,000 unique keys, delta_p = 2e-4; same alpha; flags a 3x rate."""
    check_key_leak(spark, tmp_path, 100_000, 2e-4)


@pytest.mark.privacy_full
def test_key_leak_row_count_threshold_is_caught(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Selection on row counts (each unit has 4 rows, kept by Linf = 4) leaks the key.

    10,000 keys, delta_p = 2e-3: keep probability of a 4-row key ~ 10x delta_p.
    """
    n = 10_000
    data = unique_keys(tmp_path / "input", n)
    use_variant(monkeypatch, "row_count_threshold")
    k, partitions = release_rate(spark, tmp_path / "rows", data, n, 2e-3)
    violation, report, _ = assess(k, n, partitions)
    assert violation, f"row-count thresholding went undetected: {report}"


@pytest.mark.privacy_full
@pytest.mark.parametrize("mechanism", ["laplace_threshold", "gaussian_threshold"])
def test_key_leak_threshold_mechanisms(spark: SparkSession, tmp_path: Path, mechanism: str) -> None:
    """Threshold rules keep a 1-unit key with probability strictly below delta_p.

    100,000 keys, delta = 2e-3; alpha 1e-3 (violation and consistency as above).
    """
    n = 100_000
    data = unique_keys(tmp_path / "input", n)
    k, partitions = release_rate(spark, tmp_path / mechanism, data, n, 2e-3, mechanism)
    assert float(partitions["keep_probability_by_units"]["1"]) < partitions["delta_per_partition"]
    check_correct(k, n, partitions)


@pytest.mark.parametrize("mechanism", ["laplace_threshold", "gaussian_threshold"])
def test_key_leak_post_aggregation_thresholding(
    spark: SparkSession, tmp_path: Path, mechanism: str
) -> None:
    """Post-aggregation thresholding (the default with a privacy_id_count) releases a
    1-unit key with the rule's exact keep probability, below delta_p.

    10,000 keys, delta = 2e-3; alpha 1e-3 (violation and consistency as above). Power:
    the same n catches a threshold set ceil(scale * ln 4) + 1 too low (ShiftedNoise),
    which keeps a 1-unit key more than 4x too often (Laplace: the tail grows by
    e^(shift/scale)).
    """
    n = 10_000
    data = unique_keys(tmp_path / "input", n)
    k, partitions = release_rate(
        spark, tmp_path / mechanism, data, n, 2e-3, mechanism, post_aggregation=True
    )
    assert float(partitions["keep_probability_by_units"]["1"]) < partitions["delta_per_partition"]
    check_correct(k, n, partitions)
    if mechanism == "laplace_threshold":
        shift = math.ceil(partitions["threshold_noise"]["scale"] * math.log(4)) + 1
        source = ShiftedNoise(shift)
        k, partitions = release_rate(
            spark, tmp_path / "low", data, n, 2e-3, mechanism, source, post_aggregation=True
        )
        violation, report, _ = assess(k, n, partitions)
        assert violation, f"a threshold {shift} too low went undetected: {report}"


@pytest.mark.privacy_full
@pytest.mark.parametrize("mechanism", ["laplace_threshold", "gaussian_threshold"])
def test_key_leak_post_aggregation_thresholding_full(
    spark: SparkSession, tmp_path: Path, mechanism: str
) -> None:
    """As above at 100,000 keys, delta = 2e-3."""
    n = 100_000
    data = unique_keys(tmp_path / "input", n)
    k, partitions = release_rate(
        spark, tmp_path / mechanism, data, n, 2e-3, mechanism, post_aggregation=True
    )
    check_correct(k, n, partitions)
