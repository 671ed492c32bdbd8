"""No lifetime budget can be bypassed: pinned lifetimes, one ledger per release, detected
ledger loss, normalised dataset names, the period re-checked at publish, verified texts.

Each test drives the real job (``jobs.cli.main`` or ``run_release``) the way an operator
would try to get past the budget, and asserts the refusal and that nothing was
published (docs/privacy.md §10).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from jobs.cli import main
from pipelines.config import ConfigError, config_from_mapping, load_config
from pipelines.errors import AlreadyPublished, ExitCode
from pipelines.integrity import open_ledger
from pipelines.job import run_release, start_run
from pipelines.release import published_versions
from tests.doubles import ZeroNoise
from tests.support import audit_config

EVENTS = pa.schema([("user", pa.string()), ("key", pa.string()), ("value", pa.float64())])


def _input(directory: Path) -> Path:
    rows = [{"user": f"u{i}", "key": f"k{i % 3}", "value": 1.0} for i in range(60)]
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=EVENTS), directory / "part-0.parquet")
    return directory


def _config(folder: Path, **overrides: Any) -> Path:
    """A config file in ``folder`` whose paths are relative to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    _input(folder / "input")
    raw = audit_config(Path("releases"), Path("input"), **overrides)
    raw["ledger"] = raw["ledger"] | overrides.get("ledger", {})
    path = folder / f"job-{len(list(folder.glob('job-*.yaml')))}.yaml"
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def _versions(folder: Path) -> list[str]:
    return [v.name for v in published_versions(folder / "releases" / "audit")]


LIFETIME = {"epsilon": 10.0, "delta": 1e-3}


def test_a_later_config_cannot_raise_the_pinned_lifetime(
    spark: SparkSession, tmp_path: Path
) -> None:
    first = _config(tmp_path, ledger={"dataset": "audit", "lifetime_budget": LIFETIME})
    assert main(["run", str(first)], spark=spark) == ExitCode.OK
    bigger = {"epsilon": 1e6, "delta": 1e-3}
    raised = _config(
        tmp_path,
        ledger={"dataset": "audit", "lifetime_budget": bigger},
        release={"name": "audit", "output_root": "releases", "data_period": "P2"},
    )
    shutil.rmtree(tmp_path / "input")  # a refused run reads nothing
    assert main(["run", str(raised)], spark=spark) == ExitCode.BUDGET_REFUSED
    assert _versions(tmp_path) == ["v0001"]
    assert len(open_ledger(load_config(raised)).entries()) == 1


def test_relative_paths_mean_the_same_ledger_from_any_directory(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path / "project")
    for cwd in ("a", "b"):
        (tmp_path / cwd).mkdir()
        monkeypatch.chdir(tmp_path / cwd)
        code = main(["run", str(config)], spark=spark)
        assert code == (ExitCode.OK if cwd == "a" else ExitCode.ALREADY_PUBLISHED)
    assert _versions(tmp_path / "project") == ["v0001"]
    assert not list((tmp_path / "a").iterdir()) and not list((tmp_path / "b").iterdir())


def test_a_release_charged_in_another_ledger_is_refused(
    spark: SparkSession, tmp_path: Path
) -> None:
    assert main(["run", str(_config(tmp_path))], spark=spark) == ExitCode.OK
    elsewhere = {"path": "other-ledger.sqlite"}
    other = _config(
        tmp_path,
        ledger={"dataset": "audit", "lifetime_budget": LIFETIME} | elsewhere,
        release={"name": "audit", "output_root": "releases", "data_period": "P2"},
    )
    assert main(["run", str(other)], spark=spark) == ExitCode.BUDGET_REFUSED
    assert _versions(tmp_path) == ["v0001"]


def test_a_deleted_ledger_does_not_restart_the_budget(spark: SparkSession, tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert main(["run", str(config)], spark=spark) == ExitCode.OK
    (tmp_path / "releases" / "_ledger" / "ledger.sqlite").unlink()
    assert main(["run", "--supersede", str(config)], spark=spark) == ExitCode.BUDGET_REFUSED
    assert _versions(tmp_path) == ["v0001"]


def test_dataset_names_differing_by_case_and_space_share_one_budget(tmp_path: Path) -> None:
    first = load_config(_config(tmp_path, ledger={"dataset": "Audit", "lifetime_budget": LIFETIME}))
    second = load_config(
        _config(tmp_path, ledger={"dataset": "  AUDIT ", "lifetime_budget": LIFETIME})
    )
    assert first.ledger.dataset == second.ledger.dataset == "audit"


def test_the_loser_of_two_concurrent_runs_of_one_period_publishes_nothing(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Run A starts (no version for its period yet), run B publishes that period, then A
    reaches its publish step: A must not publish a second version of the period."""
    config = load_config(_config(tmp_path))
    start_a = start_run(config)
    run_release(spark, config, source=ZeroNoise())
    with pytest.raises(AlreadyPublished):
        run_release(spark, config, source=ZeroNoise(), start=start_a)
    assert _versions(tmp_path) == ["v0001"]
    statuses = [e.status for e in open_ledger(config).entries()]
    assert statuses == ["published", "failed"]  # the loser's charge stays


def test_duplicate_keys_and_boolean_numbers_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    text = json.dumps(audit_config(tmp_path / "r", tmp_path / "i"), indent=1)
    path.write_text(text.replace('"epsilon": 4.0', '"epsilon": 0.1, "epsilon": 50'))
    with pytest.raises(ConfigError, match="duplicate"):
        load_config(path)
    with pytest.raises(ConfigError, match="epsilon"):
        config_from_mapping(
            audit_config(tmp_path / "r", tmp_path / "i", budget={"epsilon": True, "delta": 1e-6})
        )


def test_a_delta_above_the_ceiling_is_refused(tmp_path: Path) -> None:
    raw = audit_config(tmp_path / "r", tmp_path / "i", budget={"epsilon": 1.0, "delta": 0.5})
    with pytest.raises(ConfigError, match=r"budget\.delta"):
        config_from_mapping(raw)


def test_verify_notices_an_edited_manifest_or_readme_and_a_deleted_manifest(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    assert main(["run", str(config)], spark=spark) == ExitCode.OK
    assert main(["run", "--supersede", str(config)], spark=spark) == ExitCode.OK
    release = tmp_path / "releases" / "audit"
    assert main(["verify", str(release)]) == ExitCode.OK
    manifest = release / "v0001" / "manifest.json"
    edited = json.loads(manifest.read_text())
    edited["privacy"]["epsilon"] = 0.01
    manifest.write_text(json.dumps(edited, indent=2) + "\n")
    assert main(["verify", str(release / "v0001")]) == ExitCode.VERIFY_FAILED
    (release / "v0002" / "manifest.json").unlink()
    capsys.readouterr()
    assert main(["verify", str(release)]) == ExitCode.VERIFY_FAILED
    err = capsys.readouterr().err
    assert "v0001" in err and "v0002" in err
