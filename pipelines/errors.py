"""Every error a user can cause, each with its exit code: the one place both are defined.

The CLI maps an error to its exit code through ``exit_code`` alone; README's exit-code
table is tested against ``ExitCode``. Invariant: messages name fields, columns, paths
and configuration values, never a value or a count computed from the private data.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    """Documented, distinct exit codes of every `dprelease` command."""

    OK = 0
    INTERNAL_ERROR = 1
    CONFIG_ERROR = 2
    BUDGET_REFUSED = 3
    INPUT_CONTRACT_FAILED = 4
    ALREADY_PUBLISHED = 5
    VERIFY_FAILED = 6
    OUTPUT_CONTRACT_FAILED = 7
    POLICY_REFUSED = 8
    INTERRUPTED = 130
    TERMINATED = 143


# What an orchestrator should do after each exit code (README's table reads this).
RETRY_ADVICE: dict[ExitCode, str] = {
    ExitCode.OK: "done",
    ExitCode.INTERNAL_ERROR: "retry once; the charge stays",
    ExitCode.CONFIG_ERROR: "fix the config; nothing was charged",
    ExitCode.BUDGET_REFUSED: "do not retry; nothing was charged",
    ExitCode.INPUT_CONTRACT_FAILED: "fix the input; see the message for whether it was charged",
    ExitCode.ALREADY_PUBLISHED: "done (idempotent no-op, or another run published first)",
    ExitCode.VERIFY_FAILED: "do not use the version; investigate",
    ExitCode.OUTPUT_CONTRACT_FAILED: "do not retry; report a bug; the charge stays",
    ExitCode.POLICY_REFUSED: "meet the tier's rule or change the policy; nothing was charged",
    ExitCode.INTERRUPTED: "retry when wanted; the charge stays",
    ExitCode.TERMINATED: "retry when wanted; the charge stays",
}


class DprError(Exception):
    """Base of the errors dprelease raises on purpose; ``exit_code`` says how it ends."""

    exit_code: ClassVar[ExitCode] = ExitCode.INTERNAL_ERROR


class ConfigError(DprError):
    """A problem the user can fix in the config file; the message names the field path."""

    exit_code = ExitCode.CONFIG_ERROR


class BudgetError(DprError):
    """The ledger refuses the run: budget, pinned lifetime or ledger identity."""

    exit_code = ExitCode.BUDGET_REFUSED


class InputContractError(DprError):
    """The input does not meet the job's contract; the message names the path or column."""

    exit_code = ExitCode.INPUT_CONTRACT_FAILED


class AlreadyPublished(DprError):  # noqa: N818 (reads as the exit code it maps to)
    """The data period was published by another run first; this run published nothing."""

    exit_code = ExitCode.ALREADY_PUBLISHED


class VerifyFailed(DprError):  # noqa: N818 (reads as the exit code it maps to)
    """A published version does not match its manifest, checksum file or ledger record."""

    exit_code = ExitCode.VERIFY_FAILED


class OutputContractError(DprError):
    """The staged release breaks the output contract; nothing was published."""

    exit_code = ExitCode.OUTPUT_CONTRACT_FAILED


class PolicyViolation(DprError):  # noqa: N818 (reads as the exit code it maps to)
    """The config breaks a rule of its dataset's policy tier (docs/privacy.md §12); the
    message names the tier, the rule and the config field. Refused before Spark starts
    and before the ledger is charged."""

    exit_code = ExitCode.POLICY_REFUSED


class PublishError(DprError):
    """The release could not be published; nothing was published."""


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt, so cleanup runs (exit 143)."""

    exit_code: ClassVar[ExitCode] = ExitCode.TERMINATED
