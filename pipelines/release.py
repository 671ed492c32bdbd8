"""The release directory: staging, atomic publication, reading and verification.

Layout: ``<output_root>/<release_name>/vNNNN/{data/part-*.parquet, manifest.json, README.md}``
(a release of several tables: ``tables/<table>/part-*.parquet`` instead of ``data/``) and
``_staging/<run_id>/`` (never read by consumers). Invariants: a version directory
appears only by one atomic rename of a complete staging directory whose manifest was
written last; a version without a manifest does not exist; versions are never rewritten.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.derivation import unreliable
from pipelines.errors import PublishError
from pipelines.manifest import DataFile, TableView, table_views, validate_manifest
from pipelines.metric_kinds import kind_of
from pipelines.released import released_name

VERSION_PATTERN = re.compile(r"^v(\d{4,})$")
STAGING = "_staging"
MANIFEST = "manifest.json"
README = "README.md"
# Digests of the version's manifest and README (and card), written after the manifest.
CHECKSUMS = "SHA256SUMS"
# The release card (pipelines.card), covered by the checksum file when present.
CARD = "card.html"


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


# The physical layout of a release is a function of its released rows only
# (docs/privacy.md §9): rows sorted by the key columns, a file count and row groups
# computed from the released row count, fixed file names, one writer configuration.
ROWS_PER_FILE = 1_000_000
ROWS_PER_ROW_GROUP = 131_072


def layout_release(noisy: Path, data: Path, schema: pa.Schema, keys: list[str]) -> int:
    """Write the released table from ``noisy`` (any layout) to ``data`` in the canonical
    layout; returns the released row count.

    Invariant: for two runs whose released tables are equal as sets of rows, the bytes
    of every file under ``data`` are equal, whatever the order, number or sizes of the
    files in ``noisy`` (which depend on how Spark scheduled the private input). The
    released table is public (noisy), so reading it on the driver is no privacy matter;
    it must fit in driver memory (see README, limits).
    """
    parts = sorted(p for p in noisy.glob("*.parquet") if not p.name.startswith((".", "_")))
    tables = [pq.read_table(p).select(schema.names).cast(schema) for p in parts]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    # One row per released partition, in key order (nulls cannot occur in keys).
    table = table.sort_by([(k, "ascending") for k in keys]) if table.num_rows else table
    rows: int = table.num_rows
    files = max(1, -(-rows // ROWS_PER_FILE))
    data.mkdir(parents=True, exist_ok=False)
    for index in range(files):
        chunk = table.slice(index * ROWS_PER_FILE, ROWS_PER_FILE)
        pq.write_table(
            chunk,
            data / f"part-{index:05d}-of-{files:05d}.parquet",
            row_group_size=ROWS_PER_ROW_GROUP,
            compression="zstd",
            write_statistics=True,
        )
    return rows


def describe_schema(schema: pa.Schema) -> list[dict[str, str]]:
    """The schema as the manifest records it: name and Arrow type per column."""
    return [{"name": field.name, "type": str(field.type)} for field in schema]


def check_data_files(data: Path, expected: pa.Schema, directory: str = "data") -> list[DataFile]:
    """Checksums and row counts of the part files; each file's schema must be ``expected``.
    ``directory``: the files' directory inside the version, as their listed paths start.

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
                path=f"{directory}/{file.name}",
                bytes=file.stat().st_size,
                sha256=_sha256(file),
                rows=footer.num_rows,
            )
        )
    return out


def write_text_last(staging: Path, manifest: dict[str, Any], readme: str) -> dict[str, str]:
    """Write README.md, then manifest.json (the commit marker), then the checksum file.

    Returns the SHA-256 of the manifest and the README, as the ledger records them.
    """
    (staging / README).write_text(readme, encoding="utf-8")
    temporary = staging / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(temporary, staging / MANIFEST)
    digests = text_digests(staging)
    listed = dict(digests)
    if (staging / CARD).is_file():
        listed[CARD] = _sha256(staging / CARD)
    (staging / CHECKSUMS).write_text(
        "".join(f"{digest}  {name}\n" for name, digest in listed.items()), encoding="utf-8"
    )
    return digests


def text_digests(version_dir: Path) -> dict[str, str]:
    """SHA-256 of a version's manifest and README (missing files are absent)."""
    return {
        name: _sha256(version_dir / name)
        for name in (MANIFEST, README)
        if (version_dir / name).is_file()
    }


def recorded_digests(version_dir: Path) -> dict[str, str]:
    """The digests the version's checksum file records (empty if it has none)."""
    path = version_dir / CHECKSUMS
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text("utf-8").splitlines():
        digest, _, name = line.partition("  ")
        out[name] = digest
    return out


@contextmanager
def publish_lock(release: Path) -> Iterator[None]:
    """Hold the release's publish lock (an exclusive ``flock`` on a local file system).

    Invariant: between taking and releasing it, no other dprelease process publishes a
    version of this release, so a check made inside holds at the rename.
    """
    release.mkdir(parents=True, exist_ok=True)
    # The lock is on the release directory itself: no lock file appears in the layout.
    handle = os.open(release, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing the descriptor releases the lock


def publish(
    staging: Path,
    release: Path,
    stamp: Callable[[str], None],
    still_current: Callable[[], None] = lambda: None,
) -> Version:
    """Atomically rename the complete staging directory to the next free version.

    Under the release's publish lock: ``still_current()`` re-checks what the run decided
    at its start (it raises to stop the publication), then ``stamp(version)`` writes the
    manifest (last) for that version label into staging, then one rename publishes.
    Invariant: concurrent publishers never share or overwrite a version; the rename
    either makes the whole version visible or nothing.
    """
    with publish_lock(release):
        still_current()
        number = next_version_number(release)
        target = release / f"v{number:04d}"
        stamp(target.name)
        if not (staging / MANIFEST).is_file():
            raise PublishError("refusing to publish a staging directory without a manifest")
        try:
            # rename onto an existing, non-empty directory fails: it never merges.
            os.rename(staging, target)
        except OSError as error:
            raise PublishError(f"cannot publish {target}: {error.strerror or error}") from None
        return Version(target, number)


def next_version_number(release: Path) -> int:
    """One more than the highest version directory present (complete or not)."""
    numbers = [0]
    if release.is_dir():
        for child in release.iterdir():
            match = VERSION_PATTERN.match(child.name)
            if match:
                numbers.append(int(match.group(1)))
    return max(numbers) + 1


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
    if not present or _sha256(version_dir / CARD) != recorded:
        return [f"{CARD}: missing, or edited since publication (SHA-256 differs from {CHECKSUMS})"]
    return []


def unpublished_version_dirs(release: Path) -> list[Path]:
    """Version directories without a manifest: only a deletion can make one (a crashed
    publication never renames an incomplete staging directory)."""
    if not release.is_dir():
        return []
    return sorted(
        child
        for child in release.iterdir()
        if VERSION_PATTERN.match(child.name) and not (child / MANIFEST).is_file()
    )


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
            f"{directory}: {total} rows in files, manifest says {manifest['data']['row_count']}"
        )
    return problems


def check_values(table: pa.Table, manifest: dict[str, Any]) -> list[str]:
    """Value-level checks of released data against its manifest."""
    problems = []
    for column in manifest["columns"]:
        name = column["name"]
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
