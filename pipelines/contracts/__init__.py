"""Data contracts: Great Expectations suites on the way in and on the way out.

Input contract (``input``, built from the plan's ``ContractRules`` and columns): the
required columns exist with usable types; privacy units and partition keys are not null;
measured values are finite. Output contract (``output``, run on the staged Parquet files
before the manifest is written): the release schema, unique keys, finite values,
intervals around values, and each metric kind's promises. ``report`` holds the operator
report and the GX runner both use.

Privacy invariants: the figures are statistics without noise, so they go to the operator
log and to ``<output_root>/<release>/_operator/<run_id>/`` only (owner-only permissions),
never into the staging directory, the manifest or the release. Error messages name rules,
fields and columns, never a value or a key from the data (docs/privacy.md §9).
"""

from __future__ import annotations

from pipelines.contracts.input import (
    ObservedInput,
    check_input_schema,
    input_summary,
    judge_input,
    observe_input,
    offending,
    rows_meeting_contract,
)
from pipelines.contracts.output import check_output_contract
from pipelines.contracts.report import (
    INPUT_REPORT,
    OPERATOR,
    OUTPUT_REPORT,
    ROWS,
    ROWS_KEPT,
    SUMMARY,
    OperatorReport,
    Verdict,
    operator_dir,
    write_operator_file,
)

__all__ = [
    "INPUT_REPORT",
    "OPERATOR",
    "OUTPUT_REPORT",
    "ROWS",
    "ROWS_KEPT",
    "SUMMARY",
    "ObservedInput",
    "OperatorReport",
    "Verdict",
    "check_input_schema",
    "check_output_contract",
    "input_summary",
    "judge_input",
    "observe_input",
    "offending",
    "operator_dir",
    "rows_meeting_contract",
    "write_operator_file",
]
