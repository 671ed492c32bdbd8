"""The remaining hazard rows of the DP reference: each with a test named after it.

* unbounded contribution, wrong unit: noiseless mode, remove one heavy unit, <= L0
  partitions change, each by <= its bound (power: the L0-ignored variant and bounding by
  the wrong unit are caught);
* float sums: the release is bit-identical under input layouts and shuffle partitioning,
  and equals exact Fraction sums (power: a double-sum aggregation is caught);
* wrong noise: chi-square of the released noise against the exact pmf, and rejection of
  the pmf at 0.7x and 1.3x the scale (power);
* partial release: a failure or a kill at every stage leaves no version without a complete
  manifest, and the ledger charges every attempt;
* timing: documented as out of scope.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from scipy.stats import chi2

import pipelines.job
from dp_ops.noise import DiscreteGaussian, DiscreteLaplace, NoiseDistribution
from pipelines.aggregation import aggregate_partitions
from pipelines.bounding import UNIT, BoundingSalt, bound_contributions, encode_value
from pipelines.cell_rules import EXACT, encoded_column
from pipelines.config import config_from_mapping
from pipelines.job import run_release
from pipelines.ledger import SqliteLedger
from pipelines.plan import ReleasePlan
from pipelines.release import MANIFEST, VERSION_PATTERN, published_versions, read_manifest
from pipelines.verification import verify_release
from tests.doubles import ZeroNoise
from tests.privacy.broken import use_variant
from tests.privacy.neighbours import EVENTS
from tests.support import audit_config, write_rows

# These audits need ceilings above production (see the fixture).
pytestmark = pytest.mark.usefixtures("audit_limits")

REPO = Path(__file__).resolve().parents[2]
Rows = list[dict[str, Any]]


def released(spark: SparkSession, raw: dict[str, Any], source: Any = None) -> dict[str, Any]:
    result = run_release(spark, config_from_mapping(raw), source=source)
    return {r["key"]: r for r in pq.read_table(Path(result.path) / "data").to_pylist()}


# ------------------------------------------------------------ unbounded contribution

L0, LINF, UPPER = 2, 3, 10.0


def heavy_neighbours(directory: Path) -> tuple[Path, Path]:
    """D: 8 keys with 3 light units each (within bounds) + one heavy unit with 10 rows of
    value 50 (clamped to 10) in every key; D' = D without the heavy unit."""
    light = [
        {"user": f"u{k}-{j}", "key": f"k{k}", "value": 1.0 + j} for k in range(8) for j in range(3)
    ]
    heavy = [{"user": "heavy", "key": f"k{k}", "value": 50.0} for k in range(8) for _ in range(10)]
    d = write_rows(directory / "d.parquet", light + heavy, EVENTS)
    d_prime = write_rows(directory / "d_prime.parquet", light, EVENTS)
    return d, d_prime


def bounded_change(on_d: dict[str, Any], on_d_prime: dict[str, Any]) -> tuple[int, bool]:
    """(partitions that differ, every difference within its per-partition bound)."""
    changed, within = 0, True
    for key in on_d.keys() | on_d_prime.keys():
        a, b = on_d.get(key), on_d_prime.get(key)
        assert a is not None and b is not None  # ZeroNoise keeps every partition
        deltas = {m: abs(a[m] - b[m]) for m in ("count", "privacy_id_count", "sum_value")}
        if any(deltas.values()):
            changed += 1
        within &= deltas["count"] <= LINF and deltas["privacy_id_count"] <= 1
        within &= deltas["sum_value"] <= LINF * UPPER
    return changed, within


