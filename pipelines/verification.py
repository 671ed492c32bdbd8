"""Verification of a published version: digests, manifest allow-list, files, values.

Invariant: reads a published version only and reports problems as text; it never writes.
A version verifies when its manifest and README match the checksum file, the manifest
passes the allow-list schema, the data files are exactly the listed ones (sizes, SHA-256,
row counts, schema), and every released value lies inside its interval and on its grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.derivation import unreliable
from pipelines.manifest import TableView, table_views, validate_manifest
from pipelines.metric_kinds import kind_of
from pipelines.release import (
    CARD,
    CHECKSUMS,
    MANIFEST,
    README,
    file_sha256,
    read_manifest,
    recorded_digests,
    text_digests,
)
from pipelines.released import released_name, value_columns


def check_text_digests(version_dir: Path, expected: dict[str, str], source: str) -> list[str]:
    """Problems where the manifest or README differ from the digests ``source`` records."""
    if not expected:
        return [f"{source}: no digests recorded for this version"]
    actual = text_digests(version_dir)
    return [
        f"{name}: missing, or edited since publication (SHA-256 differs from {source})"
        for name in (MANIFEST, README)
        if actual.get(name) != expected.get(name)
    ]


def check_card_digest(version_dir: Path) -> list[str]:
    """Problems where the card differs from the checksum file's record of it (a version
    published before cards has neither)."""
    recorded = recorded_digests(version_dir).get(CARD)
    present = (version_dir / CARD).is_file()
    if recorded is None:
        return [f"{CARD}: present but not in {CHECKSUMS}"] if present else []
    if not present or file_sha256(version_dir / CARD) != recorded:
        return [f"{CARD}: missing, or edited since publication (SHA-256 differs from {CHECKSUMS})"]
    return []


def verify_release(version_dir: Path) -> list[str]:
    """Problems found in a published version (empty list: it verifies).

    Checks: the manifest and README match the version's checksum file; the manifest
    exists and passes the allow-list schema; the data directory holds
    exactly the listed files with the listed sizes, SHA-256 and row counts; every file has
    the listed schema; released values sit inside their noise intervals, counts and sums on
    their grid.
    """
    problems: list[str] = []
    if not (version_dir / MANIFEST).is_file():
        return [f"{version_dir}: no {MANIFEST}: deleted, or not a published version"]
    problems.extend(check_text_digests(version_dir, recorded_digests(version_dir), CHECKSUMS))
    problems.extend(check_card_digest(version_dir))
    try:
        manifest = read_manifest(version_dir)
        validate_manifest(manifest)
    except Exception as error:
        problems.append(
            f"{MANIFEST}: invalid ({type(error).__name__}: {str(error).splitlines()[0]})"
        )
        return problems
    views = table_views(manifest)
    problems.extend(_unlisted_tables(version_dir, views))
    for view in views:
        problems.extend(_verify_table(version_dir, view))
    return problems


def _unlisted_tables(version_dir: Path, views: list[TableView]) -> list[str]:
    """Table directories present in the version but absent from its manifest."""
    listed = {v.directory for v in views}
    present = {"data"} if (version_dir / "data").is_dir() else set()
    if (version_dir / "tables").is_dir():
        present |= {f"tables/{p.name}" for p in (version_dir / "tables").iterdir()}
    return [
        f"{extra}: present but not listed in the manifest" for extra in sorted(present - listed)
    ]


def _verify_table(version_dir: Path, view: TableView) -> list[str]:
    """Problems of one table's files: listing, digests, rows, schema and values."""
    problems: list[str] = []
    manifest, directory = view.manifest, view.directory
    listed = {f["path"]: f for f in manifest["data"]["files"]}
    folder = version_dir / directory
    present = (
        {f"{directory}/{p.name}" for p in folder.glob("*") if p.is_file()}
        if folder.is_dir()
        else set()
    )
    for missing in sorted(set(listed) - present):
        problems.append(f"{missing}: listed in the manifest but missing")
    for extra in sorted(present - set(listed)):
        problems.append(f"{extra}: present but not listed in the manifest")
    schema = [(c["name"], c["type"]) for c in manifest["data"]["schema"]]
    total = 0
    for path, entry in sorted(listed.items()):
        file = version_dir / path
        if not file.is_file():
            continue
        if file.stat().st_size != entry["bytes"] or file_sha256(file) != entry["sha256"]:
            problems.append(f"{path}: size or SHA-256 differs from the manifest")
            continue
        table = pq.read_table(file)
        total += table.num_rows
        if table.num_rows != entry["rows"]:
            problems.append(f"{path}: {table.num_rows} rows, manifest says {entry['rows']}")
        if [(f.name, str(f.type)) for f in table.schema] != schema:
            problems.append(f"{path}: schema differs from the manifest")
            continue
        problems.extend(f"{path}: {p}" for p in check_values(table, manifest))
    if total != manifest["data"]["row_count"]:
        problems.append(
            f"{directory}: {total} rows in files, manifest says {manifest['data']['row_count']}"
        )
    return problems


