"""Fixtures of the privacy verification suite (tests/privacy).

Executors are separate Python processes: every test-only module whose objects end up in
a Spark UDF closure (noise sources, broken variants) is pickled by value, so executors
never import tests/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pyspark import cloudpickle

import pipelines.config
import tests.doubles
import tests.privacy.broken
import tests.privacy.recording

for _module in (tests.doubles, tests.privacy.broken, tests.privacy.recording):
    cloudpickle.register_pickle_by_value(_module)  # type: ignore[no-untyped-call]

# A lifetime budget no test run can exhaust: every run_release reserves its spend.
HUGE_LIFETIME = {"epsilon": 1e9, "delta": 0.5}


def audit_config(output_root: Path, input_path: Path, **overrides: Any) -> dict[str, Any]:
    """A config mapping for the privacy suite; ``overrides`` replace top-level fields."""
    raw: dict[str, Any] = {
        "release": {"name": "audit", "output_root": str(output_root), "data_period": "P1"},
        "input": {"path": str(input_path)},
        "privacy_unit": {"column": "user"},
        "partition_columns": ["key"],
        "contribution_bounds": {"max_partitions_per_unit": 1, "max_rows_per_unit_per_partition": 4},
        "metrics": [
            {"metric": "count"},
            {"metric": "sum", "column": "value", "lower": 0.0, "upper": 10.0},
            {"metric": "mean", "column": "value", "lower": 0.0, "upper": 10.0},
        ],
        "budget": {"epsilon": 4.0, "delta": 1e-4},
        "ledger": {"dataset": "audit", "lifetime_budget": dict(HUGE_LIFETIME)},
    }
    return raw | overrides


@pytest.fixture
def audit_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Raise the release ceilings for audits that must *see* a violation.

    A measurable delta_p needs delta near 1e-3 at 10^4 trials, and the repartition audit
    needs the finest grid (epsilon about 1.5e6). Production keeps DELTA_CEILING and
    EPSILON_MAX (tested in tests/unit/test_config.py and test_budget_integrity.py); the
    config reads them at validation time, so this test-only override reaches no CLI.
    """
    monkeypatch.setattr(pipelines.config, "DELTA_CEILING", 1e-2)
    monkeypatch.setattr(pipelines.config, "EPSILON_MAX", 2e6)
