"""One release, end to end: plan, read, bound, aggregate, select and noise, publish.

Invariants: the plan is fixed before any data is read; noise is drawn once and written
to staging before anything reads it; a failure at any step publishes nothing and leaves
earlier versions untouched; nothing computed from the data without noise is logged or
written outside the operator's staging area.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from pipelines.aggregation import (
    add_public_partitions,
    aggregate_partitions,
    check_exact_arithmetic,
)
from pipelines.bounding import BoundingSalt, bound_contributions, select_encoded
from pipelines.config import JobConfig
from pipelines.contracts import (
    ObservedInput,
    OperatorReport,
    OutputContractError,
    check_input_schema,
    check_output_contract,
    input_summary,
    judge_input,
    observe_input,
    operator_dir,
    rows_meeting_contract,
)
from pipelines.manifest import ReleaseIdentity, build_manifest, render_readme
from pipelines.noising import NoiseSource, SecureNoise, apply_noise, output_type
from pipelines.plan import ReleasePlan, build_plan
from pipelines.release import (
    Version,
    check_data_files,
    describe_schema,
    discard_staging,
    publish,
    read_manifest,
    release_dir,
    staging_dir,
    tidy_data_dir,
    version_for_period,
    write_text_last,
)
from pipelines.source import InputContractError, read_input, read_public_keys

log = logging.getLogger("dprelease")

_ARROW_TYPES: dict[type[T.DataType], pa.DataType] = {
    T.ByteType: pa.int8(),
    T.ShortType: pa.int16(),
    T.IntegerType: pa.int32(),
    T.LongType: pa.int64(),
    T.DoubleType: pa.float64(),
    T.StringType: pa.string(),
    T.BooleanType: pa.bool_(),
    T.DateType: pa.date32(),
    T.TimestampType: pa.timestamp("us", tz="UTC"),
    T.TimestampNTZType: pa.timestamp("us"),
}


@dataclass(frozen=True)
class ReleaseResult:
    """What a run did: published a new version, or found the period already published."""

    status: Literal["published", "already_published"]
    release: str
    version: str
    path: str
    row_count: int
    epsilon: float
    delta: float


def release_schema(plan: ReleasePlan, keys: T.StructType) -> pa.Schema:
    """The explicit Arrow schema of the released Parquet files."""
    fields = [pa.field(f.name, _ARROW_TYPES[type(f.dataType)]) for f in keys.fields]
    for output in plan.outputs:
        value = _ARROW_TYPES[type(output_type(output))]
        fields += [
            pa.field(output.name, value),
            pa.field(f"{output.name}_std", pa.float64()),
            pa.field(f"{output.name}_ci_low", value),
            pa.field(f"{output.name}_ci_high", value),
        ]
    return pa.schema(fields)


def clean_rows(frame: DataFrame, plan: ReleasePlan) -> DataFrame:
    """Rows the release may use: every row that breaks no input-contract rule.

    Rows under a ``fail`` rule are removed as well; ``run_release`` fails on their count
    before any noise is drawn.
    """
    return rows_meeting_contract(frame, plan.config)


def aggregated_frame(
    spark: SparkSession, plan: ReleasePlan, frame: DataFrame, salt: BoundingSalt
) -> tuple[DataFrame, ObservedInput]:
    """The lazy graph from input rows to one exact row per candidate partition (no noise).

    The input contract's figures are observed on the way: the action that computes this
    frame is the pass that counts them.
    """
    config = plan.config
    observed = observe_input(frame, config)
    rows = observed.frame
    public_keys = None
    if config.partition_selection.public_keys is not None:
        public_keys = read_public_keys(spark, config.partition_selection.public_keys, frame, config)
        # Only rows whose key is public (dropped before bounding).
        rows = rows.join(public_keys, on=config.partition_columns, how="left_semi")
    bounded = bound_contributions(select_encoded(clean_rows(rows, plan), plan), plan, salt)
    aggregated = aggregate_partitions(bounded, plan)
    if public_keys is not None:
        aggregated = add_public_partitions(aggregated, public_keys, plan)
    return aggregated, observed


def _status(error: BaseException) -> str:
    """The operator summary's status for a failed run."""
    if isinstance(error, InputContractError):
        return "input_contract_failed"
    if isinstance(error, OutputContractError):
        return "output_contract_failed"
    return "failed"


