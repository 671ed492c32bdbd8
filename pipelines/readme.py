"""The README of a release version, generated from its manifest alone.

Invariant: every line is a function of the manifest (configuration, plan and noisy
figures only), so the README and the manifest cannot disagree (docs/privacy.md §9).
"""

from __future__ import annotations

from typing import Any

from pipelines.manifest import INTERVALS, TableView, table_views
from pipelines.metric_kinds import kind_of
from pipelines.released import SUFFIXES, released_name


def _heading(manifest: dict[str, Any]) -> list[str]:
    release = manifest["release"]
    lines = [
        f"# {release['name']} {release['version']}",
        "",
        f"Data period: {release['data_period']}. Published {release['created_at']} "
        f"(run {release['run_id']})."
        + (f" Supersedes {release['supersedes']}." if release["supersedes"] else ""),
        "",
    ]
    if release["description"]:
        lines += [release["description"], ""]
    return lines + _governance(manifest.get("governance"))


def governance_text(governance: dict[str, Any] | None) -> str | None:
    """The governance sentence of README and card: policy tier and registry fields, if
    recorded (docs/privacy.md §12); None when the manifest has no governance record."""
    if not governance:
        return None
    tier = governance.get("tier")
    parts = [f"Policy tier: {tier}." if tier else "Policy tier: none (no policy applied)."]
    for name in ("purpose", "owner", "approval"):
        if governance.get(name):
            parts.append(f"{name.capitalize()}: {governance[name]}.")
    return " ".join(parts)


def _governance(governance: dict[str, Any] | None) -> list[str]:
    text = governance_text(governance)
    return [] if text is None else [text, ""]


def _bounds(bounds: dict[str, Any]) -> str:
    return (
        f"Each unit contributes to at most {bounds['max_partitions_per_unit']} partition(s) "
        f"and at most {bounds['max_rows_per_unit_per_partition']} row(s) per partition."
    )


def _guarantee(manifest: dict[str, Any]) -> list[str]:
    privacy = manifest["privacy"]
    bounds = manifest.get("contribution_bounds")
    scope = (
        _bounds(bounds)
        if bounds is not None
        else f"The release holds {len(manifest['tables'])} tables, each below with its bounds."
    )
    return [
        "## Privacy guarantee",
        "",
        f"- ({privacy['epsilon']:.6g}, {privacy['delta']:.3g})-differential privacy for each "
        f"privacy unit (`{privacy['privacy_unit']['column']}`: "
        f"{privacy['privacy_unit']['time_scope']}).",
        f"- Neighbouring datasets: {privacy['neighbouring_relation']}.",
        f"- Composition: {manifest['composition']['statement']}",
        f"- Conversion: {privacy['conversion']}.",
        f"- {scope}",
        "",
        "Group privacy (a group of k units):",
        "",
        "| k | epsilon | delta |",
        "|---|---|---|",
        *[
            f"| {g['group_size']} | {g['epsilon']:.6g} | {g['delta']:.3g} |"
            for g in manifest["group_privacy"]
        ],
        "",
    ]


def _partitions(manifest: dict[str, Any], level: str = "##") -> list[str]:
    partitions = manifest["partitions"]
    return [
        f"{level} Partitions",
        "",
        f"Keys ({', '.join(partitions['columns'])}) released by: {partitions['mechanism']}"
        + (
            f" (epsilon {partitions['epsilon']:.6g}, delta {partitions['delta']:.3g})."
            if partitions["mechanism"] != "public"
            else f"; provenance: {partitions.get('provenance', '')}."
        ),
        "",
    ]


def _columns(manifest: dict[str, Any], level: str = "##") -> list[str]:
    lines = [
        f"{level} Columns",
        "",
        "| column | statistic | value bounds | grid | noise std (per partition) |",
        "|---|---|---|---|---|",
    ]
    stds = {m["name"]: m["std"] for m in manifest["mechanisms"]}
    trees = {m["name"]: m["tree"] for m in manifest["mechanisms"] if "tree" in m}
    for column in manifest["columns"]:
        value_bounds = f"[{column['lower']:g}, {column['upper']:g}]" if "lower" in column else "-"
        derived = column.get("derived_from")
        std = stds.get(column["mechanisms"][0], float("nan")) if not derived else derived["std"]
        noise = (
            f"{std:.4g}"
            if kind_of(column["metric"]).noise_is_absolute
            else f"{std / 2:.4g} / count (see `{released_name(column['name'], 'std')}`)"
        )
        tree = trees.get(column["mechanisms"][0])
        if tree is not None:
            noise = (
                f"{std:.4g} per tree node; expected rank error "
                f"{tree['expected_rank_error']:.2%} at {tree['rank_error_partition_size']:,} "
                f"values; per rank {', '.join(f'`{n}`' for n in column['columns'][::3])}"
            )
        if derived:
            noise += f" (from the parts of `{derived['output']}`, no noise of its own)"
        lines.append(
            f"| `{column['name']}` | {column['metric']} | {value_bounds} | "
            f"{column.get('grid', 1.0):g} | {noise} |"
        )
    return [*lines, ""]


def _rows(view: TableView) -> str:
    data = view.manifest["data"]
    return (
        f"Rows: {data['row_count']} in {len(data['files'])} Parquet file(s) under "
        f"`{view.directory}/`; checksums in `manifest.json`."
    )


def _table(view: TableView) -> list[str]:
    """One table's section of a release of several tables."""
    section, name = view.manifest, view.name or ""
    spend = next(t for t in section["composition"]["tables"] if t["name"] == name)
    return [
        f"## Table `{name}`",
        "",
        f"Spends ({spend['epsilon']:.6g}, {spend['delta']:.3g}) of the release. "
        + _bounds(section["contribution_bounds"]),
        "",
        *_partitions(section, "###"),
        *_columns(section, "###"),
        *_reliability(section),
        _rows(view),
        "",
    ]


def _reliability(manifest: dict[str, Any]) -> list[str]:
    """The sentence on the reliability flags ("use with caution"), when they are released."""
    flags = [c["reliability"] for c in manifest["columns"] if "reliability" in c]
    if not flags:
        return []
    names = ", ".join(f"`{f['column']}`" for f in flags)
    return [
        f"Reliability flags ({names}), one per value: {flags[0]['rule']}, with share "
        f"{flags[0]['share']:g}. A flagged value is dominated by noise: use it with caution.",
        "",
    ]


def render_readme(manifest: dict[str, Any]) -> str:
    """A human README generated from the manifest alone (so the two cannot disagree)."""
    views = table_views(manifest)
    lines = _heading(manifest) + _guarantee(manifest)
    if len(views) == 1 and views[0].name is None:
        lines += _partitions(manifest) + _columns(manifest) + _reliability(manifest)
        lines += [_rows(views[0]), ""]
    else:
        lines += [line for view in views for line in _table(view)]
    lines += [
        f"Each value comes with `{SUFFIXES['std']}`, `{SUFFIXES['ci_low']}` and "
        f"`{SUFFIXES['ci_high']}` columns: a "
        f"{manifest['confidence_level']:.0%} {INTERVALS}.",
        "",
    ]
    return "\n".join(lines)
