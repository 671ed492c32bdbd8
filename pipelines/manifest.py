"""The release manifest: the proof of the privacy guarantee, and its allow-list.

Invariants: the manifest holds configuration, the plan derived from it, and values
computed from noisy output only (released row count, file checksums); never a true
count, a dropped-row count, a run time or a data-derived bound. Every key is on the
allow-list in ``schemas/manifest.schema.json`` (``additionalProperties: false``).
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from functools import cache
from importlib import metadata
from importlib.resources import files
from typing import Any

import jsonschema

from dp_ops.accounting import group_privacy_table
from pipelines.consistency import RowRules, consistency_steps, row_rules
from pipelines.derivation import RELIABILITY_RULE, PostProcessing
from pipelines.plan import OutputMetric, PublicPartitions, ReleasePlan
from pipelines.plan_description import (
    describe_plan,
    describe_selection,
    group_privacy_rows,
    shared_sum_entry,
)
from pipelines.release_plan import ReleasePlans, describe_release_totals
from pipelines.released import FLAG, released_name

FORMAT_VERSION = 1
DEFINITION = (
    "approximate differential privacy ((epsilon, delta)-DP) under add/remove neighbours: "
    "datasets that differ by all rows of one privacy unit"
)
SAMPLING = (
    "aggregate first: one cell per (unit, partition) contributes count min(n, Linf), its sum "
    "clamped to [c*lower, c*upper] and its centred sums scaled by c/n (rounded toward zero); "
    "each unit keeps at most L0 cells, uniform without replacement, ranked by a keyed 64-bit "
    "hash (per-run secret salt from the OS CSPRNG, unit, key)"
)
INTERVALS = (
    "noise-only interval at the stated level: describes the added noise, not clamping, "
    "contribution bounding or sampling bias"
)


@dataclass(frozen=True)
class DataFile:
    """One published Parquet file."""

    path: str
    bytes: int
    sha256: str
    rows: int


@dataclass(frozen=True)
class ReleaseIdentity:
    """Who this release is: name, version, run, time, period, what it supersedes."""

    name: str
    version: str
    run_id: str
    data_period: str
    supersedes: str | None
    created_at: str

    @staticmethod
    def now(
        name: str, version: str, run_id: str, data_period: str, supersedes: str | None
    ) -> ReleaseIdentity:
        """Identity stamped with the current UTC time (the publication time, not a run time)."""
        stamp = datetime.now(UTC).replace(microsecond=0).isoformat()
        return ReleaseIdentity(name, version, run_id, data_period, supersedes, stamp)


@cache
def manifest_schema() -> dict[str, Any]:
    """The JSON Schema that allow-lists every manifest key."""
    text = files("pipelines").joinpath("schemas/manifest.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_manifest(manifest: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless every key is allow-listed and well typed."""
    jsonschema.validate(manifest, manifest_schema())


def software_versions() -> dict[str, str]:
    """Versions of the software that computed the release."""
    names = {"dprelease": "dprelease", "pyspark": "pyspark", "numpy": "numpy", "pyarrow": "pyarrow"}
    out = {"python": platform.python_version()}
    for key, distribution in names.items():
        try:
            out[key] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            out[key] = "unknown"
    return out


def _steps(output: OutputMetric, post: PostProcessing, rules: RowRules) -> list[str]:
    """The post-processing steps of one metric's released values, as the manifest states."""
    kind = output.kind
    steps = consistency_steps(rules, output.name)
    if output.shared is not None:
        steps.insert(
            0,
            f"derived from the noisy parts of '{output.shared.lender}' (shared parts, no noise "
            "of its own; see derived_from)",
        )
    if kind.clamps_negative and post.clamp_negative_counts:
        steps.append("negative values reported as 0")
    steps.extend(kind.steps)
    if kind.rounds and post.decimals is not None:
        steps.append(f"rounded to {post.decimals} decimals")
    return steps


def _measured(output: OutputMetric) -> dict[str, Any]:
    """The measured column, its bounds and grid (a tree's grid: its leaf width), or {}."""
    if output.tree is not None:
        shape = output.tree.shape
        width = (shape.upper - shape.lower) / shape.leaves
        return {
            "column": output.tree.column,
            "lower": shape.lower,
            "upper": shape.upper,
            "grid": width,
        }
    if output.encoding is not None:
        encoding = output.encoding
        return {
            "column": encoding.column,
            "lower": encoding.lower,
            "upper": encoding.upper,
            "grid": encoding.grid.step,
        }
    return {}


