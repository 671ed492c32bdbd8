"""One error hierarchy: every error a user can cause maps to its exit code by attribute,
and README's exit-code table is this module's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobs.cli import exit_code_for, failure_line
from pipelines.errors import (
    RETRY_ADVICE,
    AlreadyPublished,
    BudgetError,
    ConfigError,
    DprError,
    ExitCode,
    InputContractError,
    OutputContractError,
    Terminated,
    VerifyFailed,
)
from pipelines.ledger import BudgetRefused, LifetimeMismatch
from pipelines.plan_limits import ArithmeticBoundError

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_rows() -> list[tuple[int, str, str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Exit codes\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| [^|]+ \| ([^|]+) \|$", section, re.M)
    return [(int(code), name, advice.strip()) for code, name, advice in rows]


def test_readme_table_is_the_exit_code_module() -> None:
    rows = _readme_rows()
    assert [(c, n) for c, n, _ in rows] == [(int(e), e.name) for e in ExitCode]
    assert {c: a for c, _, a in rows} == {int(e): RETRY_ADVICE[e] for e in ExitCode}


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("x"), ExitCode.CONFIG_ERROR),
        (ArithmeticBoundError("x"), ExitCode.CONFIG_ERROR),
        (BudgetError("x"), ExitCode.BUDGET_REFUSED),
        (InputContractError("x"), ExitCode.INPUT_CONTRACT_FAILED),
        (AlreadyPublished("x"), ExitCode.ALREADY_PUBLISHED),
        (VerifyFailed("x"), ExitCode.VERIFY_FAILED),
        (OutputContractError("x"), ExitCode.OUTPUT_CONTRACT_FAILED),
        (KeyboardInterrupt(), ExitCode.INTERRUPTED),
        (Terminated("x"), ExitCode.TERMINATED),
        (RuntimeError("secret value 42"), ExitCode.INTERNAL_ERROR),
    ],
)
def test_errors_map_to_their_exit_code_by_attribute(error: BaseException, code: ExitCode) -> None:
    assert exit_code_for(error) == code
    line = failure_line(error)
    assert "\n" not in line and line.endswith(f"[exit {int(code)}: {RETRY_ADVICE[code]}]")


def test_ledger_refusals_are_budget_errors() -> None:
    assert issubclass(BudgetRefused, BudgetError) and issubclass(LifetimeMismatch, BudgetError)
    assert all(issubclass(e, DprError) for e in (ConfigError, InputContractError, VerifyFailed))


def test_an_unforeseen_error_shows_its_type_never_its_message() -> None:
    line = failure_line(RuntimeError("secret value 42"))
    assert "RuntimeError" in line and "secret" not in line and "42" not in line


def test_a_failure_after_the_charge_says_so() -> None:
    error = InputContractError("input: rows with a null")
    error.add_note("this run's charge stays in the ledger")
    assert "charge stays" in failure_line(error)
