"""The release card: ``card.html``, one self-contained static page per version.

Invariants (docs/privacy.md §9): the card is a pure function of the version's manifest,
its released table and the dataset's ledger charges up to this run (epsilon and delta
charged, release and version labels; no times, run ids or statuses beyond "published or
not"); two runs whose released tables and configs are equal write the same card but for
the manifest's identity fields. It loads nothing: no script, no stylesheet, font or image
from anywhere (a Content-Security-Policy of ``default-src 'none'`` says so to the
browser), and it shows numbers at display precision, the manifest keeping exact ones.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.accuracy import keep_probability_table
from pipelines.card_charts import budget_chart, keep_chart, metric_chart, spend_chart
from pipelines.display import format_budget, format_number
from pipelines.ledger import LedgerEntry
from pipelines.manifest import TableView, table_views
from pipelines.readme import governance_text
from pipelines.release import CARD
from pipelines.release_table import ReleasedMetric, ReleasedTable, read_released
from pipelines.released import released_name

__all__ = ["CARD", "SpendPoint", "render_card", "spend_history", "write_card"]

# Tables with at most this many rows are shown whole; longer ones show their top rows
# by noisy count (charts show at most CHART_ROWS).
ALL_ROWS_UP_TO = 50
CHART_ROWS = 25
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_CSS = """
body{font-family:"DejaVu Sans",Verdana,sans-serif;margin:2rem auto;max-width:60rem;
color:#1d2733;line-height:1.4;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;
border-bottom:1px solid #d5dbe3}h3{font-size:1rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}
td,th{border:1px solid #d5dbe3;padding:.2rem .5rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.guarantee{font-size:1.1rem;background:#eef4fb;padding:.6rem 1rem;border-radius:4px}
.note{color:#56616f;font-size:.85rem}figure{margin:.5rem 0}svg{max-width:100%;height:auto}
"""


@dataclass(frozen=True)
class SpendPoint:
    """One charge to the dataset: what it spent, the running total, and its label."""

    label: str
    epsilon: float
    delta: float
    cumulative_epsilon: float


def spend_history(
    entries: Sequence[LedgerEntry], run_id: str, privacy_unit: str, version: str
) -> list[SpendPoint]:
    """The dataset's charges for ``privacy_unit`` in ledger order, up to and including
    run ``run_id`` (labelled with ``version``): later charges are not part of this card.

    Labels name the release and version of published runs; any other charge reads "run
    not published" (how many there are follows from the manifest's charge count).
    """
    points: list[SpendPoint] = []
    total = 0.0
    for entry in entries:
        if entry.privacy_unit != privacy_unit:
            continue
        total += entry.epsilon
        here = entry.run_id == run_id
        if here:
            label = f"{entry.release} {version} (this card)"
        elif entry.status == "published":
            label = f"{entry.release} {entry.version}"
        else:
            label = "run not published"
        points.append(SpendPoint(label, entry.epsilon, entry.delta, total))
        if here:
            break
    return points


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_e(c)}</td>' if i >= numeric_from else f"<td>{_e(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(identifier: str, svg: str, caption: str) -> str:
    caption_html = f'<figcaption class="note">{_e(caption)}</figcaption>'
    return f'<figure id="{_e(identifier)}">{svg}{caption_html}</figure>'


def _bounds(bounds: dict[str, Any]) -> str:
    return (
        f"Each unit contributes to at most {_e(bounds['max_partitions_per_unit'])} partition(s) "
        f"and {_e(bounds['max_rows_per_unit_per_partition'])} row(s) per partition."
    )


def _guarantee(manifest: dict[str, Any]) -> str:
    privacy = manifest["privacy"]
    unit = privacy["privacy_unit"]
    exact = manifest["composition"].get("epsilon_exact")
    bounds = manifest.get("contribution_bounds")
    tables = manifest.get("tables")
    scope = (
        _bounds(bounds)
        if bounds is not None
        else f"{len(tables or [])} tables; {manifest['composition']['statement']}."
    )
    return (
        '<h2>Guarantee</h2><p class="guarantee">'
        f"(ε = {_e(format_budget(privacy['epsilon']))}, δ = {_e(format_budget(privacy['delta']))})"
        f"-differential privacy for each <b>{_e(unit['column'])}</b>: {_e(unit['time_scope'])}."
        "</p>"
        f"<p>Neighbouring datasets: {_e(privacy['neighbouring_relation'])}. {scope} "
        f"Conversion: {_e(privacy['conversion'])}."
        + (f" Exact total epsilon: {_e(exact)}." if exact else "")
        + "</p>"
    )


def _governance(manifest: dict[str, Any]) -> str:
    """The policy tier and registry fields, as the README states them (docs/privacy.md §12)."""
    text = governance_text(manifest.get("governance"))
    return "" if text is None else f'<p class="governance">{_e(text)}</p>'


def _budget(manifest: dict[str, Any], scope: str = "") -> str:
    partitions = manifest["partitions"]
    names, epsilons, rows = [], [], []
    if partitions["mechanism"] != "public":
        names.append("selection")
        epsilons.append(float(partitions["epsilon"]))
        rows.append(
            ["selection", partitions["mechanism"], format_budget(partitions["epsilon"]),
             format_budget(partitions["delta"])]
        )  # fmt: skip
    for mechanism in manifest["mechanisms"]:
        spend = mechanism["spend"]
        names.append(mechanism["name"])
        epsilons.append(float(spend["epsilon"]))
        rows.append(
            [mechanism["name"], mechanism["noise"]["kind"], format_budget(spend["epsilon"]),
             format_budget(spend["delta"])]
        )  # fmt: skip
    chart = budget_chart(names, epsilons, "Epsilon by mechanism")
    return (
        "<h2>Budget breakdown</h2>"
        + _figure(f"chart-budget{scope}", chart, manifest["composition"]["statement"])
        + _table(["mechanism", "noise or rule", "epsilon", "delta"], rows, numeric_from=2)
    )


def _spend(manifest: dict[str, Any], history: Sequence[SpendPoint]) -> str:
    cumulative = manifest["composition"]["cumulative"] or {}
    lifetime = float(cumulative.get("lifetime_epsilon", 0.0)) or max(
        [p.cumulative_epsilon for p in history] or [1.0]
    )
    chart = spend_chart(
        [p.label for p in history],
        [p.cumulative_epsilon for p in history],
        lifetime,
        f"Cumulative spend of dataset {cumulative.get('dataset', '')}",
    )
    rows = [
        [str(i), p.label, format_budget(p.epsilon), format_budget(p.delta),
         format_number(p.cumulative_epsilon, 6)]
        for i, p in enumerate(history, start=1)
    ]  # fmt: skip
    return (
        "<h2>The dataset's spend over time</h2>"
        + _figure("chart-spend", chart, cumulative.get("statement", ""))
        + _table(["charge", "run", "epsilon", "delta", "cumulative epsilon"], rows, 2)
        + f"<p>Lifetime budget: epsilon {_e(format_budget(lifetime))}, delta "
        f"{_e(format_budget(float(cumulative.get('lifetime_delta', 0.0))))}.</p>"
    )


def _metric_section(
    released: ReleasedTable, metric: ReleasedMetric, level: float, scope: str = ""
) -> str:
    top = released.ranked().head(CHART_ROWS)
    labels = [" / ".join(str(v) for v in row[: len(released.keys)]) for row in top.display_rows()]
    columns = {n: top.table.column(n).to_pylist() for n in top.table.schema.names}
    chart = metric_chart(
        labels,
        [float(v) for v in columns[metric.name]],
        [float(v) for v in columns[released_name(metric.name, "ci_low")]],
        [float(v) for v in columns[released_name(metric.name, "ci_high")]],
        f"{metric.name} ({metric.metric}) with {level:.0%} noise intervals",
        bars=metric.kind.noise_is_absolute,  # counts and sums: bars from zero
    )
    shown = min(released.rows, CHART_ROWS)
    bounds = (
        f" Values are clamped to [{format_number(metric.lower)}, {format_number(metric.upper)}]."
        if metric.lower is not None and metric.upper is not None
        else ""
    )
    caption = f"{shown} of {released.rows} row(s), by noisy count.{bounds}"
    identifier = f"chart-metric{scope}-{metric.name}"
    return f"<h3>{_e(metric.name)}</h3>" + _figure(identifier, chart, caption)


def _values(manifest: dict[str, Any], released: ReleasedTable, scope: str = "") -> str:
    """The released table (all rows, or the top rows by noisy count), then one chart per
    metric."""
    level = float(manifest["confidence_level"])
    parts = ["<h2>Released values</h2>"]
    if released.rows == 0:
        return parts[0] + "<p>This release holds no rows.</p>"
    whole = released.rows <= ALL_ROWS_UP_TO
    shown = released.ranked().head(ALL_ROWS_UP_TO)
    parts.append(
        f"<p>{'All' if whole else f'The top {ALL_ROWS_UP_TO} by noisy count of the'} "
        f"{released.rows} released rows{', by noisy count' if whole else ''}: value ± "
        f"half-width of a {level:.0%} noise-only interval, which describes the added noise, "
        "not clamping, contribution bounding or sampling bias.</p>"
    )
    parts.append(_table(shown.header(), shown.display_rows(), numeric_from=len(shown.keys)))
    parts += [_metric_section(released, m, level, scope) for m in released.metrics]
    return "".join(parts)


def _selection(manifest: dict[str, Any], scope: str = "") -> str:
    partitions = manifest["partitions"]
    if partitions["mechanism"] == "public":
        return (
            "<h2>Partitions</h2><p>Public keys: every key is released, with noise, even when "
            f"absent from the data. Provenance: {_e(partitions.get('provenance', ''))}.</p>"
        )
    table = keep_probability_table(
        {"selection": partitions, "contribution_bounds": manifest["contribution_bounds"]}
    )
    chart = keep_chart(table, "Keep probability by distinct units")
    rows = [[str(n), format_number(p, 3)] for n, p in table if n <= 10 or p >= 1 or n % 5 == 0]
    return (
        f"<h2>Partitions</h2><p>Keys released by {_e(partitions['mechanism'])} selection "
        f"(epsilon {_e(format_budget(partitions['epsilon']))}, delta "
        f"{_e(format_budget(partitions['delta']))}).</p>"
        + _figure(f"chart-keep{scope}", chart, "A partition is released with this probability.")
        + _table(["units", "keep probability"], rows)
    )


def _table_sections(tables: Sequence[tuple[TableView, ReleasedTable]]) -> list[str]:
    """Values, selection and budget of each table (one table: as a single-table card)."""
    if len(tables) == 1 and tables[0][0].name is None:
        view, released = tables[0]
        return [
            _values(view.manifest, released),
            _selection(view.manifest),
            _budget(view.manifest),
        ]
    parts = []
    for view, released in tables:
        name, section = view.name or "", view.manifest
        spend = next(t for t in section["composition"]["tables"] if t["name"] == name)
        parts.append(
            f'<h2 id="table-{_e(name)}">Table {_e(name)}</h2>'
            f"<p>Keys: {_e(', '.join(section['partitions']['columns']))}. Spends epsilon "
            f"{_e(format_budget(spend['epsilon']))}, delta {_e(format_budget(spend['delta']))} "
            f"of the release. {_bounds(section['contribution_bounds'])}</p>"
        )
        scope = f"-{name}"
        parts += [
            _values(section, released, scope),
            _selection(section, scope),
            _budget(section, scope),
        ]
    return parts


def render_card(
    manifest: dict[str, Any],
    tables: Sequence[tuple[TableView, ReleasedTable]],
    history: Sequence[SpendPoint],
) -> str:
    """The card's HTML (a function of its arguments only; see the module invariants)."""
    release = manifest["release"]
    title = f"{release['name']} {release['version']}"
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p>Data period {_e(release['data_period'])}. Published {_e(release['created_at'])}."
        + (f" Supersedes {_e(release['supersedes'])}." if release["supersedes"] else "")
        + "</p>",
        f"<p>{_e(release['description'])}</p>" if release["description"] else "",
        _guarantee(manifest),
        _governance(manifest),
        *_table_sections(tables),
        _spend(manifest, history),
        '<p class="note">This card holds released (noisy) values and configuration only; '
        "manifest.json holds the exact figures, SHA256SUMS the digests.</p>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}: release card</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def write_card(version_dir: Path, manifest: dict[str, Any], history: Sequence[SpendPoint]) -> None:
    """Write ``card.html`` into a (staged) version from its manifest and data files."""
    tables = [(view, read_released(version_dir, view.manifest)) for view in table_views(manifest)]
    card = render_card(manifest, tables, history)
    (version_dir / CARD).write_text(card, encoding="utf-8")
