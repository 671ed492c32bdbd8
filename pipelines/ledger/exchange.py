"""Export and import of ledger entries (JSON lines or CSV), and the published-entry lookup."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Literal

from pipelines.ledger.model import _COLUMNS, LedgerEntry

ExportFormat = Literal["jsonl", "csv"]

# Optional entry fields: '' in CSV; the digests may be missing from version 1 exports.
_OPTIONAL = ("version", "manifest_sha256", "readme_sha256")
_DIGESTS = ("manifest_sha256", "readme_sha256")


def published_entry(
    entries: Iterable[LedgerEntry], release: str, data_period: str
) -> LedgerEntry | None:
    """The latest published entry of (release, data_period), if any.

    A run for a period that already has one is an idempotent no-op unless it
    supersedes (and is then charged again, as a new run).
    """
    found = None
    for entry in entries:
        if entry.status == "published" and (entry.release, entry.data_period) == (
            release,
            data_period,
        ):
            found = entry
    return found


def export_entries(entries: Iterable[LedgerEntry], fmt: ExportFormat = "jsonl") -> str:
    """The entries as JSON lines (one object per line) or CSV with a header row.

    Amounts are written with ``repr`` (shortest round-tripping decimal), so
    ``parse_entries`` gives back the exact doubles. CSV writes a missing version or
    digest as ''.
    """
    if fmt == "jsonl":
        return "".join(
            json.dumps(entry.to_dict(), ensure_ascii=False, allow_nan=False) + "\n"
            for entry in entries
        )
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(_COLUMNS)
        for entry in entries:
            writer.writerow(
                [
                    repr(value) if isinstance(value, float) else ("" if value is None else value)
                    for value in (getattr(entry, name) for name in _COLUMNS)
                ]
            )
        return buffer.getvalue()
    raise ValueError(f"export format must be 'jsonl' or 'csv', got {fmt!r}")


def _entry_from_mapping(values: dict[str, object], where: str) -> LedgerEntry:
    # Exports made before schema version 2 have no digest fields: read them as None.
    values = {name: None for name in _DIGESTS} | values
    names = {str(name) for name in values}
    if names != set(_COLUMNS) or len(values) != len(_COLUMNS):
        missing = sorted(set(_COLUMNS) - names)
        unknown = sorted(names - set(_COLUMNS))
        raise ValueError(f"{where}: missing fields {missing}, unknown fields {unknown}")
    return LedgerEntry(**values)  # type: ignore[arg-type]


def parse_entries(text: str, fmt: ExportFormat = "jsonl") -> list[LedgerEntry]:
    """The entries of an ``export_entries`` text, validated (the inverse of the export)."""
    if fmt == "jsonl":
        parsed = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            values = json.loads(line)
            if not isinstance(values, dict):
                raise ValueError(f"line {number}: expected a JSON object")
            parsed.append(_entry_from_mapping(values, f"line {number}"))
        return parsed
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        parsed = []
        for number, row in enumerate(reader, start=2):
            fields_of_row: dict[str, object] = dict(row)
            for name in ("epsilon", "delta"):
                if name in fields_of_row:
                    fields_of_row[name] = float(str(fields_of_row[name]))
            for name in _OPTIONAL:
                if fields_of_row.get(name) == "":
                    fields_of_row[name] = None
            parsed.append(_entry_from_mapping(fields_of_row, f"row {number}"))
        return parsed
    raise ValueError(f"export format must be 'jsonl' or 'csv', got {fmt!r}")
