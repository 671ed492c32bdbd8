"""One release, end to end: plan, read, bound, aggregate, select and noise, publish.

Invariants: the plan is fixed before any data is read; noise is drawn once and written
to staging before anything reads it; a failure at any step publishes nothing and leaves
earlier versions untouched; nothing computed from the data without noise is logged or
written outside the operator's staging area.
"""

from __future__ import annotations

import logging
import sqlite3
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
from pipelines.config import ConfigError, JobConfig
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
from pipelines.ledger import BudgetState, LedgerEntry, SqliteLedger
from pipelines.manifest import ReleaseIdentity, build_manifest, render_readme
from pipelines.noising import NoiseSource, SecureNoise, apply_noise, output_type
from pipelines.plan import ReleasePlan, build_plan
from pipelines.release import (
    Version,
    check_data_files,
    describe_schema,
    discard_staging,
    publish,
    published_versions,
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
    budget: BudgetState


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


@dataclass(frozen=True)
class RunStart:
    """What every run settles before Spark: the plan, the ledger, the release directory, and
    the version already published for the data period (None if there is none)."""

    plan: ReleasePlan
    ledger: SqliteLedger
    release: Path
    existing: Version | None


def start_run(config: JobConfig) -> RunStart:
    """The checks a run makes first: plan, exact arithmetic, ledger and its reconciliation.

    Needs no Spark, so a retried run that has nothing to do fails or returns before a
    session starts.
    """
    plan = build_plan(config)
    check_exact_arithmetic(plan)
    ledger = open_ledger(config)
    release = release_dir(config.release.output_root, config.release.name)
    reconcile_ledger(ledger, release, config)
    existing = version_for_period(release, config.release.data_period)
    return RunStart(plan, ledger, release, existing)


def already_published(
    config: JobConfig, start: RunStart, *, supersede: bool = False
) -> ReleaseResult | None:
    """The run's outcome when its data period is already published; None: the run goes on."""
    if start.existing is None or supersede:
        return None
    log.info(
        "release %s %s already published for this period", config.release.name, start.existing.name
    )
    return _result("already_published", config, start.existing, budget_state(start.ledger, config))


def run_release(
    spark: SparkSession,
    config: JobConfig,
    *,
    supersede: bool = False,
    source: NoiseSource | None = None,
    start: RunStart | None = None,
) -> ReleaseResult:
    """Publish one new version of the release, or report the existing one for its period.

    Both contracts run in every release: the input contract before any noise is drawn,
    the output contract on the staged files before the manifest is written. Their GX
    results and counts go to ``_operator/<run_id>/`` only. ``source`` is a seam for
    tests; production callers leave it None (exact CSPRNG noise). ``start`` is the
    caller's ``start_run(config)`` if it already made it (the CLI does, before Spark).
    """
    start = start or start_run(config)
    found = already_published(config, start, supersede=supersede)
    if found is not None:
        return found
    plan, ledger, release, existing = start.plan, start.ledger, start.release, start.existing
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:12]
    # The full spend is charged before any data is read; BudgetRefused leaves no trace.
    budget = ledger.reserve(
        LedgerEntry.reservation(
            run_id=run_id,
            dataset=config.ledger.dataset,
            privacy_unit=config.privacy_unit.column,
            release=config.release.name,
            data_period=config.release.data_period,
            epsilon=plan.composition.epsilon,
            delta=plan.composition.delta,
        ),
        config.ledger.lifetime_budget.epsilon,
        config.ledger.lifetime_budget.delta,
    )
    log.info(
        "run %s: charged epsilon=%.6g delta=%.3g to dataset %s; spent %.6g of %.6g",
        run_id,
        plan.composition.epsilon,
        plan.composition.delta,
        config.ledger.dataset,
        budget.spent_epsilon,
        budget.lifetime_epsilon,
    )
    staging: Path | None = None
    try:
        release.mkdir(parents=True, exist_ok=True)
        staging = staging_dir(release, run_id)
        report = OperatorReport(operator_dir(release, run_id), run_id, config)
    except OSError as error:
        if staging is not None:
            discard_staging(staging)
        _mark(ledger, run_id, "failed")
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
        report.record(check_output_contract(spark, plan, schema, staging / "data"))
        data_files = check_data_files(staging / "data", schema)
        previous = existing.name if existing is not None else None

        def stamp(version: str) -> None:
            identity = ReleaseIdentity.now(
                config.release.name, version, run_id, config.release.data_period, previous
            )
            manifest = build_manifest(
                plan, identity, describe_schema(schema), data_files, cumulative_spend(budget)
            )
            write_text_last(staging, manifest, render_readme(manifest))

        version = publish(staging, release, stamp)
    except BaseException as error:
        discard_staging(staging)
        _mark(ledger, run_id, "failed")
        report.finish(_status(error))
        raise
    finally:
        if aggregated is not None:
            aggregated.unpersist()
    _mark(ledger, run_id, "published", version.name)
    report.finish("published", version.name)
    log.info("published %s %s", config.release.name, version.name)
    return _result("published", config, version, budget)


