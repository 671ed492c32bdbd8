"""The release directory: staging, atomic publication and reading (``pipelines.verification``
checks a published version).

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.errors import PublishError
from pipelines.manifest import DataFile

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


def file_sha256(path: Path) -> str:
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


def _read_parts(directory: Path) -> pa.Table | None:
    """Every Parquet part file Spark wrote under ``directory``, as one table (None: none)."""
    parts = sorted(p for p in directory.glob("*.parquet") if not p.name.startswith((".", "_")))
    tables = [pq.read_table(p) for p in parts]
    return pa.concat_tables(tables) if tables else None


def layout_release(
    noisy: Path, data: Path, schema: pa.Schema, keys: list[str], joined: Sequence[Path] = ()
) -> int:
    """Write the released table from ``noisy`` (any layout) to ``data`` in the canonical
    layout, each of the ``joined`` tables' columns joined on the keys (the quantile trees
    of the same released partitions); returns the released row count.

    Invariant: for two runs whose released tables are equal as sets of rows, the bytes
    of every file under ``data`` are equal, whatever the order, number or sizes of the
    files in ``noisy`` (which depend on how Spark scheduled the private input). The
    released table is public (noisy), so reading it on the driver is no privacy matter;
    it must fit in driver memory (see README, limits).
    """
    found = _read_parts(noisy)
    if found is None or found.num_rows == 0:
        table = schema.empty_table()
    else:
        for directory in joined:
            extra = _read_parts(directory)
            if extra is None:
                raise PublishError(f"staging: {directory.name} holds no Parquet files")
            found = found.join(extra, keys, join_type="left outer")
        table = found.select(schema.names).cast(schema)
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
                sha256=file_sha256(file),
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
        listed[CARD] = file_sha256(staging / CARD)
    (staging / CHECKSUMS).write_text(
        "".join(f"{digest}  {name}\n" for name, digest in listed.items()), encoding="utf-8"
    )
    return digests


def text_digests(version_dir: Path) -> dict[str, str]:
    """SHA-256 of a version's manifest and README (missing files are absent)."""
    return {
        name: file_sha256(version_dir / name)
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
