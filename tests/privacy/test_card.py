"""The release card depends only on the released table and the config (docs/privacy.md §9).

D and D' differ by one unit whose only row sits in a fresh key, kept with probability
below 1 (so CertainKeysOnly never releases it) and read from a differently split input:
their released tables are equal, and so must their cards be, byte for byte, once the
manifest's identity fields (a random run id and the publication time) are set aside.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import SparkSession

from pipelines.config import config_from_mapping
from pipelines.display import format_interval
from pipelines.job import run_release
from pipelines.release import read_manifest
from pipelines.verification import verify_release
from tests.doubles import CertainKeysOnly
from tests.support import EVENTS, audit_config


def _rows(keys: int = 8, units: int = 40) -> list[dict[str, Any]]:
    return [
        {"user": f"u{k}-{u}", "key": f"k{k:02d}", "value": float((u * 7 + k) % 10)}
        for k in range(keys)
        for u in range(units)
    ]


def _publish(spark: SparkSession, root: Path, rows: list[dict[str, Any]], files: int) -> Path:
    data = root / "input"
    data.mkdir(parents=True)
    table = pa.Table.from_pylist(rows, schema=EVENTS)
    step = -(-table.num_rows // files)
    for index in range(files):
        pq.write_table(table.slice(index * step, step), data / f"part-{index}.parquet")
    config = config_from_mapping(audit_config(root / "releases", data))
    return Path(run_release(spark, config, source=CertainKeysOnly()).path)


def _card_without_identity(version: Path) -> bytes:
    """The card's bytes with the manifest's run id and publication time blanked."""
    release = read_manifest(version)["release"]
    card = (version / "card.html").read_bytes()
    for field in ("run_id", "created_at"):
        card = card.replace(str(release[field]).encode(), b"IDENTITY")
    return card


def test_card_bytes_depend_only_on_the_released_table_and_config(
    spark: SparkSession, tmp_path: Path
) -> None:
    base = _rows()
    newcomer = [{"user": "newcomer", "key": "a-fresh-key", "value": 9.0}]
    d = _publish(spark, tmp_path / "d", base + newcomer, files=5)
    d_prime = _publish(spark, tmp_path / "d_prime", base, files=1)
    assert pq.read_table(d / "data").equals(pq.read_table(d_prime / "data"))
    assert _card_without_identity(d) == _card_without_identity(d_prime)
    card = (d / "card.html").read_text(encoding="utf-8")
    # Released keys are on the card; the suppressed one is not; nothing is loaded.
    assert "k00" in card and "a-fresh-key" not in card and "newcomer" not in card
    assert "<script" not in card
    # No reference to anything outside the page (namespace URIs are names, not loads).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)|url\(\s*["']?(https?:|//)""", card)
    assert "default-src 'none'" in card


def test_verify_notices_an_edited_card(spark: SparkSession, tmp_path: Path) -> None:
    version = _publish(spark, tmp_path / "r", _rows(keys=3), files=1)
    assert verify_release(version) == []
    card = version / "card.html"
    card.write_text(card.read_text(encoding="utf-8").replace("k00", "k99"), encoding="utf-8")
    problems = verify_release(version)
    assert problems and all("card.html" in p for p in problems)
    card.unlink()
    assert any("card.html: missing" in p for p in verify_release(version))


def test_card_holds_released_values_at_display_precision(
    spark: SparkSession, tmp_path: Path
) -> None:
    version = _publish(spark, tmp_path / "r", _rows(keys=3), files=1)
    card = (version / "card.html").read_text(encoding="utf-8")
    manifest = read_manifest(version)
    table = pq.read_table(version / "data").to_pylist()
    # Zero noise: counts are exact (40 units, one row each), shown with their half-width.
    half = manifest["mechanisms"][0]["ci_half_width"]
    assert f"40 ± {half:.0f}" in card
    assert {row["count"] for row in table} == {40}
    # Display rounding: the charts carry no number with three or more decimals, and the
    # table shows each mean as format_interval does, never its full double.
    charts = re.findall(r"<svg.*?</svg>", card, re.DOTALL)
    assert len(charts) >= 4
    assert not any(re.search(r"\d\.\d{3}", chart) for chart in charts)
    for row in table:
        assert repr(row["mean_value_std"]) not in card
        shown = format_interval(row["mean_value"], row["mean_value_ci_low"],
                                row["mean_value_ci_high"])  # fmt: skip
        assert f">{shown}<" in card
    assert json.loads((version / "manifest.json").read_text())["composition"]["epsilon_exact"]
