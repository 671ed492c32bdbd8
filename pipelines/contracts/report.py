"""Operator reports and the Great Expectations runner shared by both contracts.

Privacy invariant: validation results and figures are statistics without noise, so they
go to ``<output_root>/<release>/_operator/<run_id>/`` only (owner-only permissions), never
into staging, the manifest or the release (docs/privacy.md §9).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pyspark.sql import DataFrame

from pipelines.errors import InputContractError, OutputContractError

log = logging.getLogger("dprelease")

OPERATOR = "_operator"
INPUT_REPORT = "input_validation.json"
OUTPUT_REPORT = "output_validation.json"
SUMMARY = "summary.json"
ROWS = "rows"
ROWS_KEPT = "rows_kept"
# No partial lists of unexpected values: reports hold counts, never data values or keys.
_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 0}


@dataclass(frozen=True)
class Verdict:
    """GX validation results of one contract step, and the error they prove (None: passed)."""

    contract: Literal["input", "output"]
    results: dict[str, dict[str, Any]]
    error: InputContractError | OutputContractError | None = None


def operator_dir(release: Path, run_id: str) -> Path:
    """The run's operator-only directory (created, owner-only): validation results, summary.

    Never inside staging (staging becomes the public version) and never read by consumers.
    """
    root = release / OPERATOR
    root.mkdir(mode=0o700, exist_ok=True)
    path = root / run_id
    path.mkdir(mode=0o700, exist_ok=False)
    return path


def write_operator_file(directory: Path, name: str, content: Mapping[str, Any]) -> None:
    """Write one operator-only JSON file (mode 0600)."""
    path = directory / name
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2, default=str)
        handle.write("\n")


def validate(
    batch_frame: DataFrame | pd.DataFrame, expectations: list[Any], name: str
) -> dict[str, Any]:
    """Validate one batch with a suite in an ephemeral GX context; the result as JSON."""
    # Imported here: Great Expectations takes seconds to import; `plan` and `schema` skip it.
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # In memory only: no docs site, no progress bars on stderr.
    settings = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=settings)
    if isinstance(batch_frame, pd.DataFrame):
        asset: Any = context.data_sources.add_pandas(name).add_dataframe_asset(name)
    else:
        asset = context.data_sources.add_spark(name).add_dataframe_asset(name)
    definition = asset.add_batch_definition_whole_dataframe(name)
    batch = definition.get_batch(batch_parameters={"dataframe": batch_frame})
    suite = gx.ExpectationSuite(name=name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    validation: Any = batch.validate(suite, result_format=_RESULT_FORMAT)
    result: dict[str, Any] = validation.to_json_dict()
    return result


def failed_metas(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Metas of the failed expectations of a GX validation result."""
    return [
        dict(item["expectation_config"].get("meta") or {})
        for item in result.get("results", [])
        if not item.get("success")
    ]


def figures_frame(figures: Mapping[str, int | float]) -> pd.DataFrame:
    """The figures as a one-row pandas frame (what the figures suites validate)."""
    return pd.DataFrame([dict(figures)])


class OperatorReport:
    """The run's operator-only record: GX validation results and a summary with counts.

    Every file is rewritten as soon as it changes, so a failed run leaves its evidence.
    """

    def __init__(self, directory: Path, run_id: str, release: str, data_period: str) -> None:
        self.directory = directory
        self.input: dict[str, dict[str, Any]] = {}
        self.summary: dict[str, Any] = {
            "run_id": run_id,
            "release": release,
            "data_period": data_period,
            "status": "running",
            "note": "operator-only: counts without noise; never publish this directory",
        }

    def record(self, verdict: Verdict) -> None:
        """Save a contract step's GX results, then raise its error if it failed."""
        if verdict.contract == "input":
            self.input |= verdict.results
            self._write(INPUT_REPORT, self.input)
        else:
            self._write(OUTPUT_REPORT, verdict.results)
            self.summary["output_contract"] = "failed" if verdict.error else "passed"
        if verdict.error is not None:
            raise verdict.error

    def finish(self, status: str, version: str | None = None) -> None:
        """Write the summary with the run's final status (and the published version)."""
        self.summary["status"] = status
        if version is not None:
            self.summary["version"] = version
        self._write(SUMMARY, self.summary)

    def _write(self, name: str, content: Mapping[str, Any]) -> None:
        try:
            write_operator_file(self.directory, name, content)
        except OSError as error:
            log.warning("cannot write operator file %s (%s)", name, error.strerror or error)
