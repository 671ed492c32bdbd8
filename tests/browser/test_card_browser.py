"""The release card in a real headless Chromium (Debian's, driven by Playwright).

A real release is published (local Spark, private selection), then its card.html is
opened from disk: no console error or warning, no page error, no request other than the
card itself (it is self-contained), and a screenshot of each chart holds the card's value
colour in quantity (the chart was drawn, not an empty box). `scripts/install-browser.sh`
installs the browser (CI runs it); without it the test is skipped locally and fails in CI.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from pipelines.card_charts import VALUE_COLOUR
from pipelines.config import config_from_mapping, release_from_mapping
from pipelines.job import run_release
from tests.support import EVENTS, audit_config, write_rows

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("DPRELEASE_CHROMIUM", "/usr/bin/chromium")
# As the machine's closed network needs: no background connections, no first-run work.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _browser_or_skip() -> str:
    if shutil.which(CHROMIUM) or Path(CHROMIUM).is_file():
        return CHROMIUM
    message = f"no Chromium at {CHROMIUM}: run scripts/install-browser.sh"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _colour_pixels(png: bytes, colour: str, tolerance: int = 40) -> int:
    """Pixels within ``tolerance`` (per channel) of ``colour`` in a PNG screenshot."""
    import numpy as np
    from PIL import Image

    target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int64)
    return int((np.abs(pixels - target) <= tolerance).all(axis=-1).sum())


SINGLE_CHARTS = {
    "chart-metric-count",
    "chart-metric-sum_value",
    "chart-metric-mean_value",
    "chart-keep",
    "chart-budget",
    "chart-spend",
}
# A release of two tables: each table's charts carry its name, the spend chart is shared.
TABLES_CHARTS = {
    "chart-metric-counts-count",
    "chart-keep-counts",
    "chart-budget-counts",
    "chart-metric-means-mean_value",
    "chart-keep-means",
    "chart-budget-means",
    "chart-spend",
}


def _published_card(spark: SparkSession, tmp_path: Path, tables: bool) -> Path:
    rows: list[dict[str, Any]] = [
        {"user": f"u{k}-{u}", "key": f"key-{k}", "value": float((u + k) % 10)}
        for k in range(6)
        for u in range(30 + 10 * k)
    ]
    data = write_rows(tmp_path / "input" / "events.parquet", rows, EVENTS)
    raw = audit_config(tmp_path / "releases", data)
    if not tables:
        return Path(run_release(spark, config_from_mapping(raw)).path) / "card.html"
    shared = {k: raw[k] for k in ("release", "input", "privacy_unit", "budget", "ledger")}
    metrics = {"counts": [{"metric": "count"}], "means": raw["metrics"][2:]}
    spec = release_from_mapping(
        shared
        | {
            "tables": [
                {
                    "name": name,
                    "partition_columns": ["key"],
                    "contribution_bounds": raw["contribution_bounds"],
                    "metrics": table_metrics,
                }
                for name, table_metrics in metrics.items()
            ]
        }
    )
    return Path(run_release(spark, spec).path) / "card.html"


@pytest.mark.parametrize("tables", [False, True], ids=["one table", "two tables"])
def test_the_card_loads_cleanly_and_shows_its_charts(
    spark: SparkSession, tmp_path: Path, tables: bool
) -> None:
    executable = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    card = _published_card(spark, tmp_path, tables)
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on(
                "console",
                lambda m: (
                    problems.append(f"{m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(card.as_uri(), wait_until="load")
            assert page.title().startswith("audit v0001")
            figures = page.locator("figure")
            names = [figures.nth(i).get_attribute("id") for i in range(figures.count())]
            assert len(set(names)) == len(names)  # no identifier twice
            assert set(names) >= (TABLES_CHARTS if tables else SINGLE_CHARTS)
            for name in names:
                chart = page.locator(f"#{name} svg")
                box = chart.bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 80, name
                drawn = _colour_pixels(chart.screenshot(), VALUE_COLOUR)
                assert drawn > 150, f"{name}: {drawn} pixels of the value colour"
            shot = page.screenshot(full_page=True)
            (tmp_path / "card.png").write_bytes(shot)
            assert len(shot) > 20_000
            assert page.locator("table").count() >= 4
            assert "±" in page.inner_text("body")
        finally:
            browser.close()
    assert problems == []
    assert requests == [card.as_uri()]
