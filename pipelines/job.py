"""One release, end to end, in named steps: start, prepare, reserve, stage, check, publish.

Invariants: the plan is fixed before any data is read (``start_run``); the run is charged
before any private row is read (``reserve``); noise is drawn once and written to staging
before anything reads it (``stage``); both contracts pass before a manifest exists
(``check``); publishing is one atomic rename (``publish_version``). A failure at any step
publishes nothing and leaves earlier versions untouched; nothing computed from the data
without noise is logged or written outside the operator's staging area (docs/privacy.md
§8, §9).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.aggregation import add_public_partitions, aggregate_partitions
from pipelines.bounding import BoundingSalt, bound_contributions, select_encoded
from pipelines.card import CARD, spend_history, write_card
from pipelines.config import JobConfig, ReleaseSpec
from pipelines.contracts import (
    ObservedInput,
    check_output_contract,
    input_summary,
    judge_input,
    observe_input,
    rows_meeting_contract,
)
from pipelines.errors import AlreadyPublished
from pipelines.integrity import cumulative_spend
from pipelines.ledger import BudgetState, LedgerEntry, LedgerStore
from pipelines.manifest import (
    ReleaseIdentity,
    StagedTable,
    build_manifest,
    build_release_manifest,
)
from pipelines.noising import NoiseSource, SecureNoise, apply_noise, release_schema
from pipelines.plan import UNITS, ReleasePlan
from pipelines.policy import governance_statement
from pipelines.progress import Progress
from pipelines.quantiles import leaf_counts, stage_trees, tree_cells
from pipelines.readme import render_readme
from pipelines.release import (
    MANIFEST,
    README,
    Version,
    check_data_files,
    describe_schema,
    discard_staging,
    layout_release,
    publish,
    version_for_period,
    write_text_last,
)
from pipelines.release_plan import TablePlan
from pipelines.run_start import (
    PreparedRun,
    ReleaseResult,
    RunStart,
    already_published,
    named_verdict,
    prepare_run,
    release_result,
    run_status,
    start_run,
)

__all__ = ["ReleaseResult", "RunStart", "already_published", "run_release", "start_run"]

log = logging.getLogger("dprelease")

# The staging sub-directory of Spark's write of the noisy table (never published).
NOISY_DIR = "noisy"
# The staging sub-directory of Spark's write of the quantile trees (never published).
TREES_DIR = "trees"
# Appended to the message of every failure after the charge (the CLI prints notes).
CHARGE_KEPT = "this run's charge stays in the ledger"


def clean_rows(frame: DataFrame, plan: ReleasePlan) -> DataFrame:
    """Rows the release may use: every row that breaks no input-contract rule.

    Rows under a ``fail`` rule are removed as well; the run fails on their count before
    any noise is drawn.
    """
    return rows_meeting_contract(frame, plan.contract)


def aggregated_frame(
    plan: ReleasePlan, frame: DataFrame, public_keys: DataFrame | None, salt: BoundingSalt
) -> tuple[DataFrame, ObservedInput, DataFrame | None]:
    """The lazy graph from input rows to one exact row per candidate partition (no noise),
    and, with quantile trees, the kept cells it is aggregated from, which the trees' exact
    leaf counts also read (``tree_cells``; the caller keeps them for the pass).

    The input contract's figures are observed on the way: the action that computes this
    frame is the pass that counts them. With public keys, non-public rows are dropped
    before bounding and every public key gets a row.
    """
    observed = observe_input(frame, plan.contract)
    rows = observed.frame
    if public_keys is not None:
        # Only rows whose key is public (dropped before bounding).
        rows = rows.join(public_keys, on=list(plan.columns.partition_columns), how="left_semi")
    bounded = bound_contributions(select_encoded(clean_rows(rows, plan), plan), plan, salt)
    cells = tree_cells(bounded, plan) if plan.trees else None
    aggregated = aggregate_partitions(bounded if cells is None else cells, plan)
    if public_keys is not None:
        aggregated = add_public_partitions(aggregated, public_keys, plan)
    return aggregated, observed, cells


def public_key_matches(aggregated: DataFrame, listed: int) -> dict[str, object]:
    """Operator-only figures (no noise): how many public keys have rows in the data.

    ``none_matched`` flags a keys file that matches nothing (a case or whitespace
    difference, a wrong file): such a release is pure noise. Never logged or published.
    """
    # One row per public key; UNITS is its distinct-unit count before noise.
    matched = aggregated.filter(F.col(UNITS) > 0).count()
    return {"listed": listed, "matched": matched, "none_matched": matched == 0}


@dataclass(frozen=True)
class Reservation:
    """A charged run: the budget after its charge, and the dataset's charges up to it.

    The charges are read before the reservation and end with the run's own entry, so
    the card's spend history needs no ledger call after the charge (a server outage
    between reserve and publish must not stop a published version).
    """

    budget: BudgetState
    charges: tuple[LedgerEntry, ...]


def reserve(config: JobConfig, run: PreparedRun) -> Reservation:
    """Reserve the run's full spend in the ledger, before any private row is read.

    A refusal removes the run's staging and operator directories: it leaves no trace.
    """
    plans, ledger = run.start.plans, run.start.ledger
    entry = LedgerEntry.reservation(
        run_id=run.run_id,
        dataset=config.ledger.dataset,
        privacy_unit=config.privacy_unit.column,
        release=config.release.name,
        data_period=config.release.data_period,
        epsilon=plans.epsilon,
        delta=plans.delta,
    )
    try:
        earlier = ledger.entries(config.ledger.dataset)
        lifetime = config.ledger.lifetime_budget
        budget = ledger.reserve(entry, lifetime.epsilon, lifetime.delta, run.start.registration)
    except BaseException:
        discard_staging(run.staging)
        discard_staging(run.report.directory)
        raise
    log.info(
        "run %s: charged epsilon=%.6g delta=%.3g to dataset %s; spent %.6g of %.6g",
        run.run_id,
        plans.epsilon,
        plans.delta,
        config.ledger.dataset,
        budget.spent_epsilon,
        budget.lifetime_epsilon,
    )
    charges = (*[e for e in earlier if e.run_id != entry.run_id], entry)
    return Reservation(budget, charges)


def _table_summary(run: PreparedRun, table: TablePlan) -> dict[str, object]:
    """The operator summary's record of one table (the summary itself for one table)."""
    if table.spec.name is None:
        return run.report.summary
    tables = run.report.summary.setdefault("tables", {})
    record: dict[str, object] = tables.setdefault(table.spec.name, {})
    return record