def run_release(
    spark: SparkSession,
    config: JobConfig,
    *,
    supersede: bool = False,
    source: NoiseSource | None = None,
) -> ReleaseResult:
    """Publish one new version of the release, or report the existing one for its period.

    Both contracts run in every release: the input contract before any noise is drawn,
    the output contract on the staged files before the manifest is written. Their GX
    results and counts go to ``_operator/<run_id>/`` only. ``source`` is a seam for
    tests; production callers leave it None (exact CSPRNG noise).
    """
    plan = build_plan(config)
    check_exact_arithmetic(plan)
    release = release_dir(config.release.output_root, config.release.name)
    existing = version_for_period(release, config.release.data_period)
    if existing is not None and not supersede:
        log.info(
            "release %s %s already published for this period", config.release.name, existing.name
        )
        return _result("already_published", config, existing, plan)
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:12]
    staging: Path | None = None
    try:
        release.mkdir(parents=True, exist_ok=True)
        staging = staging_dir(release, run_id)
        report = OperatorReport(operator_dir(release, run_id), run_id, config)
    except OSError as error:
        if staging is not None:
            discard_staging(staging)
        raise InputContractError(
            f"release.output_root: cannot create {release} ({error.strerror or error})"
        ) from None
    log.info("run %s: operator reports in %s", run_id, report.directory)
    aggregated: DataFrame | None = None
    try:
        frame = read_input(spark, config.input)
        report.record(check_input_schema(frame, config))
        aggregated, observed = aggregated_frame(spark, plan, frame, BoundingSalt.fresh())
        keys = T.StructType([aggregated.schema[n] for n in config.partition_columns])
        # The one pass over the input: it bounds and aggregates (one exact row per candidate
        # partition, kept in Spark storage, never written out) and counts the contract figures.
        aggregated = aggregated.persist(StorageLevel.MEMORY_AND_DISK)
        aggregated.count()
        figures = observed.figures()
        report.summary["input"] = input_summary(figures, config)
        report.record(judge_input(figures, config))
        released = apply_noise(aggregated, plan, source or SecureNoise())
        log.info("run %s: computing and writing the noisy release to staging", run_id)
        # Materialize the noisy table once; everything after reads these files.
        released.write.mode("errorifexists").parquet(str(staging / "data"))
        tidy_data_dir(staging / "data")
        schema = release_schema(plan, keys)
        report.record(check_output_contract(plan, schema, staging / "data"))
        data_files = check_data_files(staging / "data", schema)
        previous = existing.name if existing is not None else None

        def stamp(version: str) -> None:
            identity = ReleaseIdentity.now(
                config.release.name, version, run_id, config.release.data_period, previous
            )
            manifest = build_manifest(plan, identity, describe_schema(schema), data_files)
            write_text_last(staging, manifest, render_readme(manifest))

        version = publish(staging, release, stamp)
    except BaseException as error:
        discard_staging(staging)
        report.finish(_status(error))
        raise
    finally:
        if aggregated is not None:
            aggregated.unpersist()
    report.finish("published", version.name)
    log.info("published %s %s", config.release.name, version.name)
    return _result("published", config, version, plan)


def _result(
    status: Literal["published", "already_published"],
    config: JobConfig,
    version: Version,
    plan: ReleasePlan,
) -> ReleaseResult:
    manifest = read_manifest(version.path)
    return ReleaseResult(
        status=status,
        release=config.release.name,
        version=version.name,
        path=str(version.path),
        row_count=int(manifest["data"]["row_count"]),
        epsilon=float(manifest["privacy"]["epsilon"]),
        delta=float(manifest["privacy"]["delta"]),
    )
