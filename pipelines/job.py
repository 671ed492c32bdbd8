"""One release, end to end: plan, read, bound, aggregate, select and noise, publish.

Invariants: the plan is fixed before any data is read; noise is drawn once and written
to staging before anything reads it; a failure at any step publishes nothing and leaves
earlier versions untouched; nothing computed from the data without noise is logged or
written outside the operator's staging area.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.aggregation import (
    add_public_partitions,
    aggregate_partitions,
)
from pipelines.bounding import BoundingSalt, bound_contributions, select_encoded
from pipelines.card import CARD, spend_history, write_card
from pipelines.config import JobConfig
from pipelines.contracts import (
    ObservedInput,
    OperatorReport,
    check_input_schema,
    check_output_contract,
    input_summary,
    judge_input,
    observe_input,
    operator_dir,
    rows_meeting_contract,
)
from pipelines.errors import AlreadyPublished, InputContractError, OutputContractError
from pipelines.integrity import (
    budget_state,
    check_budget_admits,
    check_release_held,
    cumulative_spend,
    open_ledger,
    reconcile_ledger,
)
from pipelines.ledger import BudgetState, LedgerEntry, SqliteLedger
from pipelines.manifest import ReleaseIdentity, build_manifest, render_readme
from pipelines.noising import NoiseSource, SecureNoise, apply_noise, release_schema
from pipelines.plan import UNITS, ReleasePlan, build_plan
from pipelines.progress import Progress
from pipelines.release import (
    MANIFEST,
    README,
    Version,
    check_data_files,
    describe_schema,
    discard_staging,
    layout_release,
    publish,
    read_manifest,
    release_dir,
    staging_dir,
    version_for_period,
    write_text_last,
)
from pipelines.source import (
    check_input_files,
    read_input,
    read_public_keys,
)

log = logging.getLogger("dprelease")

# The staging sub-directory of Spark's write of the noisy table (never published).
NOISY_DIR = "noisy"


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


def clean_rows(frame: DataFrame, plan: ReleasePlan) -> DataFrame:
    """Rows the release may use: every row that breaks no input-contract rule.

    Rows under a ``fail`` rule are removed as well; ``run_release`` fails on their count
    before any noise is drawn.
    """
    return rows_meeting_contract(frame, plan.config)


def aggregated_frame(
    plan: ReleasePlan, frame: DataFrame, public_keys: DataFrame | None, salt: BoundingSalt
) -> tuple[DataFrame, ObservedInput]:
    """The lazy graph from input rows to one exact row per candidate partition (no noise).

    The input contract's figures are observed on the way: the action that computes this
    frame is the pass that counts them. With public keys, non-public rows are dropped
    before bounding and every public key gets a row.
    """
    config = plan.config
    observed = observe_input(frame, config)
    rows = observed.frame
    if public_keys is not None:
        # Only rows whose key is public (dropped before bounding).
        rows = rows.join(public_keys, on=config.partition_columns, how="left_semi")
    bounded = bound_contributions(select_encoded(clean_rows(rows, plan), plan), plan, salt)
    aggregated = aggregate_partitions(bounded, plan)
    if public_keys is not None:
        aggregated = add_public_partitions(aggregated, public_keys, plan)
    return aggregated, observed


def public_key_matches(aggregated: DataFrame, listed: int) -> dict[str, object]:
    """Operator-only figures (no noise): how many public keys have rows in the data.

    ``none_matched`` flags a keys file that matches nothing (a case or whitespace
    difference, a wrong file): such a release is pure noise. Never logged or published.
    """
    # One row per public key; UNITS is its distinct-unit count before noise.
    matched = aggregated.filter(F.col(UNITS) > 0).count()
    return {"listed": listed, "matched": matched, "none_matched": matched == 0}


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


def start_run(config: JobConfig, *, supersede: bool = False) -> RunStart:
    """The checks a run makes first: plan, exact arithmetic, ledger and its reconciliation,
    the release against its ledger and, unless the period is published and not
    superseded (a no-op), the budget.

    Needs no Spark, so a retried run that has nothing to do fails or returns before a
    session starts.
    """
    plan = build_plan(config)  # includes the exact-arithmetic proof
    ledger = open_ledger(config)
    release = release_dir(config.release.output_root, config.release.name)
    reconcile_ledger(ledger, release, config)
    check_release_held(ledger, release, config)
    existing = version_for_period(release, config.release.data_period)
    if existing is None or supersede:
        check_budget_admits(ledger, config, plan.composition.epsilon, plan.composition.delta)
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


@dataclass(frozen=True)
class PreparedRun:
    """A run whose every data-free and metadata check passed, not yet charged."""

    start: RunStart
    run_id: str
    staging: Path
    report: OperatorReport
    frame: DataFrame
    public_keys: DataFrame | None
    progress: Progress = field(default_factory=lambda: Progress(log))


def prepare_run(spark: SparkSession, config: JobConfig, start: RunStart) -> PreparedRun:
    """Everything a run checks from paths and metadata alone, before it is charged.

    The output root and staging must be writable; the input must exist and be readable in
    its format with the configured columns and types (file footers and headers only);
    the public keys must be readable and cast. A failure here costs no budget, and
    leaves no staging directory.
    """
    # Random only: a start time in the id, next to the manifest's created_at, would
    # publish the run's duration, which grows with the private input (docs/privacy.md §9).
    run_id = uuid.uuid4().hex
    try:
        start.release.mkdir(parents=True, exist_ok=True)
        staging = staging_dir(start.release, run_id)
    except OSError as error:
        raise InputContractError(
            f"release.output_root: cannot create {start.release} ({error.strerror or error})"
        ) from None
    report = OperatorReport(operator_dir(start.release, run_id), run_id, config)
    try:
        check_input_files(config)
        frame = read_input(spark, config)
        report.record(check_input_schema(frame, config))
        keys = config.partition_selection.public_keys
        public = None if keys is None else read_public_keys(spark, keys, frame, config)
    except BaseException as error:
        discard_staging(staging)
        report.finish(_status(error))
        raise
    return PreparedRun(start, run_id, staging, report, frame, public)


def charge(config: JobConfig, run: PreparedRun) -> BudgetState:
    """Reserve the run's full spend in the ledger, before any private row is read.

    A refusal removes the run's staging and operator directories: it leaves no trace.
    """
    plan, ledger = run.start.plan, run.start.ledger
    entry = LedgerEntry.reservation(
        run_id=run.run_id,
        dataset=config.ledger.dataset,
        privacy_unit=config.privacy_unit.column,
        release=config.release.name,
        data_period=config.release.data_period,
        epsilon=plan.composition.epsilon,
        delta=plan.composition.delta,
    )
    try:
        lifetime = config.ledger.lifetime_budget
        budget = ledger.reserve(entry, lifetime.epsilon, lifetime.delta)
    except BaseException:
        discard_staging(run.staging)
        discard_staging(run.report.directory)
        raise
    log.info(
        "run %s: charged epsilon=%.6g delta=%.3g to dataset %s; spent %.6g of %.6g",
        run.run_id,
        plan.composition.epsilon,
        plan.composition.delta,
        config.ledger.dataset,
        budget.spent_epsilon,
        budget.lifetime_epsilon,
    )
    return budget


def run_release(
    spark: SparkSession,
    config: JobConfig,
    *,
    supersede: bool = False,
    source: NoiseSource | None = None,
    start: RunStart | None = None,
) -> ReleaseResult:
    """Publish one new version of the release, or report the existing one for its period.

    Order: data-free checks (``start_run``), metadata checks (``prepare_run``), the
    ledger charge, then the one pass over private rows. Both contracts run in every
    release: the input contract before any noise is drawn, the output contract on the
    staged files before the manifest is written; their results go to
    ``_operator/<run_id>/`` only. ``source`` is a seam for tests; production callers
    leave it None (exact CSPRNG noise). ``start`` is the caller's ``start_run(config)``
    if it already made it (the CLI does, before Spark).
    """
    progress = Progress(log)
    start = start or start_run(config, supersede=supersede)
    found = already_published(config, start, supersede=supersede)
    if found is not None:
        return found
    progress.step("plan", f"epsilon={start.plan.composition.epsilon:.6g}, inputs checked")
    run = replace(prepare_run(spark, config, start), progress=progress)
    budget = charge(config, run)
    progress.step("charge")
    log.info("run %s: operator reports in %s", run.run_id, run.report.directory)
    try:
        version, digests = _produce(spark, config, run, budget, source or SecureNoise())
    except BaseException as error:
        discard_staging(run.staging)
        _mark(start.ledger, run.run_id, "failed")
        run.report.finish(_status(error))
        error.add_note(CHARGE_KEPT)
        raise
    _mark(start.ledger, run.run_id, "published", version.name, digests)
    run.report.finish("published", version.name)
    progress.step("publish", version.name)
    log.info("published %s %s; card: %s", config.release.name, version.name, version.path / CARD)
    return _result("published", config, version, budget)


# Appended to the message of every failure after the charge (the CLI prints notes).
CHARGE_KEPT = "this run's charge stays in the ledger"


def _noisy_release(
    spark: SparkSession, config: JobConfig, run: PreparedRun, source: NoiseSource
) -> pa.Schema:
    """The one pass over private rows, up to the staged release in its canonical layout.

    Returns the released Arrow schema; the staged files are under ``staging/data``.
    """
    plan, staging = run.start.plan, run.staging
    aggregated, observed = aggregated_frame(plan, run.frame, run.public_keys, BoundingSalt.fresh())
    keys = T.StructType([aggregated.schema[n] for n in config.partition_columns])
    # The one pass over the input: it bounds and aggregates (one exact row per candidate
    # partition, kept in Spark storage, never written out) and counts the contract figures.
    aggregated = aggregated.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with run.progress.data_pass(spark):
            candidates = aggregated.count()
        run.progress.step("read and bound")
        figures = observed.figures()
        run.report.summary["input"] = input_summary(figures, config)
        if run.public_keys is not None:
            run.report.summary["public_keys"] = public_key_matches(aggregated, candidates)
            # The same line whatever matched: the figures are operator-only.
            log.info("public keys: how many matched the data is in the operator report")
        run.report.record(judge_input(figures, config))
        released = apply_noise(aggregated, plan, source)
        log.info("run %s: computing and writing the noisy release to staging", run.run_id)
        # Materialize the noisy table once; everything after reads these files.
        with run.progress.data_pass(spark):
            released.write.mode("errorifexists").parquet(str(staging / NOISY_DIR))
        run.progress.step("noise")
    finally:
        aggregated.unpersist()
    schema = release_schema(plan, keys)
    # One row per released partition, rewritten in the canonical layout (key order,
    # file count from the released row count): the layout reveals nothing else.
    layout_release(staging / NOISY_DIR, staging / "data", schema, config.partition_columns)
    discard_staging(staging / NOISY_DIR)
    run.progress.step("write", "canonical layout in staging")
    run.report.record(check_output_contract(spark, plan, schema, staging / "data"))
    run.progress.step("contracts")
    return schema


def _produce(
    spark: SparkSession,
    config: JobConfig,
    run: PreparedRun,
    budget: BudgetState,
    source: NoiseSource,
) -> tuple[Version, dict[str, str]]:
    """Stage the noisy release, then publish it atomically; the version and its digests."""
    schema = _noisy_release(spark, config, run, source)
    data_files = check_data_files(run.staging / "data", schema)
    existing, ledger = run.start.existing, run.start.ledger
    previous = existing.name if existing is not None else None
    digests: dict[str, str] = {}

    def stamp(version: str) -> None:
        identity = ReleaseIdentity.now(
            config.release.name, version, run.run_id, config.release.data_period, previous
        )
        spend = cumulative_spend(budget, ledger.identity)
        manifest = build_manifest(
            run.start.plan, identity, describe_schema(schema), data_files, spend
        )
        # The card, from the manifest, the staged data and the ledger's charges (§9).
        charges = ledger.entries(config.ledger.dataset)
        unit = config.privacy_unit.column
        write_card(run.staging, manifest, spend_history(charges, run.run_id, unit, version))
        digests.update(write_text_last(run.staging, manifest, render_readme(manifest)))

    def still_current() -> None:
        # Another run may have published this period since this run started.
        newest = version_for_period(run.start.release, config.release.data_period)
        if (newest and newest.name) != previous:
            raise AlreadyPublished(
                f"release {config.release.name}: another run published data period "
                f"{config.release.data_period!r} as {newest and newest.name} while this "
                "run ran; nothing was published"
            )

    return publish(run.staging, run.start.release, stamp, still_current), digests


def _mark(
    ledger: SqliteLedger,
    run_id: str,
    status: Literal["published", "failed"],
    version: str | None = None,
    digests: dict[str, str] | None = None,
) -> None:
    """Record how a charged run ended; a ledger error here must not hide the run's outcome.

    If the update fails the entry stays ``reserved``, which is still charged, and
    ``reconcile_ledger`` relabels it once its version is visible.
    """
    try:
        if status == "published":
            assert digests is not None
            ledger.mark(
                run_id,
                status,
                version,
                manifest_sha256=digests[MANIFEST],
                readme_sha256=digests[README],
            )
        else:
            ledger.mark(run_id, status)
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
