"""The start of every run: the checks made before any private row is read.

Invariants: ``start_run`` needs no Spark and no data (plan, policy tier, ledger, reconciliation, the
release against its ledger, the budget); ``prepare_run`` reads paths and metadata only
(file footers, headers, public keys) and costs no budget: a failure in either leaves no
charge, no staging directory and nothing published (docs/privacy.md §8, §9).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pyspark.sql import DataFrame, SparkSession

from pipelines.config import JobConfig, ReleaseSpec, single_table
from pipelines.contracts import OperatorReport, Verdict, check_input_schema, operator_dir
from pipelines.errors import InputContractError, OutputContractError
from pipelines.integrity import (
    budget_state,
    check_budget_admits,
    check_release_held,
    check_tier_binding,
    open_ledger,
    reconcile_ledger,
)
from pipelines.ledger import BudgetState, LedgerStore, Registration
from pipelines.manifest import table_views
from pipelines.policy import govern
from pipelines.progress import Progress
from pipelines.public_keys import public_key_frame
from pipelines.release import (
    Version,
    discard_staging,
    read_manifest,
    release_dir,
    staging_dir,
    version_for_period,
)
from pipelines.release_plan import ReleasePlans, build_release_plans
from pipelines.source import check_input_files, read_input

log = logging.getLogger("dprelease")


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


def run_status(error: BaseException) -> str:
    """The operator summary's status for a failed run."""
    if isinstance(error, InputContractError):
        return "input_contract_failed"
    if isinstance(error, OutputContractError):
        return "output_contract_failed"
    return "failed"


@dataclass(frozen=True)
class RunStart:
    """What every run settles before Spark: the plans of its tables, the ledger, the
    release directory, the version already published for the data period (None if there
    is none), and the registration (policy tier, registry fields) the charge will record."""

    plans: ReleasePlans
    ledger: LedgerStore
    release: Path
    existing: Version | None
    registration: Registration = field(default_factory=Registration)


def start_run(release: JobConfig | ReleaseSpec, *, supersede: bool = False) -> RunStart:
    """The checks a run makes first: plan, exact arithmetic, the policy tier (before the
    ledger is opened), ledger and its reconciliation, the release against its ledger and,
    unless the period is published and not superseded (a no-op), the tier binding and the
    budget.

    Needs no Spark, so a retried run that has nothing to do fails or returns before a
    session starts.
    """
    spec = release if isinstance(release, ReleaseSpec) else single_table(release)
    config = spec.config  # the release-level sections, equal in every table
    plans = build_release_plans(spec)  # includes each table's exact-arithmetic proof
    registration = govern(config, plans)  # docs/privacy.md §12: refused before the ledger
    ledger = open_ledger(config)
    directory = release_dir(config.release.output_root, config.release.name)
    reconcile_ledger(ledger, directory, config)
    check_release_held(ledger, directory, config)
    existing = version_for_period(directory, config.release.data_period)
    if existing is None or supersede:
        check_tier_binding(ledger, config, registration)
        check_budget_admits(ledger, config, plans.epsilon, plans.delta)
    return RunStart(plans, ledger, directory, existing, registration)


def already_published(
    config: JobConfig, start: RunStart, *, supersede: bool = False
) -> ReleaseResult | None:
    """The run's outcome when its data period is already published; None: the run goes on."""
    if start.existing is None or supersede:
        return None
    log.info(
        "release %s %s already published for this period", config.release.name, start.existing.name
    )
    return release_result(
        "already_published", config, start.existing, budget_state(start.ledger, config)
    )


@dataclass(frozen=True)
class PreparedRun:
    """A run whose every data-free and metadata check passed, not yet charged."""

    start: RunStart
    run_id: str
    staging: Path
    report: OperatorReport
    frame: DataFrame
    public_keys: tuple[DataFrame | None, ...]  # per table, in the plans' order
    progress: Progress = field(default_factory=lambda: Progress(log))  # step lines (§11)


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
    report = OperatorReport(
        operator_dir(start.release, run_id), run_id, config.release.name, config.release.data_period
    )
    try:
        check_input_files(config)
        frame = read_input(spark, config)
        public = []
        for table in start.plans.tables:
            verdict = check_input_schema(frame, table.plan.columns)
            report.record(named_verdict(verdict, table.spec.name))
            keys = table.config.partition_selection.public_keys
            public.append(
                None if keys is None else public_key_frame(spark, keys, frame, table.config)
            )
    except BaseException as error:
        discard_staging(staging)
        report.finish(run_status(error))
        raise
    return PreparedRun(start, run_id, staging, report, frame, tuple(public))


def named_verdict(verdict: Verdict, table: str | None) -> Verdict:
    """A table's contract verdict, its results keyed by the table when there are several."""
    if table is None:
        return verdict
    results = {f"{table}/{name}": result for name, result in verdict.results.items()}
    return Verdict(verdict.contract, results, verdict.error)


def release_result(
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
        row_count=sum(int(v.manifest["data"]["row_count"]) for v in table_views(manifest)),
        epsilon=float(manifest["privacy"]["epsilon"]),
        delta=float(manifest["privacy"]["delta"]),
        budget=budget,
    )
