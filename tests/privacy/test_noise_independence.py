"""Bad RNG: noise independent across partitions and Spark tasks; no generator in a closure.

Two checks. (1) The real job with production noise over many public partitions, every one
empty, so that each released value IS its noise draw: no two partitions share a noise
vector, and per metric the number of colliding pairs is what independent draws give
(scale 4e6 grid units: expected 0.3 colliding pairs among 3,000 partitions, the test allows
5, P(false failure) < 1e-6 per metric); the broken variant that pickles one seeded
generator into the UDF closure makes every task replay the same sequence and is caught.
(2) What the noise UDF pickles is inspected:
no numpy Generator / RandomState / bit generator, no ``random.Random``, no OsRandomBits.
"""

from __future__ import annotations

import io
import pickle
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pyspark import cloudpickle
from pyspark.sql import SparkSession
from pyspark.sql import types as T
from pyspark.sql.pandas.functions import pandas_udf

import pipelines.noising
from pipelines.config import config_from_mapping
from pipelines.job import run_release
from pipelines.noising import SecureNoise, apply_noise, noise_step
from pipelines.plan import build_plan
from tests.doubles import ZeroNoise
from tests.privacy.broken import CapturedGeneratorNoise
from tests.privacy.neighbours import EVENTS
from tests.support import audit_config, write_rows

KEYS = 3000
MAX_COLLISIONS = 5


@pytest.fixture
def many_tasks(spark: SparkSession) -> Iterator[None]:
    """Keep Spark from coalescing the small aggregated table into a single task."""
    name = "spark.sql.adaptive.coalescePartitions.enabled"
    before = spark.conf.get(name)
    spark.conf.set(name, "false")
    yield
    spark.conf.set(name, before or "true")


def empty_public_partitions(directory: Path) -> dict[str, Any]:
    """KEYS public keys, none present in the data: each released value is pure noise."""
    keys = directory / "keys.csv"
    directory.mkdir(parents=True, exist_ok=True)
    keys.write_text("key\n" + "\n".join(f"k{i}" for i in range(KEYS)) + "\n")
    data = write_rows(
        directory / "rows.parquet", [{"user": "u", "key": "elsewhere", "value": 1.0}], EVENTS
    )
    raw = audit_config(
        directory / "releases",
        data,
        budget={"epsilon": 3e-6, "delta": 0.0},
        partition_selection={"mechanism": "public", "public_keys": {"path": str(keys)}},
        post_processing={"clamp_negative_counts": False, "consistent_rows": False},
        contracts={"empty_input": "publish"},
    )
    return raw


def noise_vectors(spark: SparkSession, directory: Path, source: Any) -> list[tuple[float, ...]]:
    raw = empty_public_partitions(directory)
    result = run_release(spark, config_from_mapping(raw), source=source)
    rows = pq.read_table(Path(result.path) / "data").to_pylist()
    assert len(rows) == KEYS
    return [(r["count"], r["sum_value"], r["mean_value"]) for r in rows]


def test_bad_rng_no_repeated_noise_vectors_across_partitions_and_tasks(
    spark: SparkSession, tmp_path: Path, many_tasks: None
) -> None:
    """3,000 partitions, production noise (source=None): all noise vectors distinct.

    Three coordinates per partition (COUNT, SUM, MEAN), discrete Laplace of scale 4e6 grid
    units each: P(some vector repeats) < 1e-13 and the expected number of colliding pairs
    per coordinate is 0.3 for independent draws; the test allows 5 (false-failure rate
    < 1e-6). Power: a source holding one seeded Generator replays its sequence in every
    task (>100 colliding pairs). That it is caught also proves the UDF ran in several tasks.
    """
    vectors = noise_vectors(spark, tmp_path / "secure", None)
    assert [v for v, c in Counter(vectors).items() if c > 1] == []
    assert colliding_pairs(vectors) <= [MAX_COLLISIONS] * 3
    broken = noise_vectors(spark, tmp_path / "captured", CapturedGeneratorNoise())
    assert max(colliding_pairs(broken)) > 100, "captured generator went unnoticed"


