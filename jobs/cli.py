"""The `dprelease` command line: run, plan, show, export, verify, schema, ledger, registry.

Contract for orchestrators: logs go to stderr; `run` prints one JSON summary line on
stdout; the exit code says what happened (see ``ExitCode``). No option reaches a test
hook: noise is always exact CSPRNG noise, and there is no seed.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from jobs.ledger_commands import add_ledger_parser, command_ledger
from jobs.registry_commands import add_registry_parser, command_registry
from jobs.show_commands import add_show_parsers, command_export, command_plan, command_show
from pipelines.config import ConfigError, config_json_schema, load_release
from pipelines.errors import RETRY_ADVICE, DprError, ExitCode, Terminated
from pipelines.release import MANIFEST, published_versions, unpublished_version_dirs
from pipelines.verification import verify_release

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("dprelease")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time of the record."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _: object) -> None:
        pass


def _configure_logging(verbose: bool = False) -> None:
    """Operator logs on stderr: time, level, message (never data values).

    Libraries that log through the root logger (py4j prints a trace when a signal
    interrupts a gateway call) stay silent unless ``verbose``: our one failure line says
    what happened.
    """
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    if verbose and not any(isinstance(h, _StderrHandler) for h in root.handlers):
        root.addHandler(_StderrHandler())
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _version() -> str:
    try:
        return metadata.version("dprelease")
    except metadata.PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dprelease",
        description="Publish differentially private statistics from a private table, on Spark.",
    )
    parser.add_argument("--version", action="version", version=f"dprelease {_version()}")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Spark's own logs and progress bars; on failure, also the full trace",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a release job and publish a new version")
    run.add_argument("config", help="job config (YAML)")
    run.add_argument(
        "--supersede",
        action="store_true",
        help="publish a new version even if this data period is already published",
    )
    add_show_parsers(sub)  # plan, show, export (jobs/show_commands.py)
    verify = sub.add_parser("verify", help="check a published version's files against its manifest")
    verify.add_argument(
        "release_dir", help="a version directory, or a release directory (all versions)"
    )
    verify.add_argument(
        "--config",
        help="the release's job config: also check each version against the ledger's record",
    )
    sub.add_parser("schema", help="print the JSON Schema of job configs")
    add_ledger_parser(sub)
    add_registry_parser(sub)
    return parser


def run_command(
    config_path: str,
    supersede: bool = False,
    spark: SparkSession | None = None,
    verbose: bool = False,
) -> ExitCode:
    """Run one release job and print the JSON summary line; errors propagate.

    With ``spark`` given, the run uses that session and leaves it running; otherwise it
    creates a session (quiet unless ``verbose``) and stops it at the end.
    """
    spec = load_release(config_path)
    config = spec.config
    from jobs.session import create_session
    from pipelines.job import already_published, run_release, start_run

    # A retry of a published period needs no Spark session: answer before starting one.
    start = start_run(spec, supersede=supersede)
    result = already_published(config, start, supersede=supersede)
    if result is None:
        session = spark or create_session(f"dprelease:{config.release.name}", verbose=verbose)
        try:
            result = run_release(session, spec, supersede=supersede, start=start)
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


def _command_verify(args: argparse.Namespace) -> ExitCode:
    """Check one version, or every version of a release (a version directory without a
    manifest is a problem); with ``--config`` also against the ledger's record."""
    path = Path(args.release_dir)
    single = (path / MANIFEST).is_file()
    release = path.parent if single else path
    problems: dict[str, list[str]] = {}
    if not single:
        for gap in unpublished_version_dirs(release):
            problems[gap.name] = [f"no {MANIFEST}: deleted, or not a published version"]
    for version in [path] if single else [v.path for v in published_versions(release)]:
        problems[version.name] = verify_release(version)
    if args.config:
        from pipelines.integrity import ledger_problems, open_ledger

        config = load_release(args.config).config
        for name, found in ledger_problems(open_ledger(config), release, config).items():
            if not single or name == path.name:
                problems.setdefault(name, []).extend(found)
    if not problems:
        raise ConfigError(f"{path}: no published version here")
    for name, found in sorted(problems.items()):
        for problem in found:
            print(f"{name}: {problem}", file=sys.stderr)
        print(json.dumps({"version": str(release / name), "ok": not found}))
    return ExitCode.VERIFY_FAILED if any(problems.values()) else ExitCode.OK


def _command_schema(_: argparse.Namespace) -> ExitCode:
    print(json.dumps(config_json_schema(), indent=2))
    return ExitCode.OK


COMMANDS = {
    "ledger": command_ledger,
    "registry": command_registry,
    "plan": command_plan,
    "show": command_show,
    "export": command_export,
    "verify": _command_verify,
    "schema": _command_schema,
}


def _interruption(error: BaseException) -> BaseException | None:
    """The signal behind ``error``, if any: cleanup after a signal may raise anew (a
    broken gateway), and the new error's context chain still holds the signal."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt | Terminated):
            return seen
        seen = seen.__context__
    return None


def exit_code_for(error: BaseException) -> ExitCode:
    """The documented exit code of an error: its ``exit_code``, else internal error (1);
    an error raised while a signal unwound the run takes the signal's code."""
    signal_error = _interruption(error)
    if isinstance(signal_error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    error = signal_error or error
    code = getattr(error, "exit_code", None)
    return code if isinstance(code, ExitCode) else ExitCode.INTERNAL_ERROR


def failure_line(error: BaseException) -> str:
    """The one operator line of a failure: our errors' message and notes, and what to do.

    Anything not raised on purpose (a Java or library error) shows its type only, never a
    message that could carry data; ``--verbose`` adds the trace.
    """
    code = exit_code_for(error)
    if _interruption(error) is not None:
        text = "interrupted; staging removed, the run is marked failed in the ledger"
    elif isinstance(error, DprError):
        text = " ".join(str(error).split("\n"))
    else:
        text = f"internal error ({type(error).__name__}); nothing was published"
    notes = "; ".join(getattr(error, "__notes__", []))
    return f"{text}{'; ' + notes if notes else ''} [exit {int(code)}: {RETRY_ADVICE[code]}]"


def main(argv: Sequence[str] | None = None, *, spark: SparkSession | None = None) -> int:
    """Entry point of the `dprelease` console script and the spark-submit main.

    ``spark`` (keyword only, never a CLI option) lets an embedding process run jobs in its
    own session, which `run` then leaves running. Every failure ends as one stderr line
    and a documented exit code; SIGTERM ends like SIGINT (exit 143 and 130).
    """
    args = _parser().parse_args(argv)
    _configure_logging(args.verbose)
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if _main_thread() else None
    try:
        if args.command == "run":
            return int(run_command(args.config, args.supersede, spark, args.verbose))
        return int(COMMANDS[args.command](args))
    except (Exception, KeyboardInterrupt, Terminated) as error:
        log.error("%s", failure_line(error))
        if args.verbose:
            log.error("trace", exc_info=error)
        return int(exit_code_for(error))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
