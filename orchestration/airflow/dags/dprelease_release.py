"""Airflow DAG `dprelease_release`: one differentially private release, then its check.

Tasks: ``run_release`` runs ``dprelease run CONFIG`` (or a spark-submit command, see
below) and returns the run's JSON summary; ``verify_release`` runs ``dprelease verify`` on
the version it names.

Trigger it with the job config's path (the DAG param ``config``; default: the
``DPRELEASE_CONFIG`` environment variable). Settings, from the environment of the
Airflow workers:

- ``DPRELEASE_BIN``: the ``dprelease`` executable (default: ``dprelease`` on PATH).
- ``DPRELEASE_RUN``: the command that runs a release, the config path appended
  (default: ``$DPRELEASE_BIN run``). For a cluster, a spark-submit command ending in
  ``jobs/submit.py run``, e.g. ``spark-submit --master spark://HOST:7077 --archives
  dist/dprelease-...-env-....tar.gz#environment --conf
  spark.pyspark.python=./environment/bin/python .../jobs/submit.py run``.
- ``DPRELEASE_RETRIES`` (default 1) and ``DPRELEASE_RETRY_DELAY_MINUTES`` (default 10).

Retry policy, from the CLI's exit codes:

===========================  ====================================================
exit code                    task outcome
===========================  ====================================================
0 published                  success
5 already published          success: the version for this data period exists (a
                             retry after a run that published but did not report)
2 config error               failed, never retried (the same input fails again)
3 budget refused             failed, never retried (the ledger refuses again)
4 input contract failed      failed, never retried (fix the input first)
6 verify found a problem     failed, never retried
7 output contract failed     failed, never retried (a bug: report it)
8 policy refused             failed, never retried (the tier's rule refuses again)
1 internal error, any other  failed, retried (a lost cluster, a killed driver...)
130, 143 interrupted         failed, retried (SIGINT or SIGTERM: the run was marked
                             failed and its staging removed; its charge stays)
===========================  ====================================================

Why retrying is safe: a run publishes one version per data period by one atomic
rename, so a retry either publishes the only version or finds it (exit 5); a failed
run publishes nothing. What a retry costs: every attempt that gets past planning is
charged to the privacy ledger, failed ones included, so each retry spends the
release's epsilon again; hence one retry by default, and the ledger's lifetime
budget bounds the total (exit 3, not retried). ``max_active_runs=1`` keeps two runs
of the same release from racing.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException

log = logging.getLogger(__name__)

SUCCEEDED = {0: "published", 5: "already published for this data period (no-op)"}
NOT_RETRIED = {
    2: "config error",
    3: "budget refused by the ledger",
    4: "input contract failed",
    6: "verify found a problem",
    7: "output contract failed (a bug: report it)",
    8: "refused by the dataset's policy tier",
}


def outcome(code: int) -> str:
    """``success``, ``fail`` (no retry) or ``retry`` for a CLI exit code."""
    if code in SUCCEEDED:
        return "success"
    if code in NOT_RETRIED:
        return "fail"
    return "retry"


def _check(command: list[str], code: int) -> None:
    """Raise as the policy says for a non-success exit code."""
    what = f"{shlex.join(command)} exited with {code}"
    if outcome(code) == "fail":
        raise AirflowFailException(f"{what}: {NOT_RETRIED[code]}; not retried")
    if outcome(code) == "retry":
        raise AirflowException(f"{what}: retryable failure")
    log.info("%s: %s", what, SUCCEEDED[code] if command[-2:-1] == ["run"] else "ok")


def _run(command: list[str]) -> tuple[int, str]:
    """Run ``command``; its stderr goes to the task log, its stdout is returned (and logged)."""
    log.info("running %s", shlex.join(command))
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    for line in done.stdout.splitlines():
        log.info("%s", line)
    return done.returncode, done.stdout


def _summary(stdout: str) -> dict[str, Any]:
    """The run's JSON summary: the last stdout line (spark-submit puts the log above it)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines or not lines[-1].startswith("{"):
        raise AirflowException("the run printed no JSON summary line")
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def _dprelease() -> list[str]:
    return shlex.split(os.environ.get("DPRELEASE_BIN", "dprelease"))


@task
def run_release(config: str) -> dict[str, Any]:
    """Run the release; returns the JSON summary (published or already published)."""
    default = shlex.join([*_dprelease(), "run"])
    command = [*shlex.split(os.environ.get("DPRELEASE_RUN", default)), config]
    code, stdout = _run(command)
    _check(command, code)
    return _summary(stdout)


@task
def verify_release(summary: dict[str, Any]) -> None:
    """Check the version the run names against its manifest."""
    command = [*_dprelease(), "verify", str(summary["path"])]
    code, _ = _run(command)
    _check(command, code)


@dag(
    dag_id="dprelease_release",
    description="A differentially private release with dprelease, then its verification.",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={
        "config": Param(
            os.environ.get("DPRELEASE_CONFIG", ""),
            type="string",
            minLength=1,
            description="path of the dprelease job config (YAML)",
        )
    },
    default_args={
        "retries": int(os.environ.get("DPRELEASE_RETRIES", "1")),
        "retry_delay": timedelta(
            minutes=float(os.environ.get("DPRELEASE_RETRY_DELAY_MINUTES", "10"))
        ),
        "execution_timeout": timedelta(hours=6),
    },
    tags=["dprelease"],
)
def dprelease_release() -> None:
    verify_release(run_release("{{ params.config }}"))


dprelease_release()
