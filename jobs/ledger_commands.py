"""`dprelease ledger show|export|set-lifetime`: the budget ledger of a job's dataset.

Invariant: these commands read the ledger or append to it through its ``LedgerStore``
(SQLite file or PostgreSQL server; ``set-lifetime`` is the only way to change a pinned
lifetime, and it is recorded); they never read private data.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from pipelines.config import ConfigError, JobConfig, load_release
from pipelines.errors import ExitCode
from pipelines.ledger import LedgerStore, export_entries


def add_ledger_parser(sub: Any) -> None:
    """Add the ``ledger`` command and its sub-commands to the CLI's sub-parsers."""
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
    ledger_set = ledger_sub.add_parser(
        "set-lifetime",
        help="change (or pin) the lifetime budget of the config's dataset and privacy unit; "
        "the change is recorded in the ledger",
    )
    ledger_set.add_argument("config", help="job config (YAML): names the ledger and dataset")
    ledger_set.add_argument("--epsilon", type=float, required=True, help="new lifetime epsilon")
    ledger_set.add_argument("--delta", type=float, required=True, help="new lifetime delta")
    ledger_set.add_argument(
        "--reason", required=True, help="why the lifetime changes (kept in the ledger)"
    )


def _open_ledger(config_path: str, *, create: bool = False) -> tuple[LedgerStore, JobConfig]:
    """The config's ledger; unless ``create``, a missing ledger file is a config error (a
    server ledger's schema is created on first connection, so it is never missing)."""
    config = load_release(config_path).config
    if config.ledger.url is None and not create and not config.ledger_path.is_file():
        raise ConfigError(f"ledger.path: no ledger at {config.ledger_path} (no run charged yet)")
    from pipelines.integrity import open_ledger

    return open_ledger(config), config


