"""Fixtures of the privacy verification suite (tests/privacy).

Executors are separate Python processes: every test-only module whose objects end up in
a Spark UDF closure (noise sources, broken variants) is pickled by value, so executors
never import tests/.
"""

from __future__ import annotations

import pytest
from pyspark import cloudpickle

import pipelines.config
import tests.doubles
import tests.privacy.broken
import tests.privacy.recording

for _module in (tests.doubles, tests.privacy.broken, tests.privacy.recording):
    cloudpickle.register_pickle_by_value(_module)  # type: ignore[no-untyped-call]


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
