"""`dprelease plan | show | export`: the plan with its expected accuracy, and a published
version's released table, printed or written out.

Invariant: ``plan`` reads the config only (no data, no ledger, no charge); ``show`` and
``export`` read a version's published files and manifest only, never the private input
or the operator area (docs/privacy.md §7, §9).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from pipelines.accuracy import plan_report, with_budget
from pipelines.config import ConfigError, ReleaseSpec, TableSpec, load_release
from pipelines.display import format_budget
from pipelines.errors import ExitCode
from pipelines.manifest import TableView, table_views
from pipelines.release import published_versions, read_manifest
from pipelines.release_plan import build_release_plans, describe_release_plans
from pipelines.release_table import ReleasedTable, read_released

__all__ = ["add_show_parsers", "command_export", "command_plan", "command_show"]

DEFAULT_LIMIT = 20


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _sizes(text: str) -> list[int]:
    try:
        return [_positive(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a comma-separated list of unit counts: {text!r}"
        ) from None


def add_show_parsers(sub: Any) -> None:
    """Add ``plan``, ``show`` and ``export`` to the CLI's sub-parsers."""
    plan = sub.add_parser(
        "plan", help="print the privacy plan and its expected accuracy; reads no data"
    )
    plan.add_argument("config", help="job config (YAML)")
    plan.add_argument("--epsilon", type=float, help="plan at this epsilon (same split)")
    plan.add_argument(
        "--units", type=_sizes, help="partition sizes in units, e.g. 50,200 (accuracy.units)"
    )
    show = sub.add_parser("show", help="print a published version's table (values ± intervals)")
    show.add_argument("release_dir", help="a version directory, or a release (its latest)")
    show.add_argument("--limit", type=_positive, default=DEFAULT_LIMIT, help="rows to print")
    show.add_argument("--offset", type=int, default=0, help="rows to skip (the next page)")
    show.add_argument("--table", help="only this table (a release of several tables)")
    export = sub.add_parser("export", help="write a published version's table as CSV or JSON")
    export.add_argument("release_dir", help="a version directory, or a release (its latest)")
    export.add_argument("out_dir", help="directory to write into (created)")
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    export.add_argument("--table", help="only this table (a release of several tables)")


def _at_epsilon(spec: ReleaseSpec, epsilon: float) -> ReleaseSpec:
    """The release at another total epsilon: every table's epsilon scaled alike, each
    table's split unchanged."""
    factor = epsilon / spec.budget_epsilon
    tables = tuple(
        TableSpec(t.name, with_budget(t.config, t.config.budget.epsilon * factor, t.config.weights))
        for t in spec.tables
    )
    return ReleaseSpec(tables, spec.config_sha256, epsilon, spec.budget_delta)


def command_plan(args: argparse.Namespace) -> ExitCode:
    """Print the plan with its accuracy report, or refuse it (exit 2) exactly as `run` would.

    ``build_release_plans`` makes every check that depends only on the config (noise
    limits, the selection rule, the exact-arithmetic proof; docs/privacy.md §3, §5, §6) and
    ``govern`` the policy tier's (exit 8; §12), so this needs no Spark session and never
    reads the ledger. A release of several tables prints each table's plan and accuracy
    report, then the totals.
    """
    from pipelines.policy import govern

    spec = load_release(args.config)
    if args.epsilon is not None:
        spec = _at_epsilon(spec, args.epsilon)
    plans = build_release_plans(spec)
    govern(spec.config, plans)
    description = describe_release_plans(plans)
    if spec.multi:
        entries = description["tables"]
        assert isinstance(entries, list)
        for entry, table in zip(entries, spec.tables, strict=True):
            entry["accuracy"] = plan_report(table.config, args.units)
    else:
        description["accuracy"] = plan_report(spec.config, args.units)
    print(json.dumps(description, indent=2))
    return ExitCode.OK