def _columns(plan: ReleasePlan) -> list[dict[str, Any]]:
    """One entry per released column group (value, std, ci_low, ci_high)."""
    out = []
    rules = row_rules(plan.outputs, plan.post)
    for output in plan.outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "metric": output.kind.name,
            "mechanisms": output.mechanisms,
            "budget_share": output.budget_share,
            "post_processing": _steps(output, plan.post, rules),
            **({"derived_from": shared_sum_entry(output)} if output.shared else {}),
            "columns": [c.name for c in plan.released if c.output == output.name],
            "confidence_interval": INTERVALS,
        }
        share = plan.post.reliability_share
        if share is not None and not output.kind.tree:
            entry["reliability"] = {
                "column": released_name(output.name, FLAG),
                "share": share,
                "rule": RELIABILITY_RULE,
            }
        out.append(entry | _measured(output))
    return out


def _privacy(plan: ReleasePlan) -> dict[str, Any]:
    composition = plan.composition
    return {
        "definition": DEFINITION,
        "epsilon": composition.epsilon,
        "delta": composition.delta,
        "rho": composition.rho,
        "conversion": (
            "zCDP to (epsilon, delta) by the tight conversion of Canonne, Kamath and Steinke (2020)"
            if composition.rho > 0
            else "none: pure and approximate DP parts add up"
        ),
        "privacy_unit": {"column": plan.columns.privacy_unit, "time_scope": plan.facts.time_scope},
        "neighbouring_relation": "add or remove all rows of one privacy unit",
    }


def _contribution_bounds(plan: ReleasePlan) -> dict[str, Any]:
    return {
        "max_partitions_per_unit": plan.bounds.max_partitions_per_unit,
        "max_rows_per_unit_per_partition": plan.bounds.max_rows_per_unit_per_partition,
        "value_bounds": [
            {"metric": o.name}
            | {k: v for k, v in _measured(o).items() if k != "grid"}
            | {"source": "config"}
            for o in plan.outputs
            if _measured(o)
        ],
        "invalid_values": dict(plan.facts.invalid_values),
        "sampling": SAMPLING,
    }


def _partitions(plan: ReleasePlan) -> dict[str, Any]:
    selection = describe_selection(plan.selection, plan.selection_reuses, plan.selection_reason)
    partitions = selection | {"columns": list(plan.columns.partition_columns)}
    if isinstance(plan.selection, PublicPartitions):
        partitions["note"] = "every public key is released, with noise, even when absent"
    return partitions


def _composition(plan: ReleasePlan, cumulative: dict[str, Any] | None) -> dict[str, Any]:
    composition, facts = plan.composition, plan.facts
    return {
        "statement": composition.statement,
        "epsilon": composition.epsilon,
        "epsilon_exact": composition.epsilon_exact,  # the exact rational total (§8)
        "delta": composition.delta,
        "rho": composition.rho,
        "conversion_delta": composition.conversion_delta,
        "budget": {"epsilon": facts.budget_epsilon, "delta": facts.budget_delta},
        "cumulative": cumulative,
    }


def _data(schema: list[dict[str, str]], data_files: list[DataFile]) -> dict[str, Any]:
    return {
        "format": "parquet",
        "schema": schema,
        "row_count": sum(f.rows for f in data_files),
        "files": [
            {"path": f.path, "bytes": f.bytes, "sha256": f.sha256, "rows": f.rows}
            for f in data_files
        ],
    }


def _finished(manifest: dict[str, Any], governance: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest with its governance record (if any), validated against the allow-list."""
    if governance is not None:
        manifest["governance"] = governance
    validate_manifest(manifest)
    return manifest


def _identity(identity: ReleaseIdentity, description: str | None) -> dict[str, Any]:
    return {
        "name": identity.name,
        "version": identity.version,
        "run_id": identity.run_id,
        "created_at": identity.created_at,
        "data_period": identity.data_period,
        "supersedes": identity.supersedes,
        "description": description,
    }


def build_manifest(
    plan: ReleasePlan,
    identity: ReleaseIdentity,
    schema: list[dict[str, str]],
    data_files: list[DataFile],
    cumulative: dict[str, Any] | None = None,
    *,
    governance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of one release, validated against the allow-list.

    ``schema`` and ``data_files`` describe the published (noisy) files only; everything
    else is configuration and the plan derived from it (docs/privacy.md §9).
    ``governance`` is the policy tier and registry record (``pipelines.policy``, docs/privacy.md
    §12), if any.
    """
    description = describe_plan(plan)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "release": _identity(identity, plan.facts.description),
        "privacy": _privacy(plan),
        "contribution_bounds": _contribution_bounds(plan),
        "partitions": _partitions(plan),
        "columns": _columns(plan),
        "mechanisms": description["mechanisms"],
        "composition": _composition(plan, cumulative),
        "group_privacy": description["group_privacy"],
        "confidence_level": plan.confidence_level,
        "software": software_versions(),
        "config_sha256": plan.facts.config_sha256,
        "data": _data(schema, data_files),
    }
    return _finished(manifest, governance)


