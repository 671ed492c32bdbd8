"""The release directory: staging, atomic publication, reading and verification.

Layout: ``<output_root>/<release_name>/vNNNN/{data/part-*.parquet, manifest.json, README.md}``
and ``_staging/<run_id>/`` (never read by consumers). Invariants: a version directory
appears only by one atomic rename of a complete staging directory whose manifest was
written last; a version without a manifest does not exist; versions are never rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.manifest import DataFile, validate_manifest

VERSION_PATTERN = re.compile(r"^v(\d{4,})$")
STAGING = "_staging"
MANIFEST = "manifest.json"


class PublishError(RuntimeError):
    """The release could not be published; nothing was published."""


@dataclass(frozen=True)
class Version:
    """A published version: its directory and number."""

    path: Path
    number: int

    @property
    def name(self) -> str:
        """The version label, e.g. v0003."""
        return self.path.name


def release_dir(output_root: str | Path, name: str) -> Path:
    """The directory that holds every version of one release."""
    return Path(output_root) / name


def published_versions(release: Path) -> list[Version]:
    """Versions that exist (have a manifest), oldest first."""
    if not release.is_dir():
        return []
    out = []
    for child in release.iterdir():
        match = VERSION_PATTERN.match(child.name)
        if match and (child / MANIFEST).is_file():
            out.append(Version(child, int(match.group(1))))
    return sorted(out, key=lambda v: v.number)


def read_manifest(version_dir: Path) -> dict[str, Any]:
    """The manifest of a published version."""
    manifest: dict[str, Any] = json.loads((version_dir / MANIFEST).read_text("utf-8"))
    return manifest


def version_for_period(release: Path, data_period: str) -> Version | None:
    """The newest published version for ``data_period``, if any."""
    matches = [
        v
        for v in published_versions(release)
        if read_manifest(v.path)["release"]["data_period"] == data_period
    ]
    return matches[-1] if matches else None


def staging_dir(release: Path, run_id: str) -> Path:
    """A fresh staging directory for one run (created, empty)."""
    path = release / STAGING / run_id
    path.mkdir(parents=True, exist_ok=False)
    return path


def discard_staging(path: Path) -> None:
    """Remove a run's staging directory (after a failure or publication)."""
    shutil.rmtree(path, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tidy_data_dir(data: Path) -> None:
    """Keep only the Parquet part files Spark wrote (drop _SUCCESS and .crc side files)."""
    for child in data.iterdir():
        if not child.name.endswith(".parquet") or child.name.startswith((".", "_")):
            child.unlink()


def describe_schema(schema: pa.Schema) -> list[dict[str, str]]:
    """The schema as the manifest records it: name and Arrow type per column."""
    return [{"name": field.name, "type": str(field.type)} for field in schema]


def check_data_files(data: Path, expected: pa.Schema) -> list[DataFile]:
    """Checksums and row counts of the part files; each file's schema must be ``expected``.

    Reads Parquet footers only. Raises PublishError on any schema difference.
    """
    files = sorted(data.glob("*.parquet"))
    out = []
    for file in files:
        footer = pq.read_metadata(file)
        actual = footer.schema.to_arrow_schema()
        if [(f.name, f.type) for f in actual] != [(f.name, f.type) for f in expected]:
            raise PublishError(
                f"{file.name}: schema {describe_schema(actual)} differs from the release schema"
            )
        out.append(
            DataFile(
                path=f"data/{file.name}",
                bytes=file.stat().st_size,
                sha256=_sha256(file),
                rows=footer.num_rows,
            )
        )
    return out


def write_text_last(staging: Path, manifest: dict[str, Any], readme: str) -> None:
    """Write README.md, then manifest.json (the commit marker) into the staging directory."""
    (staging / "README.md").write_text(readme, encoding="utf-8")
    temporary = staging / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(temporary, staging / MANIFEST)


def publish(staging: Path, release: Path, stamp: Callable[[str], None]) -> Version:
    """Atomically rename the complete staging directory to the next free version.

    ``stamp(version)`` writes the manifest (last) for that version label into staging.
    Invariant: concurrent publishers never share or overwrite a version; the rename either
    makes the whole version visible or nothing, and a taken number is re-stamped, never
    rewritten in place.
    """
    for _ in range(1000):
        number = next_version_number(release)
        target = release / f"v{number:04d}"
        stamp(target.name)
        if not (staging / MANIFEST).is_file():
            raise PublishError("refusing to publish a staging directory without a manifest")
        try:
            # rename onto an existing, non-empty directory fails: it never merges.
            os.rename(staging, target)
            return Version(target, number)
        except OSError as error:
            if target.exists():
                continue
            raise PublishError(f"cannot publish {target}: {error.strerror or error}") from None
    raise PublishError("no free version number after 1000 attempts")


def next_version_number(release: Path) -> int:
    """One more than the highest version directory present (complete or not)."""
    numbers = [0]
    if release.is_dir():
        for child in release.iterdir():
            match = VERSION_PATTERN.match(child.name)
            if match:
                numbers.append(int(match.group(1)))
    return max(numbers) + 1


def verify_release(version_dir: Path) -> list[str]:
    """Problems found in a published version (empty list: it verifies).

    Checks: the manifest exists and passes the allow-list schema; the data directory holds
    exactly the listed files with the listed sizes, SHA-256 and row counts; every file has
    the listed schema; released values sit inside their noise intervals, counts and sums on
    their grid.
    """
    problems: list[str] = []
    if not (version_dir / MANIFEST).is_file():
        return [f"{version_dir}: no {MANIFEST}: this is not a published version"]
    try:
        manifest = read_manifest(version_dir)
        validate_manifest(manifest)
    except Exception as error:
        return [f"{MANIFEST}: invalid ({type(error).__name__}: {str(error).splitlines()[0]})"]
    listed = {f["path"]: f for f in manifest["data"]["files"]}
    present = (
        {f"data/{p.name}" for p in (version_dir / "data").glob("*") if p.is_file()}
        if (version_dir / "data").is_dir()
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
        if file.stat().st_size != entry["bytes"] or _sha256(file) != entry["sha256"]:
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
            f"data: {total} rows in files, manifest says {manifest['data']['row_count']}"
        )
    return problems


def check_values(table: pa.Table, manifest: dict[str, Any]) -> list[str]:
    """Value-level checks of released data against its manifest."""
    problems = []
    for column in manifest["columns"]:
        name = column["name"]
        value = table.column(name).to_numpy(zero_copy_only=False)
        low = table.column(f"{name}_ci_low").to_numpy(zero_copy_only=False)
        high = table.column(f"{name}_ci_high").to_numpy(zero_copy_only=False)
        if not (low <= value).all() or not (value <= high).all():
            problems.append(f"{name}: a value lies outside its confidence interval")
        grid = column.get("grid", 1.0)
        if column["metric"] in ("count", "privacy_id_count", "sum"):
            units = value / grid
            if not (units == units.round()).all():
                problems.append(f"{name}: a value is not a multiple of the grid {grid}")
        for array in (value, low, high):
            if array.dtype.kind == "f" and not (abs(array) < float("inf")).all():
                problems.append(f"{name}: a value is not finite")
                break
    return problems
