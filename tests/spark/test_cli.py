"""The `dprelease` CLI: exit codes, the JSON summary line, plan without data, no test hooks."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobs.cli import _parser, main
from pipelines.errors import ExitCode
from tests.support import job_config

REPO = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, input_path: Path, **overrides: object) -> Path:
    config = job_config(tmp_path, input_path, **overrides)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    return path


def test_plan_reads_no_data_and_prints_the_budget_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, tmp_path / "does-not-exist.parquet")
    assert main(["plan", str(config)]) == ExitCode.OK
    plan = json.loads(capsys.readouterr().out)
    assert plan["totals"]["epsilon"] <= 1.0
    assert set(plan["selection"]["keep_probability_by_units"]) == {
        "1",
        "2",
        "5",
        "10",
        "20",
        "50",
        "100",
    }
    assert {m["name"] for m in plan["mechanisms"]} == {
        "privacy_id_count",
        "count",
        "sum_value",
        "mean_value.normalized_sum",
    }
    for mechanism in plan["mechanisms"]:
        assert mechanism["std"] > 0 and mechanism["ci_half_width"] > 0


def test_config_errors_exit_2_and_name_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, tmp_path / "x.parquet")
    raw = yaml.safe_load(config.read_text())
    raw["budget"]["epsilon"] = -1
    raw["contribution_bounds"]["max_partitions_per_unit_typo"] = 3
    config.write_text(yaml.safe_dump(raw))
    assert main(["plan", str(config)]) == ExitCode.CONFIG_ERROR
    err = capsys.readouterr().err
    assert "budget.epsilon" in err
    assert "contribution_bounds.max_partitions_per_unit_typo: unknown field" in err


def test_schema_command_prints_the_config_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == ExitCode.OK
    schema = json.loads(capsys.readouterr().out)
    single, multi = (schema["$defs"][ref["$ref"].rsplit("/", 1)[1]] for ref in schema["anyOf"])
    assert "contribution_bounds" in single["properties"]
    assert "tables" in multi["required"] and "tables" not in single["properties"]


def test_no_cli_option_reaches_a_test_hook() -> None:
    parser = _parser()
    assert parser._subparsers is not None
    subcommands: list[argparse.ArgumentParser] = []
    for action in parser._subparsers._group_actions:
        assert isinstance(action, argparse._SubParsersAction)
        subcommands.extend(action.choices.values())
    options = {
        option for sub in subcommands for item in sub._actions for option in item.option_strings
    }
    # verify --config names the ledger to check against; set-lifetime takes the new values;
    # registry names its ledger (--config or --ledger) and filters by --dataset.
    allowed = {"-h", "--help", "--supersede", "--config", "--format", "--limit", "--offset"}
    allowed |= {"--units"}  # plan: partition sizes to report expected intervals at
    allowed |= {"--table"}  # show and export: one table of a release of several
    assert options <= allowed | {"--epsilon", "--delta", "--reason", "--ledger", "--dataset"}
    top = {option for item in parser._actions for option in item.option_strings}
    assert top <= {"-h", "--help", "--version", "--verbose"}


def test_run_prints_one_json_line_and_verify_accepts_the_release(
    tmp_path: Path, events_path: Path
) -> None:
    """A real `dprelease run` in its own process (its own Spark), then verify and show."""
    config = write_config(tmp_path, events_path)
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    command = [sys.executable, "-m", "jobs.cli"]
    run = subprocess.run(
        [*command, "run", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == ExitCode.OK, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["status"] == "published" and summary["version"] == "v0001"
    # The retry needs no Spark: with no usable Java it still answers "already published".
    no_java = dict(env, JAVA_HOME=str(tmp_path / "no-java"))
    again = subprocess.run(
        [*command, "run", str(config)],
        cwd=REPO,
        env=no_java,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == ExitCode.ALREADY_PUBLISHED, again.stderr[-2000:]
    assert json.loads(again.stdout)["status"] == "already_published"
    release = Path(summary["path"]).parent
    assert main(["verify", str(release)]) == ExitCode.OK
    assert main(["show", str(release)]) == ExitCode.OK
    _check_quiet_log(run.stderr)


def _check_quiet_log(stderr: str) -> None:
    """The default log: dprelease's step lines, no Spark or JVM warnings, no progress bars."""
    assert "[1/7] plan" in stderr and "[7/7] publish" in stderr
    for noise in ("WARN ", "WARNING:", "[Stage ", "log4j", "setLogLevel", "deprecated"):
        assert noise not in stderr, noise


def test_show_prints_values_with_intervals_and_export_writes_them(
    tmp_path: Path,
    events_path: Path,
    spark: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = tmp_path / "keys.csv"
    keys.write_text("key\nA\nB\nC\nD\n", encoding="utf-8")
    public = {"mechanism": "public", "public_keys": {"path": str(keys)}}
    config = write_config(tmp_path, events_path, partition_selection=public)
    assert main(["run", str(config)], spark=spark) == ExitCode.OK  # type: ignore[arg-type]
    release = tmp_path / "releases" / "events"
    capsys.readouterr()
    assert main(["show", str(release), "--limit", "2"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "±" in out and "rows 1-2 of 4" in out  # sums are never clamped: symmetric
    assert json.loads(out.strip().splitlines()[-1])["card"].endswith("v0001/card.html")
    assert main(["show", str(release), "--limit", "2", "--offset", "2"]) == ExitCode.OK
    assert "rows 3-" in capsys.readouterr().out
    for kind in ("csv", "json"):
        assert main(["export", str(release), str(tmp_path / "out"), "--format", kind]) == 0
        written = Path(json.loads(capsys.readouterr().out)["path"])
        assert written.name == f"events-v0001.{kind}"
    rows = json.loads((tmp_path / "out" / "events-v0001.json").read_text())["rows"]
    header = (tmp_path / "out" / "events-v0001.csv").read_text().splitlines()[0].split(",")
    assert set(rows[0]) == set(header) and "count_ci_high" in header