def _draw_noise(
    run: PreparedRun,
    index: int,
    aggregated: DataFrame,
    observed: ObservedInput,
    source: NoiseSource,
) -> Path:
    """Table ``index``'s pass over private rows: count the contract figures, judge them,
    then draw the noise once and write the noisy table to staging; its directory (the
    quantile trees: ``_draw_trees``)."""
    table, spark = run.start.plans.tables[index], aggregated.sparkSession
    plan = table.plan
    with run.progress.data_pass(spark):
        candidates = aggregated.count()
    run.progress.step("read and bound", table.spec.name or "")
    figures = observed.figures()
    summary = _table_summary(run, table)
    summary["input"] = input_summary(figures, plan.contract)
    if run.public_keys[index] is not None:
        summary["public_keys"] = public_key_matches(aggregated, candidates)
        # The same line whatever matched: the figures are operator-only.
        log.info("public keys: how many matched the data is in the operator report")
    run.report.record(named_verdict(judge_input(figures, plan.contract), table.spec.name))
    released = apply_noise(aggregated, plan, source)
    log.info("run %s: computing and writing the noisy release to staging", run.run_id)
    noisy = run.staging / NOISY_DIR / str(index)
    # Materialize the noisy table once; everything after reads these files.
    with run.progress.data_pass(spark):
        released.write.mode("errorifexists").parquet(str(noisy))
    run.progress.step("noise", table.spec.name or "")
    return noisy


