"""The `dprelease_release` DAG under a real Airflow: `airflow dags test` on real releases.

Runs in Airflow's own venv (`make test-airflow`, scripts/test-airflow.sh); the DAG calls
the `dprelease` CLI of the project's venv. Each test run has its own AIRFLOW_HOME and
metadata database in a temporary directory.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
DAGS = REPO / "orchestration" / "airflow" / "dags"
DPRELEASE_VENV = Path(os.environ.get("DPRELEASE_VENV", REPO / ".venv"))
AIRFLOW = Path(sys.prefix) / "bin" / "airflow"
DAG_ID = "dprelease_release"

sys.path.insert(0, str(DAGS))


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fresh AIRFLOW_HOME with a migrated SQLite metadata database."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYSPARK", "DPRELEASE"))
    }
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "DPRELEASE_BIN": str(DPRELEASE_VENV / "bin" / "dprelease"),
        "PYSPARK_PYTHON": str(DPRELEASE_VENV / "bin" / "python"),
        "DPRELEASE_RETRY_DELAY_MINUTES": "0.01",
    }
    airflow(env, "db", "migrate")
    airflow(env, "dags", "reserialize")
    return env


def airflow(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(AIRFLOW), *args], env=env, capture_output=True, text=True, timeout=600
    )
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def dags_test(env: dict[str, str], config: Path) -> subprocess.CompletedProcess[str]:
    return airflow(
        env, "dags", "test", DAG_ID, "--conf", json.dumps({"config": str(config)}), check=False
    )


def task_instances(env: dict[str, str]) -> list[dict[str, Any]]:
    """Every task instance of the DAG in the metadata database, oldest run first."""
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT ti.run_id, ti.task_id, ti.state, ti.try_number FROM task_instance ti "
            "JOIN dag_run dr ON dr.run_id = ti.run_id AND dr.dag_id = ti.dag_id "
            "WHERE ti.dag_id = ? ORDER BY dr.id, ti.task_id",
            (DAG_ID,),
        ).fetchall()
    return [dict(row) for row in rows]


def last_run(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    instances = task_instances(env)
    run_id = instances[-1]["run_id"]
    return {ti["task_id"]: ti for ti in instances if ti["run_id"] == run_id}


def write_job(tmp: Path, name: str, *, epsilon: float = 1.0, lifetime: float = 100.0) -> Path:
    """A tiny real input (Parquet, written by the project's venv) and a job config over it."""
    data = tmp / f"{name}.parquet"
    subprocess.run(
        [
            str(DPRELEASE_VENV / "bin" / "python"),
            "-c",
            "import sys, pyarrow as pa, pyarrow.parquet as pq\n"
            "rows = [{'user': f'u{u}', 'key': f'k{u % 3}', 'value': float(u % 7)}"
            " for u in range(300)]\n"
            "pq.write_table(pa.Table.from_pylist(rows), sys.argv[1])\n",
            str(data),
        ],
        check=True,
    )
    config = {
        "release": {"name": name, "output_root": str(tmp / "releases"), "data_period": "2026-11"},
        "input": {"path": str(data)},
        "privacy_unit": {"column": "user"},
        "partition_columns": ["key"],
        "contribution_bounds": {"max_partitions_per_unit": 1, "max_rows_per_unit_per_partition": 1},
        "metrics": [{"metric": "count"}],
        "budget": {"epsilon": epsilon, "delta": 1e-6},
        "ledger": {"dataset": name, "lifetime_budget": {"epsilon": lifetime, "delta": 1e-3}},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def versions(tmp: Path, name: str) -> list[str]:
    release = tmp / "releases" / name
    return sorted(p.name for p in release.glob("v*") if (p / "manifest.json").is_file())


def test_exit_code_policy() -> None:
    from dprelease_release import outcome

    assert {code: outcome(code) for code in range(10)} == {
        0: "success",
        1: "retry",
        2: "fail",
        3: "fail",
        4: "fail",
        5: "success",
        6: "fail",
        7: "fail",
        8: "fail",
        9: "retry",
    }
    assert outcome(137) == "retry"  # killed (e.g. by the OOM killer)


def json_output(done: subprocess.CompletedProcess[str]) -> Any:
    """The JSON an `airflow ... --output json` command printed last (warnings come first)."""
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_dag_imports_without_errors(airflow_home: dict[str, str]) -> None:
    errors = airflow(airflow_home, "dags", "list-import-errors", "--output", "json")
    assert json_output(errors) == []
    listed = airflow(airflow_home, "dags", "list", "--output", "json")
    assert DAG_ID in {d["dag_id"] for d in json_output(listed)}


def test_a_release_is_published_and_a_second_run_is_a_no_op(
    airflow_home: dict[str, str], tmp_path: Path
) -> None:
    config = write_job(tmp_path, "airflow_events")
    first = dags_test(airflow_home, config)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    tasks = last_run(airflow_home)
    assert {t: ti["state"] for t, ti in tasks.items()} == {
        "run_release": "success",
        "verify_release": "success",
    }
    assert versions(tmp_path, "airflow_events") == ["v0001"]
    verify = subprocess.run(
        [airflow_home["DPRELEASE_BIN"], "verify", str(tmp_path / "releases" / "airflow_events")],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr

    second = dags_test(airflow_home, config)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    tasks = last_run(airflow_home)
    assert {t: ti["state"] for t, ti in tasks.items()} == {
        "run_release": "success",
        "verify_release": "success",
    }
    assert tasks["run_release"]["try_number"] == 1
    assert "already published" in second.stdout + second.stderr
    assert versions(tmp_path, "airflow_events") == ["v0001"]


def test_a_refused_budget_fails_at_once_without_a_retry(
    airflow_home: dict[str, str], tmp_path: Path
) -> None:
    config = write_job(tmp_path, "airflow_over_budget", epsilon=2.0, lifetime=1.0)
    run = dags_test(airflow_home, config)
    output = run.stdout + run.stderr
    tasks = last_run(airflow_home)
    assert tasks["run_release"]["state"] == "failed", output[-3000:]
    assert tasks["run_release"]["try_number"] == 1
    assert tasks["verify_release"]["state"] == "upstream_failed"
    assert "exited with 3" in output
    assert versions(tmp_path, "airflow_over_budget") == []


def test_a_transient_failure_is_retried_and_the_retry_publishes(
    airflow_home: dict[str, str], tmp_path: Path
) -> None:
    """The first attempt's command dies with exit 1; the retry runs the real release."""
    config = write_job(tmp_path, "airflow_retry")
    marker = tmp_path / "first-attempt-done"
    flaky = (
        f'if [ ! -e {marker} ]; then touch {marker}; echo "transient failure" >&2; exit 1; fi; '
        f'exec {airflow_home["DPRELEASE_BIN"]} run "$0"'
    )
    env = airflow_home | {"DPRELEASE_RUN": f"bash -c '{flaky}'"}
    run = dags_test(env, config)
    output = run.stdout + run.stderr
    tasks = last_run(env)
    assert tasks["run_release"]["state"] == "success", output[-3000:]
    assert tasks["run_release"]["try_number"] == 2
    assert tasks["verify_release"]["state"] == "success"
    assert marker.exists()
    assert versions(tmp_path, "airflow_retry") == ["v0001"]
