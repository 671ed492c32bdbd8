"""Run `dprelease run CONFIG` and SIGKILL this driver at one stage (fault tests only).

Usage: ``python -m tests.spark.crash_driver STAGE CONFIG``. The kill is a real
``SIGKILL`` of the driver process at an exact point, placed by wrapping one function the
job calls at that point; nothing of the job itself is replaced.

Stages: ``before_aggregation`` (the input is about to be read and aggregated),
``after_noise`` (the noisy table is in staging, publication has not started),
``during_publish`` (the manifest is written in staging, the rename has not happened),
``after_publish`` (the version is visible, the ledger has not recorded it).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal

import pipelines.job
import pipelines.release
from jobs.cli import main


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_before(function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _die()
        return function(*args, **kwargs)

    return wrapper


def _kill_on_call(module: ModuleType, name: str) -> None:
    """Replace ``module.name`` (imported names included) by a wrapper that kills first."""
    setattr(module, name, _kill_before(getattr(module, name)))


def install(stage: str) -> None:
    """Place the kill for ``stage``."""
    if stage == "before_aggregation":
        _kill_on_call(pipelines.job, "aggregated_frame")
    elif stage == "after_noise":
        _kill_on_call(pipelines.job, "check_output_contract")
    elif stage == "during_publish":
        rename = os.rename

        def rename_or_die(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if pipelines.release.STAGING in str(src):
                _die()
            rename(src, dst, *args, **kwargs)

        # pipelines.release calls os.rename through the shared os module.
        os.rename = rename_or_die
    elif stage == "after_publish":
        mark = pipelines.job._mark

        def mark_or_die(
            ledger: Any,
            run_id: str,
            status: Literal["published", "failed"],
            version: str | None = None,
            digests: dict[str, str] | None = None,
        ) -> None:
            if status == "published":
                _die()
            mark(ledger, run_id, status, version, digests)

        pipelines.job._mark = mark_or_die
    else:
        raise SystemExit(f"unknown stage {stage!r}")


if __name__ == "__main__":
    install(sys.argv[1])
    sys.exit(main(["run", sys.argv[2]]))