def open_ledger(config: JobConfig) -> SqliteLedger:
    """The job's ledger (created on first use); an unusable path is a config error."""
    try:
        return SqliteLedger(config.ledger_path)
    except (OSError, sqlite3.Error) as error:
        where = (
            "ledger.path"
            if config.ledger.path
            else "ledger.path (default: under release.output_root)"
        )
        detail = f"{type(error).__name__}: {error}"
        raise ConfigError(
            f"{where}: cannot open the ledger {config.ledger_path} ({detail})"
        ) from None


def budget_state(ledger: SqliteLedger, config: JobConfig) -> BudgetState:
    """The lifetime budget of the job's dataset and privacy unit, as charged so far."""
    return ledger.state(
        config.ledger.dataset,
        config.privacy_unit.column,
        config.ledger.lifetime_budget.epsilon,
        config.ledger.lifetime_budget.delta,
    )


def cumulative_spend(budget: BudgetState) -> dict[str, object]:
    """The manifest's cumulative statement: every charge to the dataset up to this run's."""
    return {
        "dataset": budget.dataset,
        "privacy_unit": budget.privacy_unit,
        "epsilon": budget.spent_epsilon,
        "delta": budget.spent_delta,
        "lifetime_epsilon": budget.lifetime_epsilon,
        "lifetime_delta": budget.lifetime_delta,
        "charges": budget.charges,
        "statement": (
            f"sequential (basic) composition over the {budget.charges} charged run(s) of "
            f"dataset {budget.dataset!r} per {budget.privacy_unit!r}, this one included "
            "(published, superseded, failed and retried runs all count)"
        ),
    }


def reconcile_ledger(ledger: SqliteLedger, release: Path, config: JobConfig) -> None:
    """Mark as published the reserved runs of this release whose version is visible.

    A driver killed between publication and its ledger update leaves its entry
    ``reserved``: still charged (so the budget stays safe), only mislabelled. Runs with
    no visible version stay ``reserved``: they are running, or died, and stay charged.
    """
    reserved = {
        e.run_id
        for e in ledger.entries(config.ledger.dataset)
        if e.status == "reserved" and e.release == config.release.name
    }
    if not reserved:
        return
    for version in published_versions(release):
        run_id = read_manifest(version.path)["release"]["run_id"]
        if run_id in reserved:
            ledger.mark(run_id, "published", version.name)
            log.info("ledger: run %s recorded as published %s", run_id, version.name)


def _mark(
    ledger: SqliteLedger,
    run_id: str,
    status: Literal["published", "failed"],
    version: str | None = None,
) -> None:
    """Record how a charged run ended; a ledger error here must not hide the run's outcome.

    If the update fails the entry stays ``reserved``, which is still charged, and
    ``reconcile_ledger`` relabels it once its version is visible.
    """
    try:
        ledger.mark(run_id, status, version)
    except Exception as error:
        log.error("ledger: could not mark run %s %s (%s)", run_id, status, type(error).__name__)


def _result(
    status: Literal["published", "already_published"],
    config: JobConfig,
    version: Version,
    budget: BudgetState,
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
        budget=budget,
    )