def command_ledger(args: argparse.Namespace) -> ExitCode:
    if args.ledger_command == "set-lifetime":
        return _ledger_set_lifetime(args)
    ledger, config = _open_ledger(args.config)
    if args.ledger_command == "export":
        sys.stdout.write(export_entries(ledger.entries(config.ledger.dataset), args.format))
        return ExitCode.OK
    _ledger_show(ledger, config)
    return ExitCode.OK


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _ledger_show(ledger: LedgerStore, config: JobConfig) -> None:
    """The ledger's identity, the dataset's charges, its lifetime changes, then for each
    privacy unit its lifetime (pinned or not) and, last, its budget state as JSON."""
    from pipelines.ledger import dataset_name

    dataset = dataset_name(config.ledger.dataset)
    entries = ledger.entries(dataset)
    print(
        f"ledger {ledger.location}, dataset {dataset!r}, "
        f"identity {ledger.identity} (created {ledger.created_at})"
    )
    header = ("created_at", "run_id", "release", "data_period", "epsilon", "delta", "status")
    _print_table(
        [header]
        + [
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
    )
    changed_units = _show_lifetime_changes(ledger, dataset)
    units = {e.privacy_unit for e in entries} | changed_units | {config.privacy_unit.column}
    for unit in sorted(units):
        _show_lifetime(ledger, config, dataset, unit)


def _amount(value: float | None) -> str:
    return "unpinned" if value is None else repr(value)


def _show_lifetime_changes(ledger: LedgerStore, dataset: str) -> set[str]:
    """The dataset's lifetime change history, oldest first; the privacy units it names."""
    changes = ledger.lifetime_changes(dataset)
    print(f"lifetime changes: {len(changes) or 'none'}")
    if changes:
        _print_table(
            [("changed_at", "privacy_unit", "epsilon", "delta", "actor", "reason")]
            + [
                (
                    c.changed_at,
                    c.privacy_unit,
                    f"{_amount(c.old_epsilon)} -> {_amount(c.new_epsilon)}",
                    f"{_amount(c.old_delta)} -> {_amount(c.new_delta)}",
                    c.actor,
                    c.reason,
                )
                for c in changes
            ]
        )
    return {c.privacy_unit for c in changes}


def _show_lifetime(ledger: LedgerStore, config: JobConfig, dataset: str, unit: str) -> None:
    """One line on the lifetime of (dataset, unit), then its state under that lifetime."""
    configured = (config.ledger.lifetime_budget.epsilon, config.ledger.lifetime_budget.delta)
    pinned = ledger.pinned_lifetime(dataset, unit)
    if pinned is None:
        print(
            f"lifetime of privacy unit {unit!r}: not pinned; the first charge pins the "
            f"config's ledger.lifetime_budget ε={configured[0]!r}, δ={configured[1]!r}"
        )
    else:
        note = ""
        if pinned != configured:
            note = (
                f"; the config's ledger.lifetime_budget ε={configured[0]!r}, "
                f"δ={configured[1]!r} differs, so runs are refused until they agree "
                "(dprelease ledger set-lifetime CONFIG --epsilon E --delta D --reason TEXT)"
            )
        print(f"lifetime of privacy unit {unit!r}: pinned ε={pinned[0]!r}, δ={pinned[1]!r}{note}")
    state = ledger.state(dataset, unit, *(pinned or configured))
    print(json.dumps(state.to_dict()))


def _ledger_set_lifetime(args: argparse.Namespace) -> ExitCode:
    """Pin the config's (dataset, privacy unit) to the given lifetime, recording the OS
    user and the reason; prints one JSON line. The new values must be ones a config can
    state in ``ledger.lifetime_budget``, so the config can then be made to agree. Checks
    the arguments before it opens (or creates) the ledger."""
    import getpass

    from pydantic import ValidationError

    from pipelines.config import LifetimeBudgetConfig
    from pipelines.ledger import dataset_name

    try:
        LifetimeBudgetConfig(epsilon=args.epsilon, delta=args.delta)
    except ValidationError as error:
        problems = "; ".join(f"--{e['loc'][0]}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"ledger set-lifetime: {problems}") from None
    if not args.reason.strip():
        raise ConfigError("ledger set-lifetime: --reason must not be blank")
    try:
        actor = getpass.getuser()
    except Exception:  # no user name in the environment or the password database
        raise ConfigError("ledger set-lifetime: cannot tell the OS user name") from None
    _check_lifetime_within_tier(load_release(args.config).config, args.epsilon, args.delta)
    ledger, config = _open_ledger(args.config, create=True)
    dataset, unit = dataset_name(config.ledger.dataset), config.privacy_unit.column
    before = ledger.pinned_lifetime(dataset, unit)
    ledger.set_lifetime(dataset, unit, args.epsilon, args.delta, args.reason, actor)
    change = {
        "ledger": ledger.identity,
        "dataset": dataset,
        "privacy_unit": unit,
        "epsilon": args.epsilon,
        "delta": args.delta,
        "previous_epsilon": None if before is None else before[0],
        "previous_delta": None if before is None else before[1],
        "actor": actor,
    }
    print(json.dumps(change))
    return ExitCode.OK


def _check_lifetime_within_tier(config: JobConfig, epsilon: float, delta: float) -> None:
    """With ``ledger.policy`` set, a new lifetime must stay within the dataset's tier
    caps (exit 8 otherwise): the policy binds set-lifetime as it binds runs."""
    if config.ledger.policy is None:
        return
    from pipelines.errors import PolicyViolation
    from pipelines.policy import load_policy

    policy = load_policy(config.ledger.policy)
    tier_name = policy.config.datasets.get(config.ledger.dataset)
    if tier_name is None:
        raise PolicyViolation(
            f"policy {policy.path}: dataset {config.ledger.dataset!r} is bound to no tier"
        )
    tier = policy.config.tiers[tier_name]
    over = [
        f"{rule}: --{name} is {value!r}, the tier allows at most {cap!r}"
        for rule, name, value, cap in (
            ("max_lifetime_epsilon", "epsilon", epsilon, tier.max_lifetime_epsilon),
            ("max_lifetime_delta", "delta", delta, tier.max_lifetime_delta),
        )
        if value > cap
    ]
    if over:
        raise PolicyViolation(
            f"policy tier {tier_name!r} refuses the lifetime: {'; '.join(over)}; nothing changed"
        )