def _draw_trees(
    run: PreparedRun, index: int, cells: DataFrame, noisy: Path, source: NoiseSource
) -> list[Path]:
    """Table ``index``'s quantile trees for the partitions staged in ``noisy``, from the
    leaf counts of the kept ``cells`` (``tree_cells``), written once to staging; their
    directory."""
    table = run.start.plans.tables[index]
    trees = run.staging / TREES_DIR / str(index)
    with run.progress.data_pass(cells.sparkSession):
        stage_trees(leaf_counts(cells, table.plan), noisy, table.plan, source, trees)
    run.progress.step("noise", f"quantile trees {table.spec.name or ''}")
    return [trees]


def _stage_table(run: PreparedRun, index: int, frame: DataFrame, source: NoiseSource) -> pa.Schema:
    """Table ``index`` staged in its canonical layout under ``staging/<its directory>``."""
    table = run.start.plans.tables[index]
    plan = table.plan
    aggregated, observed, cells = aggregated_frame(
        plan, frame, run.public_keys[index], BoundingSalt.fresh()
    )
    keys = T.StructType([aggregated.schema[n] for n in plan.columns.partition_columns])
    # One exact row per candidate partition, and with trees one per kept cell, kept for
    # the pass: the trees read their leaf counts from the cells, not the rows again.
    kept = [f.persist(StorageLevel.MEMORY_AND_DISK) for f in (cells, aggregated) if f is not None]
    try:
        noisy = _draw_noise(run, index, aggregated, observed, source)
        trees = [] if cells is None else _draw_trees(run, index, cells, noisy, source)
    finally:
        for f in kept:
            f.unpersist()
    schema = release_schema(plan, keys)
    # One row per released partition, rewritten in the canonical layout (key order,
    # file count from the released row count): the layout reveals nothing else.
    partition_columns = list(plan.columns.partition_columns)
    layout_release(noisy, run.staging / table.spec.data_dir, schema, partition_columns, trees)
    for directory in (noisy, *trees):
        discard_staging(directory)
    return schema


def _shared_rows(run: PreparedRun) -> DataFrame:
    """The input rows every table reads: the columns some table uses, kept in Spark
    storage when there are several tables, so the input is read once."""
    tables = run.start.plans.tables
    if len(tables) == 1:
        return run.frame
    used: list[str] = []
    for table in tables:
        columns = table.plan.columns
        for name in (columns.privacy_unit, *columns.partition_columns, *columns.measured_columns):
            if name not in used:
                used.append(name)
    # One row per input row, only the used columns, read once for all tables.
    return run.frame.select(*used).persist(StorageLevel.MEMORY_AND_DISK)


def stage(run: PreparedRun, source: NoiseSource) -> list[pa.Schema]:
    """Every table staged in its canonical layout (``staging/data``, or
    ``staging/tables/<name>`` for several tables); their schemas, in table order.

    The aggregates (and, for several tables, the used input columns) are kept in Spark
    storage for the pass, never written out.
    """
    frame = _shared_rows(run)
    try:
        tables = range(len(run.start.plans.tables))
        schemas = [_stage_table(run, index, frame, source) for index in tables]
    finally:
        if frame is not run.frame:
            frame.unpersist()
    discard_staging(run.staging / NOISY_DIR)
    discard_staging(run.staging / TREES_DIR)
    run.progress.step("write", "canonical layout in staging")
    return schemas


def check(spark: SparkSession, run: PreparedRun, schemas: list[pa.Schema]) -> list[StagedTable]:
    """The output contract on every table's staged files, then their digests."""
    staged = []
    for table, schema in zip(run.start.plans.tables, schemas, strict=True):
        directory = table.spec.data_dir
        verdict = check_output_contract(table.plan, schema, run.staging / directory)
        run.report.record(named_verdict(verdict, table.spec.name))
        files = check_data_files(run.staging / directory, schema, directory)
        staged.append(StagedTable(table.spec.label, directory, describe_schema(schema), files))
    run.progress.step("contracts")
    return staged