@dataclass(frozen=True)
class StagedTable:
    """One table of a release as staged: its directory, schema and checked files."""

    name: str
    directory: str
    schema: list[dict[str, str]]
    data_files: list[DataFile]


def _exact_sum(values: list[str]) -> str:
    """The exact sum of rational strings ("1", "3/10"); a double's text if one is not."""
    try:
        return str(sum((Fraction(v) for v in values), Fraction(0)))
    except ValueError:
        return str(math.fsum(float(v) for v in values))


def _release_composition(plans: ReleasePlans, cumulative: dict[str, Any] | None) -> dict[str, Any]:
    """The release-level composition: the tables' sum, each table's share, the ledger."""
    compositions = [t.plan.composition for t in plans.tables]
    totals = describe_release_totals(plans)
    return {
        "statement": totals["statement"],
        "epsilon": plans.epsilon,
        "epsilon_exact": _exact_sum([c.epsilon_exact for c in compositions]),
        "delta": plans.delta,
        "rho": math.fsum(c.rho for c in compositions),
        "conversion_delta": math.fsum(c.conversion_delta for c in compositions),
        "budget": totals["budget"],
        "tables": totals["tables"],
        "cumulative": cumulative,
    }


def _table_section(plan: ReleasePlan, staged: StagedTable) -> dict[str, Any]:
    """One table's sections, as a single-table manifest has them."""
    return {
        "name": staged.name,
        "path": staged.directory,
        "contribution_bounds": _contribution_bounds(plan),
        "partitions": _partitions(plan),
        "columns": _columns(plan),
        "mechanisms": describe_plan(plan)["mechanisms"],
        "composition": {k: v for k, v in _composition(plan, None).items() if k != "cumulative"},
        "data": _data(staged.schema, staged.data_files),
    }


def build_release_manifest(
    plans: ReleasePlans,
    identity: ReleaseIdentity,
    staged: list[StagedTable],
    cumulative: dict[str, Any] | None = None,
    *,
    governance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The one manifest of a release of several tables, validated against the allow-list.

    The privacy and composition sections state the release total (the sum over tables,
    docs/privacy.md §8); each table's section has its bounds, selection, columns,
    mechanisms, its own composition and its files.
    """
    first = plans.tables[0].plan
    privacy = _privacy(first) | {
        "epsilon": plans.epsilon,
        "delta": plans.delta,
        "rho": math.fsum(t.plan.composition.rho for t in plans.tables),
        "conversion": "per table (tables[].composition); the tables' (epsilon, delta) add up",
    }
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "release": _identity(identity, first.facts.description),
        "privacy": privacy,
        "composition": _release_composition(plans, cumulative),
        "group_privacy": group_privacy_rows(group_privacy_table(plans.epsilon, plans.delta)),
        "confidence_level": first.confidence_level,
        "software": software_versions(),
        "config_sha256": plans.spec.config_sha256,
        "tables": [_table_section(t.plan, s) for t, s in zip(plans.tables, staged, strict=True)],
    }
    return _finished(manifest, governance)


@dataclass(frozen=True)
class TableView:
    """One released table of a manifest, shaped as a single-table manifest (the release's
    sections with the table's), and its directory inside the version."""

    name: str | None
    directory: str
    manifest: dict[str, Any]


def table_views(manifest: dict[str, Any]) -> list[TableView]:
    """Every table of a manifest: one (``data/``) or each of ``tables``, in order."""
    if "tables" not in manifest:
        return [TableView(None, "data", manifest)]
    shared = {k: v for k, v in manifest.items() if k != "tables"}
    views = []
    for table in manifest["tables"]:
        sections = {k: v for k, v in table.items() if k not in ("name", "path", "composition")}
        views.append(TableView(table["name"], table["path"], shared | sections))
    return views