def colliding_pairs(vectors: list[tuple[float, ...]]) -> list[int]:
    """Per coordinate: the number of pairs of partitions with the same noise value."""
    counts = [Counter(v[i] for v in vectors) for i in range(len(vectors[0]))]
    return [sum(c * (c - 1) // 2 for c in column.values()) for column in counts]


# --------------------------------------------------------- what the UDF pickles

FORBIDDEN_MODULES = ("numpy.random", "random", "_random", "dp_ops.entropy")


class _ClassRecorder(pickle.Unpickler):
    """Loads a pickle and records every class or function it refers to by name."""

    def __init__(self, payload: bytes) -> None:
        super().__init__(io.BytesIO(payload))
        self.seen: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.seen.add(f"{module}.{name}")
        return super().find_class(module, name)


def generator_classes(payload: bytes) -> set[str]:
    """Names of random-generator classes (with state) inside a cloudpickle payload."""
    recorder = _ClassRecorder(payload)
    recorder.load()
    return {
        name
        for name in recorder.seen
        if any(name == m or name.startswith(m + ".") for m in FORBIDDEN_MODULES)
    }


def captured_udf(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: Any
) -> Callable[..., Any]:
    """The Python function apply_noise hands to pandas_udf (its closure included)."""
    captured: list[Callable[..., Any]] = []
    real = pandas_udf  # the function pipelines.noising imported

    def recording_pandas_udf(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        captured.append(function)
        return real(function, *args, **kwargs)

    monkeypatch.setattr(pipelines.noising, "pandas_udf", recording_pandas_udf)
    raw = audit_config(tmp_path, tmp_path / "unused.parquet")
    plan = build_plan(config_from_mapping(raw))
    exact = T.DecimalType(38, 0)
    schema = T.StructType(
        [T.StructField("key", T.StringType())]
        + [T.StructField(c, T.LongType()) for c in ("units", "rows")]
        + [T.StructField(c, exact) for c in noise_step(plan).inputs[2:]]
    )
    apply_noise(spark.createDataFrame([], schema), plan, source)
    assert len(captured) == 1
    return captured[0]


def test_bad_rng_no_generator_is_captured_in_the_noise_udf_closure(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    function = captured_udf(spark, tmp_path, monkeypatch, SecureNoise())
    payload = cloudpickle.dumps(function)  # type: ignore[no-untyped-call]
    assert generator_classes(payload) == set()
    # The closure holds the step, the input names and the stateless source, nothing else.
    cells = [c.cell_contents for c in function.__closure__ or ()]
    assert {type(c).__name__ for c in cells} <= {"NoiseStep", "list", "SecureNoise"}
    assert vars(cells[[type(c).__name__ for c in cells].index("SecureNoise")]) == {}
    assert (
        generator_classes(
            cloudpickle.dumps(  # type: ignore[no-untyped-call]
                noise_step(
                    build_plan(
                        config_from_mapping(audit_config(tmp_path, tmp_path / "unused.parquet"))
                    )
                )
            )
        )
        == set()
    )


def test_bad_rng_closure_check_flags_a_captured_generator(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Power: the same inspection flags a source that holds a numpy Generator."""
    function = captured_udf(spark, tmp_path, monkeypatch, CapturedGeneratorNoise())
    flagged = generator_classes(cloudpickle.dumps(function))  # type: ignore[no-untyped-call]
    assert any(name.startswith("numpy.random") for name in flagged), flagged
    assert generator_classes(cloudpickle.dumps(ZeroNoise())) == set()  # type: ignore[no-untyped-call]
    import random

    assert generator_classes(cloudpickle.dumps({"rng": random.Random(1)})) != set()  # type: ignore[no-untyped-call]
