"""The release manifest: the proof of the privacy guarantee, and its allow-list.

Invariants: the manifest holds configuration, the plan derived from it, and values
computed from noisy output only (released row count, file checksums); never a true
count, a dropped-row count, a run time or a data-derived bound. Every key is on the
allow-list in ``schemas/manifest.schema.json`` (``additionalProperties: false``).
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from importlib.resources import files
from typing import Any

import jsonschema

from pipelines.plan import PublicPartitions, ReleasePlan, describe_plan, describe_selection

FORMAT_VERSION = 1
DEFINITION = (
    "approximate differential privacy ((epsilon, delta)-DP) under add/remove neighbours: "
    "datasets that differ by all rows of one privacy unit"
)
SAMPLING = (
    "uniform without replacement, per unit: partitions and rows ranked by a keyed 64-bit "
    "hash (per-run secret salt from the OS CSPRNG, unit, key, row content)"
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


def config_digest(plan: ReleasePlan) -> str:
    """SHA-256 of the canonical JSON of the config (identifies the job, not the data)."""
    canonical = json.dumps(plan.config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


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


def _columns(plan: ReleasePlan) -> list[dict[str, Any]]:
    """One entry per released column group (value, std, ci_low, ci_high)."""
    post = plan.config.post_processing
    out = []
    for output in plan.outputs:
        parts = [
            name
            for name in (output.value_source, output.count_source, output.square_source)
            if name is not None
        ]
        steps = []
        if output.metric in ("count", "privacy_id_count") and post.clamp_negative_counts:
            steps.append("negative values reported as 0")
        if output.metric == "mean":
            steps.append("mid + grid * noisy normalized sum / (2 * max(1, noisy count)), clamped")
        if output.metric == "variance":
            steps.append("from noisy normalized sums of values and squares, clamped to >= 0")
        if output.metric in ("mean", "variance") and post.decimals is not None:
            steps.append(f"rounded to {post.decimals} decimals")
        entry: dict[str, Any] = {
            "name": output.name,
            "metric": output.metric,
            "mechanisms": parts,
            "budget_share": output.budget_share,
            "post_processing": steps,
            "columns": [
                output.name,
                f"{output.name}_std",
                f"{output.name}_ci_low",
                f"{output.name}_ci_high",
            ],
            "confidence_interval": INTERVALS,
        }
        if output.encoding is not None:
            entry |= {
                "column": output.encoding.column,
                "lower": output.encoding.lower,
                "upper": output.encoding.upper,
                "grid": output.encoding.grid.step,
            }
        out.append(entry)
    return out


def build_manifest(
    plan: ReleasePlan,
    identity: ReleaseIdentity,
    schema: list[dict[str, str]],
    data_files: list[DataFile],
    cumulative: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of one release, validated against the allow-list.

    ``schema`` and ``data_files`` describe the published (noisy) files only.
    """
    config = plan.config
    description = describe_plan(plan)
    composition = plan.composition
    partitions = describe_selection(plan.selection) | {"columns": list(config.partition_columns)}
    if isinstance(plan.selection, PublicPartitions):
        partitions["note"] = "every public key is released, with noise, even when absent"
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "release": {
            "name": identity.name,
            "version": identity.version,
            "run_id": identity.run_id,
            "created_at": identity.created_at,
            "data_period": identity.data_period,
            "supersedes": identity.supersedes,
            "description": config.release.description,
        },
        "privacy": {
            "definition": DEFINITION,
            "epsilon": composition.epsilon,
            "delta": composition.delta,
            "rho": composition.rho,
            "conversion": (
                "zCDP to (epsilon, delta) by the tight conversion of Canonne, Kamath and "
                "Steinke (2020)"
                if composition.rho > 0
                else "none: pure and approximate DP parts add up"
            ),
            "privacy_unit": {
                "column": config.privacy_unit.column,
                "time_scope": config.privacy_unit.time_scope,
            },
            "neighbouring_relation": "add or remove all rows of one privacy unit",
        },
        "contribution_bounds": {
            "max_partitions_per_unit": plan.bounds.max_partitions_per_unit,
            "max_rows_per_unit_per_partition": plan.bounds.max_rows_per_unit_per_partition,
            "value_bounds": [
                {
                    "metric": o.name,
                    "column": o.encoding.column,
                    "lower": o.encoding.lower,
                    "upper": o.encoding.upper,
                    "source": "config",
                }
                for o in plan.outputs
                if o.encoding is not None
            ],
            "invalid_values": config.invalid_values,
            "sampling": SAMPLING,
        },
        "partitions": partitions,
        "columns": _columns(plan),
        "mechanisms": description["mechanisms"],
        "composition": {
            "statement": composition.statement,
            "epsilon": composition.epsilon,
            "epsilon_exact": composition.epsilon_exact,  # the exact rational total (§8)
            "delta": composition.delta,
            "rho": composition.rho,
            "conversion_delta": composition.conversion_delta,
            "budget": {"epsilon": config.budget.epsilon, "delta": config.budget.delta},
            "cumulative": cumulative,
        },
        "group_privacy": description["group_privacy"],
        "confidence_level": config.confidence_level,
        "software": software_versions(),
        "config_sha256": config_digest(plan),
        "data": {
            "format": "parquet",
            "schema": schema,
            "row_count": sum(f.rows for f in data_files),
            "files": [
                {"path": f.path, "bytes": f.bytes, "sha256": f.sha256, "rows": f.rows}
                for f in data_files
            ],
        },
    }
    validate_manifest(manifest)
    return manifest


