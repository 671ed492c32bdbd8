"""The ledger contract suite's fixture: one ledger per backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.ledger import LedgerStore
from tests.ledger_backends import BACKENDS, open_backend


@pytest.fixture(params=BACKENDS)
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerStore:
    """The contract suite's ledger: every test taking it runs against both backends, a
    fresh SQLite file and a fresh database on a real PostgreSQL server."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    return open_backend(request.param, tmp_path, url)
