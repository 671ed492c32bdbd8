"""The release registry: every charged run across datasets, with its spend and its record.

One row per ledger entry, in reservation order: what data (dataset, privacy unit,
release, period, version), what it cost (ε, δ, and the cumulative spend of its budget up
to and including it, summed exactly), and who and why (policy tier, purpose, owner,
approval). Invariant: built from the ledger alone (configuration and accounting values),
never from data; every charge appears, published, failed and reserved alike.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Literal

from pipelines.ledger import LedgerEntry, Registration

RegistryFormat = Literal["table", "jsonl", "csv"]

COLUMNS = (
    "created_at",
    "dataset",
    "privacy_unit",
    "release",
    "data_period",
    "version",
    "status",
    "epsilon",
    "delta",
    "spent_epsilon",
    "spent_delta",
    "tier",
    "purpose",
    "owner",
    "approval",
    "run_id",
)


def registry_rows(
    entries: Iterable[LedgerEntry], registrations: Mapping[str, Registration]
) -> list[dict[str, object]]:
    """One row per entry, with its budget's cumulative spend after it (exact sums) and
    its registration (all None for runs charged before registrations existed)."""
    spent: dict[tuple[str, str], tuple[Fraction, Fraction]] = {}
    rows = []
    for entry in entries:
        budget = (entry.dataset, entry.privacy_unit)
        epsilon, delta = spent.get(budget, (Fraction(0), Fraction(0)))
        epsilon, delta = epsilon + Fraction(entry.epsilon), delta + Fraction(entry.delta)
        spent[budget] = (epsilon, delta)
        record = registrations.get(entry.run_id, Registration())
        row: dict[str, object] = {
            "created_at": entry.created_at,
            "dataset": entry.dataset,
            "privacy_unit": entry.privacy_unit,
            "release": entry.release,
            "data_period": entry.data_period,
            "version": entry.version,
            "status": entry.status,
            "epsilon": entry.epsilon,
            "delta": entry.delta,
            "spent_epsilon": float(epsilon),
            "spent_delta": float(delta),
            "tier": record.tier,
            "purpose": record.purpose,
            "owner": record.owner,
            "approval": record.approval,
            "run_id": entry.run_id,
        }
        rows.append(row)
    return rows


def _cell(value: object) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def render_registry(rows: list[dict[str, object]], fmt: RegistryFormat = "table") -> str:
    """The rows as an aligned text table, JSON lines or CSV (amounts as shortest
    round-tripping decimals in jsonl and csv; '' for a missing value in csv and table)."""
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows([_cell(row[name]) for name in COLUMNS] for row in rows)
        return buffer.getvalue()
    if fmt == "table":
        shown = [name for name in COLUMNS if name != "run_id"]
        cells = [shown] + [
            [f"{v:.6g}" if isinstance(v, float) else _cell(v) for v in (row[n] for n in shown)]
            for row in rows
        ]
        widths = [max(len(line[i]) for line in cells) for i in range(len(shown))]
        return "".join(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            + "\n"
            for line in cells
        )
    raise ValueError(f"registry format must be 'table', 'jsonl' or 'csv', got {fmt!r}")