def check_values(table: pa.Table, manifest: dict[str, Any]) -> list[str]:
    """Value-level checks of released data against its manifest."""
    problems = []
    for column in manifest["columns"]:
        kind = kind_of(column["metric"])
        names = value_columns(column["name"], kind.tree, column["columns"])
        for name in names:
            problems.extend(_value_problems(table, column, name))
        if kind.tree:
            problems.extend(_tree_problems(table, column, names))
    return problems


def _tree_problems(table: pa.Table, column: dict[str, Any], names: list[str]) -> list[str]:
    """A quantile outside [lower, upper] (value or interval) or decreasing in rank."""
    problems = []
    lower, upper = float(column["lower"]), float(column["upper"])
    for name in names:
        for stat in ("value", "ci_low", "ci_high"):
            shown = released_name(name, stat)
            array = np.asarray(table.column(shown).to_numpy(zero_copy_only=False), dtype=float)
            if not ((array >= lower) & (array <= upper)).all():
                problems.append(f"{shown}: a value lies outside [{lower:g}, {upper:g}]")
    if names and table.num_rows:
        stacked = np.stack(
            [np.asarray(table.column(n).to_numpy(zero_copy_only=False), float) for n in names]
        )
        if (np.diff(stacked, axis=0) < 0).any():
            problems.append(f"{column['name']}: a quantile decreases as the rank grows")
    return problems


def _value_problems(table: pa.Table, column: dict[str, Any], name: str) -> list[str]:
    """One value column against its interval, grid, finiteness and reliability flag."""
    problems = []
    value = table.column(name).to_numpy(zero_copy_only=False)
    low = table.column(released_name(name, "ci_low")).to_numpy(zero_copy_only=False)
    high = table.column(released_name(name, "ci_high")).to_numpy(zero_copy_only=False)
    if not (low <= value).all() or not (value <= high).all():
        problems.append(f"{name}: a value lies outside its confidence interval")
    grid = column.get("grid", 1.0)
    kind = kind_of(column["metric"])
    if kind.integer_valued or kind.on_grid:
        units = value / grid
        if not (units == units.round()).all():
            problems.append(f"{name}: a value is not a multiple of the grid {grid}")
    for array in (value, low, high):
        if array.dtype.kind == "f" and not (abs(array) < float("inf")).all():
            problems.append(f"{name}: a value is not finite")
            break
    problems.extend(_flag_problems(table, column, value, low, high))
    return problems


def _flag_problems(
    table: pa.Table, column: dict[str, Any], value: Any, low: Any, high: Any
) -> list[str]:
    """A reliability flag that is missing, null or disagrees with the manifest's rule."""
    reliability = column.get("reliability")
    if reliability is None:
        return []
    flag = reliability["column"]
    if flag not in table.column_names or table.column(flag).null_count:
        return [f"{flag}: missing or null reliability flag"]
    stated = np.asarray(table.column(flag).to_numpy(zero_copy_only=False), dtype=bool)
    if (stated != unreliable(value, low, high, float(reliability["share"]))).any():
        return [f"{flag}: a flag disagrees with its rule ({reliability['rule']})"]
    return []