def test_unbounded_contribution_noiseless_neighbour_changes_at_most_l0_partitions(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, d_prime = heavy_neighbours(tmp_path / "input")

    def config(name: str, data: Path) -> dict[str, Any]:
        raw = audit_config(
            tmp_path / "releases",
            data,
            contribution_bounds={
                "max_partitions_per_unit": L0,
                "max_rows_per_unit_per_partition": LINF,
            },
            metrics=[
                {"metric": "count"},
                {"metric": "privacy_id_count"},
                {"metric": "sum", "column": "value", "lower": 0.0, "upper": UPPER},
            ],
        )
        raw["release"]["name"] = name
        return raw

    on_d_prime = released(spark, config("d_prime", d_prime), ZeroNoise())
    on_d = released(spark, config("d", d), ZeroNoise())
    changed, within = bounded_change(on_d, on_d_prime)
    assert changed == L0 and within
    # Power: with L0 ignored the heavy unit changes all 8 partitions (D' has no unit
    # beyond the bounds, so its release is the same under both pipelines).
    with monkeypatch.context() as patch:
        use_variant(patch, "l0_ignored")
        broken = released(spark, config("l0_ignored", d), ZeroNoise())
    changed, within = bounded_change(broken, on_d_prime)
    assert changed == 8 and within
    # Power: bounding by the wrong unit (each row its own unit) lets all 10 rows through.
    with monkeypatch.context() as patch:
        use_variant(patch, "wrong_unit")
        broken = released(spark, config("wrong_unit", d), ZeroNoise())
    changed, within = bounded_change(broken, on_d_prime)
    assert changed == 8 and not within


# ------------------------------------------------------------------------ float sums


def float_sum_rows(n: int = 5_000) -> Rows:
    """n units, one row each in key A, with awkward values (full 53-bit mantissas)."""
    rng = np.random.default_rng(11)  # test data, not noise
    values = rng.random(n)
    values[:5] = [0.1, 0.2, 0.3, 1e-12, 1.0 - 2**-53]
    return [{"user": f"u{i}", "key": "A", "value": float(v)} for i, v in enumerate(values)]


def write_layout(directory: Path, rows: Rows, files: int, seed: int) -> Path:
    """The same rows as ``files`` Parquet files, in a shuffled order."""
    order = np.random.default_rng(seed).permutation(len(rows))
    directory.mkdir(parents=True)
    for part, chunk in enumerate(np.array_split(order, files)):
        table = pa.Table.from_pylist([rows[i] for i in chunk], schema=EVENTS)
        pq.write_table(table, directory / f"part-{part:03d}.parquet")
    return directory


RAW = "__raw_value"


def select_encoded_with_raw_values(rows: DataFrame, plan: ReleasePlan) -> DataFrame:
    """Broken (with the aggregation below): carries each row's clamped double along."""
    encoding = plan.encodings["sum_value"]
    value = F.col(encoding.column).cast(T.DoubleType())
    return rows.select(
        F.col(plan.columns.privacy_unit).alias(UNIT),
        *[F.col(name) for name in plan.columns.partition_columns],
        *[encode_value(e.column, e).alias(encoded_column(n)) for n, e in plan.encodings.items()],
        F.least(F.greatest(value, F.lit(encoding.lower)), F.lit(encoding.upper)).alias(RAW),
    )


REAL_BOUND_CONTRIBUTIONS = bound_contributions


def bound_contributions_keeping_raw(
    encoded: DataFrame, plan: ReleasePlan, salt: BoundingSalt
) -> DataFrame:
    """Broken (with the aggregation below): each kept cell also carries a double sum."""
    cells = REAL_BOUND_CONTRIBUTIONS(encoded.drop(RAW), plan, salt)
    raw = encoded.groupBy(UNIT, "key").agg(F.sum(RAW).alias(RAW))
    return cells.join(raw, on=[UNIT, "key"])


def aggregate_partitions_in_double(bounded: DataFrame, plan: ReleasePlan) -> DataFrame:
    """Broken: SUM taken as a Spark double sum of the raw values, then put on the grid."""
    exact = aggregate_partitions(bounded.drop(RAW), plan)
    g = plan.encodings["sum_value"].grid.step
    doubles = bounded.groupBy("key").agg(F.sum(RAW).alias("__double_sum"))
    column = F.bround(F.col("__double_sum") / F.lit(g), 0).cast(EXACT).alias("sum__sum_value")
    joined = exact.join(doubles, on="key")
    return joined.select(*[column if c == "sum__sum_value" else F.col(c) for c in exact.columns])


LAYOUTS = [(1, "1"), (16, "4"), (7, "13")]


def layouts_release(
    spark: SparkSession, tmp_path: Path, rows: Rows, label: str, layouts: int = 3
) -> tuple[list[float], float]:
    """sum_value released (noiseless) from 3 layouts x shuffle partitions; and the grid."""
    sums: list[float] = []
    grid = 0.0
    shuffle = "spark.sql.shuffle.partitions"
    before = spark.conf.get(shuffle)
    try:
        for i, (files, partitions) in enumerate(LAYOUTS[:layouts]):
            spark.conf.set(shuffle, partitions)
            data = write_layout(tmp_path / label / f"layout{i}", rows, files, seed=i)
            raw = audit_config(
                tmp_path / label / "releases",
                data,
                metrics=[{"metric": "sum", "column": "value", "lower": 0.0, "upper": 1.0}],
                budget={"epsilon": 1.5e6, "delta": 0.0},  # about the finest grid allowed
                partition_selection={
                    "mechanism": "public",
                    "public_keys": {"path": str(keys_csv(tmp_path, ["A"]))},
                },
            )
            raw["release"]["name"] = f"layout{i}"
            result = run_release(spark, config_from_mapping(raw), source=ZeroNoise())
            table = pq.read_table(Path(result.path) / "data")
            sums.append(table.column("sum_value")[0].as_py())
            grid = float(read_manifest(Path(result.path))["mechanisms"][0]["grid"])
    finally:
        spark.conf.set(shuffle, before or "4")
    return sums, grid


def keys_csv(directory: Path, keys: list[str]) -> Path:
    path = directory / "keys.csv"
    path.write_text("key\n" + "\n".join(keys) + "\n")
    return path


@pytest.mark.parametrize(
    "layouts", [2, pytest.param(3, marks=pytest.mark.privacy_full)], ids=["fast", "full"]
)
def test_float_sums_release_is_bit_identical_under_repartitioning_and_exact(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layouts: int
) -> None:
    """5,000 values summed on a 2^-29 grid: 1, 16 or 7 input files, shuffle partitions
    1, 4 or 13 (fast tier: the first two), shuffled row order: the released SUM is
    bit-identical and equals the exact Fraction sum of the gridded values. Power: a Spark
    double sum of the clamped values, put on the grid afterwards, is caught."""
    rows = float_sum_rows()
    sums, grid = layouts_release(spark, tmp_path, rows, "exact", layouts)
    assert grid <= 2.0**-29
    exact = sum(
        (Fraction(round(Fraction(r["value"]) / Fraction(grid))) * Fraction(grid) for r in rows),
        Fraction(0),
    )
    assert [Fraction(s) for s in sums] == [exact] * layouts
    monkeypatch.setattr(pipelines.job, "select_encoded", select_encoded_with_raw_values)
    monkeypatch.setattr(pipelines.job, "bound_contributions", bound_contributions_keeping_raw)
    monkeypatch.setattr(pipelines.job, "aggregate_partitions", aggregate_partitions_in_double)
    broken, _ = layouts_release(spark, tmp_path, rows, "double", layouts)
    assert len(set(broken)) > 1 or Fraction(broken[0]) != exact, broken


# ---------------------------------------------------------------------- wrong noise


def noise_samples(
    spark: SparkSession, directory: Path, n: int, noise: str
) -> tuple[npt.NDArray[np.int64], NoiseDistribution]:
    """n released COUNT noise draws (n empty public partitions) and their distribution."""
    keys = keys_csv(directory, [f"k{i}" for i in range(n)])
    data = write_rows(directory / "rows.parquet", [{"user": "u", "key": "x", "value": 1.0}], EVENTS)
    raw = audit_config(
        directory / "releases",
        data,
        metrics=[{"metric": "count"}],
        noise=noise,
        budget={"epsilon": 1.0, "delta": 1e-6 if noise == "gaussian" else 0.0},
        partition_selection={"mechanism": "public", "public_keys": {"path": str(keys)}},
        post_processing={"clamp_negative_counts": False},
        contracts={"empty_input": "publish"},
    )
    result = run_release(spark, config_from_mapping(raw))
    values = np.array(pq.read_table(Path(result.path) / "data").column("count").to_pylist())
    spec = read_manifest(Path(result.path))["mechanisms"][0]["noise"]
    distribution: NoiseDistribution
    if noise == "laplace":
        distribution = DiscreteLaplace(Fraction(spec["scale_exact"]))
    else:
        distribution = DiscreteGaussian(Fraction(spec["sigma_squared_exact"]))
    assert len(values) == n
    return values.astype(np.int64), distribution


def chi_square_p(samples: npt.NDArray[np.int64], pmf: Callable[[Any], Any]) -> float:
    """Chi-square goodness of fit: bins k with expected count >= 5, plus the two tails."""
    n = len(samples)
    ks = np.arange(-10_000, 10_001)
    p = pmf(ks)
    inside = ks[p * n >= 5]
    low, high = int(inside.min()), int(inside.max())
    expected = [n * float(p[ks < low].sum())]
    observed = [int((samples < low).sum())]
    for k in range(low, high + 1):
        expected.append(n * float(p[ks == k][0]))
        observed.append(int((samples == k).sum()))
    expected.append(n * float(p[ks > high].sum()))
    observed.append(int((samples > high).sum()))
    e, o = np.array(expected), np.array(observed)
    keep = e > 0
    statistic = float((((o - e) ** 2) / np.where(keep, e, 1.0))[keep].sum())
    return float(chi2.sf(statistic, keep.sum() - 1))


def scaled(distribution: NoiseDistribution, factor: Fraction) -> NoiseDistribution:
    if isinstance(distribution, DiscreteLaplace):
        return DiscreteLaplace(distribution.scale * factor)
    return DiscreteGaussian(distribution.sigma_squared * factor * factor)


def check_noise(spark: SparkSession, directory: Path, n: int, noise: str) -> None:
    samples, distribution = noise_samples(spark, directory, n, noise)
    p = chi_square_p(samples, distribution.pmf)
    print(f"{noise}: n={n}, chi-square p={p:.3g}")
    assert p > 1e-3
    for factor in (Fraction(7, 10), Fraction(13, 10)):
        wrong = chi_square_p(samples, scaled(distribution, factor).pmf)
        assert wrong < 1e-6, f"{noise}: the pmf at {factor}x the scale was not rejected"


def test_wrong_noise_released_noise_fits_the_exact_pmf(spark: SparkSession, tmp_path: Path) -> None:
    """20,000 released COUNT noise draws (discrete Laplace, scale 3) through the real job.

    False-failure rate 1e-3 (chi-square p < 1e-3 fails). Power: the same sample rejects the
    pmf at 0.7x and 1.3x the scale (p < 1e-6).
    """
    check_noise(spark, tmp_path, 20_000, "laplace")


@pytest.mark.privacy_full
@pytest.mark.parametrize("noise", ["laplace", "gaussian"])
def test_wrong_noise_released_noise_fits_the_exact_pmf_full(
    spark: SparkSession, tmp_path: Path, noise: str
) -> None:
    """100,000 draws per noise kind; same alpha and power checks."""
    check_noise(spark, tmp_path, 100_000, noise)


# ------------------------------------------------------------------- partial release


class Killed(BaseException):
    """The driver dies here (not an Exception: no handler of the job catches it by type)."""


class ExplodingNoise(ZeroNoise):
    def integer_noise(self, distribution: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
        raise RuntimeError("injected failure in the noise task")


def _fail(*_: Any, **__: Any) -> Any:
    raise Killed("injected")


def _readme_only(staging: Path, manifest: dict[str, Any], readme: str) -> None:
    (staging / "README.md").write_text(readme, encoding="utf-8")
    raise Killed("injected between README and manifest")


STAGES: dict[str, Callable[[pytest.MonkeyPatch], Any]] = {
    "read_input": lambda m: m.setattr(pipelines.job, "read_input", _fail),
    "aggregated_frame": lambda m: m.setattr(pipelines.job, "aggregated_frame", _fail),
    "noise_task": lambda m: ExplodingNoise(),
    "after_write": lambda m: m.setattr(pipelines.job, "layout_release", _fail),
    "output_contract": lambda m: m.setattr(pipelines.job, "check_output_contract", _fail),
    "data_files": lambda m: m.setattr(pipelines.job, "check_data_files", _fail),
    "manifest_build": lambda m: m.setattr(pipelines.job, "build_manifest", _fail),
    "manifest_write": lambda m: m.setattr(pipelines.job, "write_text_last", _readme_only),
    "rename": lambda m: m.setattr(pipelines.job, "publish", _fail),
}
FAST_STAGES = ("noise_task", "manifest_write", "rename")


def check_partial_release(
    spark: SparkSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stages: tuple[str, ...],
    kill: bool,
) -> None:
    rows = [{"user": f"u{i}", "key": "AB"[i % 2], "value": float(i % 10)} for i in range(60)]
    raw = audit_config(tmp_path / "releases", write_rows(tmp_path / "rows.parquet", rows, EVENTS))
    config = config_from_mapping(raw)
    first = Path(run_release(spark, config).path)
    release = first.parent
    before = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    for stage in stages:
        with monkeypatch.context() as patch:
            if kill:  # a dead driver cleans nothing up and records nothing
                patch.setattr(pipelines.job, "discard_staging", lambda path: None)
                patch.setattr(pipelines.job, "_mark", lambda *a, **k: None)
            source = STAGES[stage](patch)
            with pytest.raises((Killed, Exception)):
                run_release(spark, config, supersede=True, source=source)
        versions = [p for p in release.iterdir() if VERSION_PATTERN.match(p.name)]
        assert versions == [first], stage
        assert all((v / MANIFEST).is_file() for v in versions), stage
        assert [v.name for v in published_versions(release)] == ["v0001"], stage
    assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == before
    assert verify_release(first) == []
    if not kill:
        assert not list((release / "_staging").iterdir())
    entries = SqliteLedger(config.ledger_path).entries()
    assert [e.status for e in entries if e.version == "v0001"] == ["published"]
    failed = [e for e in entries if e.version is None]
    # Every attempt is charged (the reservation precedes reading the data).
    assert len(failed) == len(stages)
    assert {e.status for e in failed} == ({"reserved"} if kill else {"failed"})
    assert all(e.epsilon > 0 for e in failed)


def test_partial_release_no_version_without_manifest_and_every_attempt_charged(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver dies (no cleanup, no ledger update) in the noise task, between README
    and manifest, and just before the rename. The full tier covers every stage, both as
    a death and as an exception the job handles."""
    check_partial_release(spark, tmp_path, monkeypatch, FAST_STAGES, kill=True)


@pytest.mark.privacy_full
@pytest.mark.parametrize("kill", [False, True], ids=["exception", "kill"])
def test_partial_release_at_every_stage(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kill: bool
) -> None:
    check_partial_release(spark, tmp_path, monkeypatch, tuple(STAGES), kill)


def test_partial_release_killed_after_publication_stays_charged_and_is_reconciled(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between the atomic rename and the ledger update: the version is complete,
    its charge stays (reserved), and the next run relabels it published."""
    rows = [{"user": f"u{i}", "key": "A", "value": 1.0} for i in range(40)]
    raw = audit_config(tmp_path / "releases", write_rows(tmp_path / "rows.parquet", rows, EVENTS))
    config = config_from_mapping(raw)
    with monkeypatch.context() as patch:
        patch.setattr(pipelines.job, "_mark", _fail)
        with pytest.raises(Killed):
            run_release(spark, config)
    version = tmp_path / "releases" / "audit" / "v0001"
    assert (version / MANIFEST).is_file() and verify_release(version) == []
    ledger = SqliteLedger(config.ledger_path)
    assert [e.status for e in ledger.entries()] == ["reserved"]
    assert run_release(spark, config).status == "already_published"
    assert [(e.status, e.version) for e in ledger.entries()] == [("published", "v0001")]


# --------------------------------------------------------------------------- timing


def test_timing_is_documented_out_of_scope() -> None:
    """Batch jobs: sampler run time grows with the noise size; the README says so."""
    text = (REPO / "README.md").read_text(encoding="utf-8").lower()
    privacy = text[text.index("## privacy model") :]
    assert "timing" in privacy and "out of scope" in privacy
    assert math.isfinite(1.0)