@dataclass(frozen=True)
class _Staged:
    """A staged, checked release waiting for its version label."""

    config: JobConfig
    run: PreparedRun
    reservation: Reservation
    tables: list[StagedTable]

    @property
    def previous(self) -> str | None:
        """The version this run supersedes (None: a new data period)."""
        existing = self.run.start.existing
        return existing.name if existing is not None else None


def _stamp(staged: _Staged, digests: dict[str, str], version: str) -> None:
    """Write the card, manifest and README of ``version`` into staging (manifest last)."""
    config, run = staged.config, staged.run
    identity = ReleaseIdentity.now(
        config.release.name, version, run.run_id, config.release.data_period, staged.previous
    )
    spend = cumulative_spend(staged.reservation.budget, run.start.ledger.identity)
    plans, governance = run.start.plans, governance_statement(run.start.registration)
    if plans.spec.multi:
        manifest = build_release_manifest(
            plans, identity, staged.tables, spend, governance=governance
        )
    else:
        only = staged.tables[0]
        manifest = build_manifest(
            plans.tables[0].plan,
            identity,
            only.schema,
            only.data_files,
            spend,
            governance=governance,
        )
    # The card, from the manifest, the staged data and the ledger's charges (§9).
    charges = list(staged.reservation.charges)
    history = spend_history(charges, run.run_id, config.privacy_unit.column, version)
    write_card(run.staging, manifest, history)
    digests.update(write_text_last(run.staging, manifest, render_readme(manifest)))


def _still_current(staged: _Staged) -> None:
    """Refuse to publish if another run published this period since this run started."""
    config = staged.config
    newest = version_for_period(staged.run.start.release, config.release.data_period)
    if (newest and newest.name) != staged.previous:
        raise AlreadyPublished(
            f"release {config.release.name}: another run published data period "
            f"{config.release.data_period!r} as {newest and newest.name} while this "
            "run ran; nothing was published"
        )


def publish_version(staged: _Staged) -> tuple[Version, dict[str, str]]:
    """Publish the staged release atomically as the next version; it and its digests."""
    digests: dict[str, str] = {}
    stamp = partial(_stamp, staged, digests)
    version = publish(
        staged.run.staging, staged.run.start.release, stamp, partial(_still_current, staged)
    )
    return version, digests


def run_release(
    spark: SparkSession,
    release: JobConfig | ReleaseSpec,
    *,
    supersede: bool = False,
    source: NoiseSource | None = None,
    start: RunStart | None = None,
) -> ReleaseResult:
    """Publish one new version of the release, or report the existing one for its period.

    Order: data-free checks (``start_run``), metadata checks (``prepare_run``), the
    ledger charge (``reserve``), the one pass over private rows (``stage``), the output
    contract (``check``), then ``publish_version``. Contract results go to
    ``_operator/<run_id>/`` only. ``source`` is a seam for tests; production callers
    leave it None (exact CSPRNG noise). ``start`` is the caller's ``start_run(config)``
    if it already made it (the CLI does, before Spark).
    """
    progress = Progress(log)
    config = release.config if isinstance(release, ReleaseSpec) else release
    start = start or start_run(release, supersede=supersede)
    found = already_published(config, start, supersede=supersede)
    if found is not None:
        return found
    progress.step("plan", f"epsilon={start.plans.epsilon:.6g}, inputs checked")
    run = replace(prepare_run(spark, config, start), progress=progress)
    reservation = reserve(config, run)
    progress.step("charge")
    log.info("run %s: operator reports in %s", run.run_id, run.report.directory)
    try:
        schemas = stage(run, source or SecureNoise())
        staged = _Staged(config, run, reservation, check(spark, run, schemas))
        version, digests = publish_version(staged)
    except BaseException as error:
        discard_staging(run.staging)
        _mark(start.ledger, run.run_id, "failed")
        run.report.finish(run_status(error))
        error.add_note(CHARGE_KEPT)
        raise
    _mark(start.ledger, run.run_id, "published", version.name, digests)
    run.report.finish("published", version.name)
    progress.step("publish", version.name)
    log.info("published %s %s; card: %s", config.release.name, version.name, version.path / CARD)
    return release_result("published", config, version, reservation.budget)


def _mark(
    ledger: LedgerStore,
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
