"""The `dprelease` command line: run, plan, show, verify, schema.

Contract for orchestrators: logs go to stderr; `run` prints one JSON summary line on
stdout; the exit code says what happened (see ``ExitCode``). No option reaches a test
hook: noise is always exact CSPRNG noise, and there is no seed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.aggregation import ArithmeticBoundError
from pipelines.config import ConfigError, JobConfig, config_json_schema, load_config
from pipelines.contracts import OutputContractError
from pipelines.ledger import BudgetRefused, SqliteLedger, export_entries
from pipelines.plan import build_plan, describe_plan
from pipelines.release import PublishError, published_versions, read_manifest, verify_release
from pipelines.source import InputContractError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("dprelease")


class ExitCode(IntEnum):
    """Documented, distinct exit codes."""

    OK = 0
    INTERNAL_ERROR = 1
    CONFIG_ERROR = 2
    BUDGET_REFUSED = 3
    INPUT_CONTRACT_FAILED = 4
    ALREADY_PUBLISHED = 5
    VERIFY_FAILED = 6
    OUTPUT_CONTRACT_FAILED = 7


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time of the record."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _: object) -> None:
        pass


def _configure_logging() -> None:
    """Operator logs on stderr: time, level, message (never data values)."""
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dprelease",
        description="Publish differentially private statistics from a private table, on Spark.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a release job and publish a new version")
    run.add_argument("config", help="job config (YAML)")
    run.add_argument(
        "--supersede",
        action="store_true",
        help="publish a new version even if this data period is already published",
    )
    plan = sub.add_parser("plan", help="print the privacy plan of a job; reads no data")
    plan.add_argument("config", help="job config (YAML)")
    show = sub.add_parser("show", help="print a published version (or the latest of a release)")
    show.add_argument("release_dir", help="a version directory, or a release directory")
    verify = sub.add_parser("verify", help="check a published version's files against its manifest")
    verify.add_argument(
        "release_dir", help="a version directory, or a release directory (all versions)"
    )
    sub.add_parser("schema", help="print the JSON Schema of job configs")
    ledger = sub.add_parser("ledger", help="the privacy budget ledger of a job's dataset")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    ledger_show = ledger_sub.add_parser(
        "show", help="print every charged run and the remaining lifetime budget"
    )
    ledger_show.add_argument("config", help="job config (YAML): names the ledger and dataset")
    ledger_export = ledger_sub.add_parser(
        "export", help="print the dataset's ledger entries as JSON lines or CSV"
    )
    ledger_export.add_argument("config", help="job config (YAML): names the ledger and dataset")
    ledger_export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    return parser


def _versions(path: Path) -> list[Path]:
    """A version directory as given, or every published version of a release directory."""
    if (path / "manifest.json").is_file():
        return [path]
    versions = [v.path for v in published_versions(path)]
    if not versions:
        raise ConfigError(f"{path}: no published version here")
    return versions


def run_command(
    config_path: str, supersede: bool = False, spark: SparkSession | None = None
) -> ExitCode:
    """Run one release job and print the JSON summary line; errors propagate.

    With ``spark`` given, the run uses that session and leaves it running; otherwise it
    creates a session and stops it at the end.
    """
    config = load_config(config_path)
    from jobs.session import create_session
    from pipelines.job import already_published, run_release, start_run

    # A retry of a published period needs no Spark session: answer before starting one.
    start = start_run(config)
    result = already_published(config, start, supersede=supersede)
    if result is None:
        session = spark or create_session(f"dprelease:{config.release.name}")
        try:
            result = run_release(session, config, supersede=supersede, start=start)
        finally:
            if spark is None:
                session.stop()
    summary = {
        "status": result.status,
        "release": result.release,
        "version": result.version,
        "path": result.path,
        "rows": result.row_count,
        "epsilon": result.epsilon,
        "delta": result.delta,
        "dataset": result.budget.dataset,
        "spent_epsilon": result.budget.spent_epsilon,
        "spent_delta": result.budget.spent_delta,
        "remaining_epsilon": result.budget.remaining_epsilon,
        "remaining_delta": result.budget.remaining_delta,
    }
    print(json.dumps(summary), flush=True)
    return ExitCode.OK if result.status == "published" else ExitCode.ALREADY_PUBLISHED


def _command_plan(args: argparse.Namespace) -> ExitCode:
    plan = build_plan(load_config(args.config))
    print(json.dumps(describe_plan(plan), indent=2))
    return ExitCode.OK


def _command_show(args: argparse.Namespace) -> ExitCode:
    version = _versions(Path(args.release_dir))[-1]
    print((version / "README.md").read_text(encoding="utf-8"))
    manifest = read_manifest(version)
    print(json.dumps({"version": manifest["release"]["version"], "path": str(version)}))
    return ExitCode.OK


def _command_verify(args: argparse.Namespace) -> ExitCode:
    failed = False
    for version in _versions(Path(args.release_dir)):
        problems = verify_release(version)
        for problem in problems:
            print(f"{version.name}: {problem}", file=sys.stderr)
        print(json.dumps({"version": str(version), "ok": not problems}))
        failed = failed or bool(problems)
    return ExitCode.VERIFY_FAILED if failed else ExitCode.OK


def _command_schema(_: argparse.Namespace) -> ExitCode:
    print(json.dumps(config_json_schema(), indent=2))
    return ExitCode.OK


def _open_ledger(config_path: str) -> tuple[SqliteLedger, JobConfig]:
    config = load_config(config_path)
    if not config.ledger_path.is_file():
        raise ConfigError(f"ledger.path: no ledger at {config.ledger_path} (no run charged yet)")
    from pipelines.job import open_ledger

    return open_ledger(config), config


def _command_ledger(args: argparse.Namespace) -> ExitCode:
    ledger, config = _open_ledger(args.config)
    entries = ledger.entries(config.ledger.dataset)
    if args.ledger_command == "export":
        sys.stdout.write(export_entries(entries, args.format))
        return ExitCode.OK
    print(f"ledger {ledger.path}, dataset {config.ledger.dataset!r}")
    header = ("created_at", "run_id", "release", "data_period", "epsilon", "delta", "status")
    rows = [header] + [
        (
            e.created_at,
            e.run_id,
            e.release,
            e.data_period,
            f"{e.epsilon:.6g}",
            f"{e.delta:.3g}",
            e.status + (f" {e.version}" if e.version else ""),
        )
        for e in entries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    units = sorted({e.privacy_unit for e in entries} | {config.privacy_unit.column})
    for unit in units:
        state = ledger.state(
            config.ledger.dataset,
            unit,
            config.ledger.lifetime_budget.epsilon,
            config.ledger.lifetime_budget.delta,
        )
        print(json.dumps(state.to_dict()))
    return ExitCode.OK


COMMANDS = {
    "ledger": _command_ledger,
    "plan": _command_plan,
    "show": _command_show,
    "verify": _command_verify,
    "schema": _command_schema,
}


def exit_code_for(error: Exception) -> ExitCode:
    """The documented exit code for an error a command raised."""
    if isinstance(error, ConfigError | ArithmeticBoundError):
        return ExitCode.CONFIG_ERROR
    if isinstance(error, BudgetRefused):
        return ExitCode.BUDGET_REFUSED
    if isinstance(error, InputContractError):
        return ExitCode.INPUT_CONTRACT_FAILED
    if isinstance(error, OutputContractError):
        return ExitCode.OUTPUT_CONTRACT_FAILED
    return ExitCode.INTERNAL_ERROR


def _log_failure(error: Exception) -> None:
    """One operator log line per failure: the message of errors we raise, else the type only."""
    if isinstance(error, ConfigError | ArithmeticBoundError | InputContractError):
        log.error("%s", error)
    elif isinstance(error, BudgetRefused):
        log.error("%s; nothing was read, charged or published", error)
    elif isinstance(error, OutputContractError):
        log.error("output contract failed, nothing was published: %s", error)
    elif isinstance(error, PublishError):
        log.error("publishing failed, nothing was published: %s", error)
    else:
        # Last resort: the type only, never a message that could carry data.
        log.error("internal error (%s); nothing was published", type(error).__name__)
        log.debug("internal error detail", exc_info=True)


def main(argv: Sequence[str] | None = None, *, spark: SparkSession | None = None) -> int:
    """Entry point of the `dprelease` console script and the spark-submit main.

    ``spark`` (keyword only, never a CLI option) lets an embedding process run jobs in its
    own session, which `run` then leaves running.
    """
    args = _parser().parse_args(argv)
    _configure_logging()
    try:
        if args.command == "run":
            return int(run_command(args.config, args.supersede, spark))
        return int(COMMANDS[args.command](args))
    except Exception as error:  # every error becomes a documented exit code
        code = exit_code_for(error)
        _log_failure(error)
        return int(code)


if __name__ == "__main__":
    sys.exit(main())
