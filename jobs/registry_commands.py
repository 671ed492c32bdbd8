"""`dprelease registry`: every release charged in a ledger, across datasets, with its spend.

Invariant: reads the ledger only (never private data, never a release directory); the
ledger is named by a job config (its ``ledger.*``) or directly by ``--ledger``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipelines.config import ConfigError, load_release
from pipelines.errors import ExitCode
from pipelines.ledger import LedgerStore, SqliteLedger, dataset_name


def add_registry_parser(sub: Any) -> None:
    """Add the ``registry`` command to the CLI's sub-parsers."""
    registry = sub.add_parser(
        "registry",
        help="list every charged release across datasets, with its spend, tier, purpose, "
        "owner and approval",
    )
    source = registry.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="a job config (YAML) whose ledger.* names the ledger")
    source.add_argument("--ledger", help="the ledger itself: a SQLite file, or a postgresql:// URL")
    registry.add_argument("--dataset", help="only this dataset (any spelling of its name)")
    registry.add_argument("--format", choices=("table", "jsonl", "csv"), default="table")


def _open(args: argparse.Namespace) -> LedgerStore:
    """The ledger the arguments name; a missing file or unreachable server is exit 2."""
    if args.config:
        from pipelines.integrity import open_ledger

        config = load_release(args.config).config
        if config.ledger.url is None and not config.ledger_path.is_file():
            raise ConfigError(f"ledger.path: no ledger at {config.ledger_path}")
        return open_ledger(config)
    location = str(args.ledger)
    if location.startswith(("postgresql://", "postgres://")):
        from pipelines.ledger.postgres import PostgresLedger

        try:
            return PostgresLedger(location)
        except OSError as error:
            raise ConfigError(f"--ledger: {error}") from None
    if not Path(location).is_file():
        raise ConfigError(f"--ledger: no ledger file at {location}")
    try:
        return SqliteLedger(location)
    except OSError as error:
        raise ConfigError(f"--ledger: {error}") from None


def command_registry(args: argparse.Namespace) -> ExitCode:
    """Print the registry of the ledger, optionally of one dataset."""
    from pipelines.registry import registry_rows, render_registry

    ledger = _open(args)
    dataset = None
    if args.dataset is not None:
        try:
            dataset = dataset_name(args.dataset)
        except ValueError as error:
            raise ConfigError(f"--dataset: {error}") from None
    rows = registry_rows(ledger.entries(dataset), ledger.registrations())
    sys.stdout.write(render_registry(rows, args.format))
    return ExitCode.OK