def render_readme(manifest: dict[str, Any]) -> str:
    """A human README generated from the manifest alone (so the two cannot disagree)."""
    release, privacy = manifest["release"], manifest["privacy"]
    bounds, partitions = manifest["contribution_bounds"], manifest["partitions"]
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
    lines += [
        "## Privacy guarantee",
        "",
        f"- ({privacy['epsilon']:.6g}, {privacy['delta']:.3g})-differential privacy for each "
        f"privacy unit (`{privacy['privacy_unit']['column']}`: "
        f"{privacy['privacy_unit']['time_scope']}).",
        f"- Neighbouring datasets: {privacy['neighbouring_relation']}.",
        f"- Composition: {manifest['composition']['statement']}",
        f"- Conversion: {privacy['conversion']}.",
        f"- Each unit contributes to at most {bounds['max_partitions_per_unit']} partition(s) "
        f"and at most {bounds['max_rows_per_unit_per_partition']} row(s) per partition.",
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
        "## Partitions",
        "",
        f"Keys ({', '.join(partitions['columns'])}) released by: {partitions['mechanism']}"
        + (
            f" (epsilon {partitions['epsilon']:.6g}, delta {partitions['delta']:.3g})."
            if partitions["mechanism"] != "public"
            else f"; provenance: {partitions.get('provenance', '')}."
        ),
        "",
        "## Columns",
        "",
        "| column | statistic | value bounds | grid | noise std (per partition) |",
        "|---|---|---|---|---|",
    ]
    stds = {m["name"]: m["std"] for m in manifest["mechanisms"]}
    for column in manifest["columns"]:
        value_bounds = f"[{column['lower']:g}, {column['upper']:g}]" if "lower" in column else "-"
        std = stds.get(column["mechanisms"][0], float("nan"))
        noise = (
            f"{std:.4g}"
            if column["metric"] in ("count", "privacy_id_count", "sum")
            else f"{std / 2:.4g} / count (see `{column['name']}_std`)"
        )
        lines.append(
            f"| `{column['name']}` | {column['metric']} | {value_bounds} | "
            f"{column.get('grid', 1.0):g} | {noise} |"
        )
    lines += [
        "",
        f"Each value comes with `_std`, `_ci_low` and `_ci_high` columns: a "
        f"{manifest['confidence_level']:.0%} {INTERVALS}.",
        "",
        f"Rows: {manifest['data']['row_count']} in {len(manifest['data']['files'])} Parquet "
        "file(s) under `data/`; checksums in `manifest.json`.",
        "",
    ]
    return "\n".join(lines)