def _latest(path: Path) -> Path:
    """A version directory as given, or the latest published version of a release."""
    if (path / "manifest.json").is_file():
        return path
    versions = published_versions(path)
    if not versions:
        raise ConfigError(f"{path}: no published version here")
    return versions[-1].path


def _print_table(released: ReleasedTable) -> None:
    header, rows = released.header(), released.display_rows()
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    keys = len(released.keys)

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < keys else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(header))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))


def _views(manifest: dict[str, Any], table: str | None) -> list[TableView]:
    """The version's tables, or only ``table`` (ConfigError naming the tables if absent)."""
    views = table_views(manifest)
    if table is None:
        return views
    chosen = [v for v in views if v.name == table]
    if not chosen:
        names = [v.name for v in views if v.name is not None]
        raise ConfigError(f"--table: {table!r} is not a table of this version (tables: {names})")
    return chosen


def _show_table(version: Path, view: TableView, limit: int, offset: int) -> None:
    """Print one table's page of rows, by noisy count."""
    released = read_released(version, view.manifest).ranked()
    if view.name is not None:
        print(f"\ntable {view.name} ({view.directory}/)")
    if not released.rows:
        print("\nno released rows")
        return
    print()
    _print_table(released.head(limit, offset))
    first = min(offset + 1, released.rows)
    last = min(offset + limit, released.rows)
    ranking = released.ranking_metric
    order = f"by noisy {ranking.name}" if ranking is not None else "in key order"
    print(f"\nrows {first}-{last} of {released.rows}, {order}; value ± half-width of the "
          f"{view.manifest['confidence_level']:.0%} noise-only interval")  # fmt: skip


def command_show(args: argparse.Namespace) -> ExitCode:
    """Print a version's guarantee and a page of each table (by noisy count), then its card."""
    version = _latest(Path(args.release_dir))
    manifest = read_manifest(version)
    release, privacy = manifest["release"], manifest["privacy"]
    views = _views(manifest, args.table)
    print(
        f"{release['name']} {release['version']} ({release['data_period']}): "
        f"(epsilon={format_budget(privacy['epsilon'])}, delta={format_budget(privacy['delta'])})"
        f"-DP per {privacy['privacy_unit']['column']}"
    )
    for view in views:
        _show_table(version, view, args.limit, max(args.offset, 0))
    card = version / "card.html"
    print(json.dumps({"version": release["version"], "path": str(version)}
                     | ({"card": str(card)} if card.is_file() else {})))  # fmt: skip
    return ExitCode.OK


def _export_table(
    version: Path, manifest: dict[str, Any], view: TableView, out: Path, form: str
) -> Path:
    """Write one table as CSV or JSON under ``out``; the file's path."""
    table = read_released(version, view.manifest).table
    stem = f"{manifest['release']['name']}-{manifest['release']['version']}"
    stem += "" if view.name is None else f"-{view.name}"
    rows = table.to_pylist()
    if form == "csv":
        path = out / f"{stem}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(table.schema.names)
            writer.writerows([[row[name] for name in table.schema.names] for row in rows])
        return path
    path = out / f"{stem}.json"
    document = {
        "release": manifest["release"]["name"],
        "version": manifest["release"]["version"],
        "table": view.name,
        "epsilon": manifest["privacy"]["epsilon"],
        "delta": manifest["privacy"]["delta"],
        "confidence_level": manifest["confidence_level"],
        "rows": rows,
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def command_export(args: argparse.Namespace) -> ExitCode:
    """Write each table of the version (exact released values, key order) as
    ``<release>-<version>[-<table>].csv`` or ``.json`` in ``out_dir``; print one JSON line
    per file."""
    version = _latest(Path(args.release_dir))
    manifest = read_manifest(version)
    views = _views(manifest, args.table)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for view in views:
        path = _export_table(version, manifest, view, out_dir, args.format)
        rows = int(view.manifest["data"]["row_count"])
        print(json.dumps({"path": str(path), "rows": rows}), file=sys.stdout)
    return ExitCode.OK
