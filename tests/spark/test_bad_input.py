"""The bad-input catalogue: every bad input gets a clear error and loses nothing.

Each case runs `dprelease run` in-process (on the shared test session) against a copy of a
release root that already holds v0001, and asserts: the exit code; a message that names the
field, column or file; no JSON summary (nothing published); v0001 byte-for-byte intact and
still verifying; and that no message, log line or operator report echoes a private value.
The golden root carries the ledger that charged v0001, so budget cases meet a real history.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pyspark.sql import SparkSession

from jobs.cli import main
from pipelines.config import config_from_mapping
from pipelines.errors import ExitCode
from pipelines.job import run_release
from pipelines.ledger import SqliteLedger
from pipelines.release import VERSION_PATTERN, published_versions, read_manifest
from pipelines.verification import verify_release
from tests.support import EVENTS, raw_job_config, write_rows

CANARY = "ZQXCANARY31337"
Edit = Callable[[dict[str, Any], Path], None]


def good_rows() -> list[dict[str, Any]]:
    """Valid events; every unit id and one key carry the canary."""
    rows = [
        {"user": f"u{i}-{CANARY}", "key": "AB"[i % 2], "value": float(i % 10)} for i in range(40)
    ]
    rows.append({"user": f"lonely-{CANARY}", "key": f"key-{CANARY}", "value": 3.0})
    return rows


def base_config(root: Path, input_path: Path) -> dict[str, Any]:
    raw = raw_job_config(root, input_path)
    raw["release"]["data_period"] = "2026-W48"
    return raw


@pytest.fixture(scope="module")
def golden(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(release root holding v0001 of 'events', the good input) built once for every case."""
    base = tmp_path_factory.mktemp("golden")
    data = write_rows(base / "input" / "events.parquet", good_rows(), EVENTS)
    raw = base_config(base / "releases", data)
    raw["release"]["data_period"] = "2026-W47"
    run_release(spark, config_from_mapping(raw))
    shutil.rmtree(base / "releases" / "events" / "_operator")
    return base / "releases", data


# Edits of the config mapping (and of the files it points to).


def put(path: str, value: Any) -> Edit:
    """Set a dotted path (list indices as numbers) in the config."""

    def edit(raw: dict[str, Any], _: Path) -> None:
        *parents, last = path.split(".")
        node: Any = raw
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return edit


def remove(path: str) -> Edit:
    def edit(raw: dict[str, Any], _: Path) -> None:
        *parents, last = path.split(".")
        node: Any = raw
        for part in parents:
            node = node[part]
        del node[last]

    return edit


def rows(data: list[dict[str, Any]], schema: pa.Schema = EVENTS, **contracts: str) -> Edit:
    """Point the input at a new file with ``data``; optionally set contract rules."""

    def edit(raw: dict[str, Any], directory: Path) -> None:
        path = write_rows(directory / "input" / "rows.parquet", data, schema)
        raw["input"] = {"path": str(path)}
        if contracts:
            raw["contracts"] = dict(contracts)

    return edit


def public_keys(text: str | None) -> Edit:
    """Public selection from a keys file with ``text`` (None: the file does not exist)."""

    def edit(raw: dict[str, Any], directory: Path) -> None:
        path = directory / "keys.csv"
        if text is not None:
            path.write_text(text)
        raw["partition_selection"] = {"mechanism": "public", "public_keys": {"path": str(path)}}

    return edit


def both(*edits: Edit) -> Edit:
    def edit(raw: dict[str, Any], directory: Path) -> None:
        for one in edits:
            one(raw, directory)

    return edit


def unwritable_root(raw: dict[str, Any], directory: Path) -> None:
    blocker = directory / "a-file"
    blocker.write_text("not a directory")
    raw["release"]["output_root"] = str(blocker / "releases")


def unusable_ledger(raw: dict[str, Any], directory: Path) -> None:
    blocker = directory / "a-file"
    blocker.write_text("not a directory")
    raw["ledger"]["path"] = str(blocker / "ledger.sqlite")


def lowered_lifetime(epsilon: float = 1000.0, delta: float = 1e-3) -> Edit:
    """Lower the pinned lifetime with the recorded ledger command, and state it in the config."""

    def edit(raw: dict[str, Any], directory: Path) -> None:
        ledger = SqliteLedger(Path(raw["release"]["output_root"]) / "_ledger" / "ledger.sqlite")
        ledger.set_lifetime("events", "user", epsilon, delta, "catalogue case", "tests")
        raw["ledger"]["lifetime_budget"] = {"epsilon": epsilon, "delta": delta}

    return edit


def with_schema(**types: pa.DataType) -> pa.Schema:
    return pa.schema([(name, types.get(name, EVENTS.field(name).type)) for name in EVENTS.names])


GOOD = good_rows()
LONG = "x" * 100_000 + CANARY
WEIGHTS = {"selection": 0.5, "privacy_id_count": 0.1, "count": 0.1, "sum_value": 0.1}
BAD_ROW = {"user": f"bad-{CANARY}", "key": "A", "value": 1.0}


@dataclass(frozen=True)
class Case:
    id: str
    exit: ExitCode
    names: tuple[str, ...]
    edit: Edit | None = None
    text: str | None = None  # raw config file text instead of the edited mapping
    missing_file: bool = False
    charged: bool = False  # True: the failure comes after the charge, which stays


def input_dir(*files: tuple[str, bytes | list[dict[str, Any]]]) -> Edit:
    """Point the input at a folder holding ``files``: rows (written as Parquet) or raw bytes."""

    def edit(raw: dict[str, Any], directory: Path) -> None:
        folder = directory / "input-dir"
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in files:
            if isinstance(content, bytes):
                (folder / name).write_bytes(content)
            else:
                write_rows(folder / name, content, EVENTS)
        raw["input"] = {"path": str(folder)}

    return edit


def truncated_parquet(raw: dict[str, Any], directory: Path) -> None:
    path = write_rows(directory / "input-dir" / "part-0.parquet", GOOD, EVENTS)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    raw["input"] = {"path": str(path.parent)}


def disagreeing_parts(raw: dict[str, Any], directory: Path) -> None:
    folder = directory / "input-dir"
    write_rows(folder / "part-0.parquet", GOOD, EVENTS)
    text_values = [r | {"value": str(r["value"])} for r in GOOD]
    write_rows(folder / "part-1.parquet", text_values, with_schema(value=pa.string()))
    raw["input"] = {"path": str(folder)}


CONFIG, INPUT = ExitCode.CONFIG_ERROR, ExitCode.INPUT_CONTRACT_FAILED
BUDGET = ExitCode.BUDGET_REFUSED
CASES = [
    # Metadata, checked before the charge (nothing charged).
    Case(
        "corrupt_parquet_file",
        INPUT,
        ("part-0.parquet", "not a readable Parquet file"),
        truncated_parquet,
    ),
    Case(
        "stray_text_file_in_input_folder",
        INPUT,
        ("README.txt", "not a readable Parquet file"),
        input_dir(("part-0.parquet", GOOD), ("README.txt", b"notes about the data\n")),
    ),
    Case(
        "hidden_file_spark_would_skip",
        INPUT,
        ("_part-1.parquet", "Spark would skip it"),
        input_dir(("part-0.parquet", GOOD), ("_part-1.parquet", GOOD)),
    ),
    Case(
        "part_files_disagree_on_a_type",
        INPUT,
        ("column 'value'", "part-1.parquet", "all input files must agree"),
        disagreeing_parts,
    ),
    Case("format_misspelt", INPUT, ("input", "parket"), put("input.format", "parket")),
    Case(
        "inferred_schema_refused",
        INPUT,
        ("input.options.inferSchema", "input.schema"),
        put("input", {"path": "/srv/x.csv", "format": "csv", "options": {"inferSchema": True}}),
    ),
    Case(
        "declared_type_differs_from_parquet",
        INPUT,
        ("input.schema.value", "declared long"),
        put("input.schema", {"value": "long"}),
    ),
    Case("epsilon_boolean", CONFIG, ("budget.epsilon", "true/false"), put("budget.epsilon", True)),
    Case(
        "delta_above_ceiling", CONFIG, ("budget.delta", "DELTA_CEILING"), put("budget.delta", 0.5)
    ),
    Case(
        "l0_above_limit",
        CONFIG,
        ("contribution_bounds.max_partitions_per_unit",),
        put("contribution_bounds.max_partitions_per_unit", 10**15),
    ),
    Case(
        "duplicate_yaml_key",
        CONFIG,
        ("budget.epsilon", "duplicate key"),
        text="budget:\n  epsilon: 0.1\n  epsilon: 50\n",
    ),
    # Budget.
    Case("epsilon_zero", CONFIG, ("budget.epsilon",), put("budget.epsilon", 0)),
    Case("epsilon_negative", CONFIG, ("budget.epsilon",), put("budget.epsilon", -1.0)),
    Case("epsilon_infinite", CONFIG, ("budget.epsilon",), put("budget.epsilon", float("inf"))),
    Case("epsilon_not_a_number", CONFIG, ("budget.epsilon",), put("budget.epsilon", "lots")),
    Case("delta_one", CONFIG, ("budget.delta",), put("budget.delta", 1.0)),
    Case("delta_above_one", CONFIG, ("budget.delta",), put("budget.delta", 1.5)),
    Case("delta_negative", CONFIG, ("budget.delta",), put("budget.delta", -1e-6)),
    Case(
        "delta_zero_gaussian_noise",
        CONFIG,
        ("budget.delta", "gaussian"),
        both(put("budget.delta", 0.0), put("noise", "gaussian"), public_keys("key\nA\n")),
    ),
    Case(
        "delta_zero_private_selection",
        CONFIG,
        ("budget.delta", "private partition selection"),
        put("budget.delta", 0.0),
    ),
    Case(
        "weights_do_not_sum_to_one",
        CONFIG,
        ("budget.weights", "sum to 1"),
        put("budget.weights", WEIGHTS | {"mean_value": 0.1}),
    ),
    Case(
        "weights_name_an_unknown_metric",
        CONFIG,
        ("budget.weights", "unknown ['median']"),
        put("budget.weights", WEIGHTS | {"median": 0.2}),
    ),
    Case(
        "weights_negative",
        CONFIG,
        ("budget.weights", "greater than 0"),
        put("budget.weights", WEIGHTS | {"selection": 0.8, "mean_value": -0.1}),
    ),
    # Metrics and bounds.
    Case("lower_above_upper", CONFIG, ("metrics[2]", "'lower'"), put("metrics.2.lower", 20.0)),
    Case("mean_lower_equals_upper", CONFIG, ("metrics[3]",), put("metrics.3.upper", 0.0)),
    Case(
        "bound_not_finite", CONFIG, ("metrics[2]", "finite"), put("metrics.2.upper", float("nan"))
    ),
    Case(
        "bound_beyond_2_to_60", CONFIG, ("metrics[2]", "2^60"), put("metrics.2.lower", -(2.0**61))
    ),
    Case("unknown_metric", CONFIG, ("metrics[0].metric",), put("metrics.0.metric", "median")),
    Case(
        "measured_metric_without_column",
        CONFIG,
        ("metrics[2]", "needs 'column'"),
        put("metrics.2", {"metric": "sum", "lower": 0.0, "upper": 1.0}),
    ),
    Case(
        "count_with_a_column",
        CONFIG,
        ("metrics[1]", "takes no 'column'"),
        put("metrics.1", {"metric": "count", "column": "value"}),
    ),
    Case("duplicate_metric_names", CONFIG, ("metrics", "repeated"), put("metrics.0.name", "count")),
    Case(
        "very_long_metric_name", CONFIG, ("metrics[0]", "'name'"), put("metrics.0.name", "n" * 5000)
    ),
    # Contribution bounds.
    Case(
        "l0_zero",
        CONFIG,
        ("contribution_bounds.max_partitions_per_unit",),
        put("contribution_bounds.max_partitions_per_unit", 0),
    ),
    Case(
        "l0_negative",
        CONFIG,
        ("contribution_bounds.max_partitions_per_unit",),
        put("contribution_bounds.max_partitions_per_unit", -3),
    ),
    Case(
        "l0_fractional",
        CONFIG,
        ("contribution_bounds.max_partitions_per_unit",),
        put("contribution_bounds.max_partitions_per_unit", 1.5),
    ),
    Case(
        "linf_zero",
        CONFIG,
        ("contribution_bounds.max_rows_per_unit_per_partition",),
        put("contribution_bounds.max_rows_per_unit_per_partition", 0),
    ),
    Case(
        "linf_negative",
        CONFIG,
        ("contribution_bounds.max_rows_per_unit_per_partition",),
        put("contribution_bounds.max_rows_per_unit_per_partition", -1),
    ),
    # Keys, names and structure.
    Case(
        "typo_in_a_nested_key",
        CONFIG,
        ("budget.epsilom: unknown field",),
        put("budget.epsilom", 1.0),
    ),
    Case(
        "typo_in_a_top_level_key",
        CONFIG,
        ("contract: unknown field",),
        put("contract", {"empty_input": "fail"}),
    ),
    Case(
        "retired_invalid_values_key",
        CONFIG,
        ("invalid_values: unknown field",),
        put("invalid_values", "fail"),
    ),
    Case(
        "unknown_contract_rule",
        CONFIG,
        ("contracts.nan_values: unknown field",),
        put("contracts.nan_values", "fail"),
    ),
    Case(
        "unknown_contract_action",
        CONFIG,
        ("contracts.null_privacy_unit",),
        put("contracts.null_privacy_unit", "ignore"),
    ),
    Case(
        "release_name_with_parent_dir", CONFIG, ("release.name",), put("release.name", "../events")
    ),
    Case("release_name_with_slash", CONFIG, ("release.name",), put("release.name", "a/b")),
    Case("release_name_very_long", CONFIG, ("release.name",), put("release.name", "r" * 300)),
    Case(
        "missing_required_section",
        CONFIG,
        ("privacy_unit: required field is missing",),
        remove("privacy_unit"),
    ),
    Case(
        "unit_is_a_partition_column",
        CONFIG,
        ("privacy_unit.column",),
        put("partition_columns", ["user"]),
    ),
    Case("confidence_level_one", CONFIG, ("confidence_level",), put("confidence_level", 1.0)),
    Case(
        "public_selection_without_keys",
        CONFIG,
        ("partition_selection", "public_keys"),
        put("partition_selection", {"mechanism": "public"}),
    ),
    # The config file itself.
    Case(
        "malformed_yaml",
        CONFIG,
        ("job.yaml", "malformed YAML at line"),
        text="release: {name: [events\n",
    ),
    Case(
        "yaml_not_a_mapping",
        CONFIG,
        ("job.yaml", "top level must be a mapping"),
        text="- release\n- input\n",
    ),
    Case("empty_config_file", CONFIG, ("job.yaml", "top level must be a mapping"), text=""),
    Case("config_file_missing", CONFIG, ("job.yaml", "config file not found"), missing_file=True),
    # Where the data comes from and goes to.
    Case(
        "input_path_missing",
        INPUT,
        ("input.path", "nowhere.parquet", "does not exist"),
        put("input.path", "/nonexistent/nowhere.parquet"),
    ),
    Case("output_root_not_writable", CONFIG, ("release.output_root",), unwritable_root),
    # The privacy budget ledger.
    Case(
        "lifetime_budget_exceeded",
        BUDGET,
        ("privacy budget refused", "'events'", "requested ε=1", "remaining ε=0.5"),
        lowered_lifetime(epsilon=1.5),
    ),
    Case(
        "lifetime_delta_exceeded",
        BUDGET,
        ("privacy budget refused", "requested", "δ=1e-06"),
        lowered_lifetime(delta=1.5e-6),
    ),
    Case(
        "lifetime_raised_in_config_only",
        BUDGET,
        ("ledger.lifetime_budget", "pinned", "set-lifetime"),
        put("ledger.lifetime_budget.epsilon", 5000.0),
    ),
    Case("ledger_missing", CONFIG, ("ledger: required field is missing",), remove("ledger")),
    Case("ledger_dataset_blank", CONFIG, ("ledger.dataset",), put("ledger.dataset", "  ")),
    Case(
        "lifetime_epsilon_negative",
        CONFIG,
        ("ledger.lifetime_budget.epsilon",),
        put("ledger.lifetime_budget.epsilon", -1.0),
    ),
    Case("ledger_path_unusable", CONFIG, ("ledger.path", "cannot open"), unusable_ledger),
    Case("public_keys_file_missing", INPUT, ("public_keys: cannot read",), public_keys(None)),
    Case(
        "public_keys_with_duplicates",
        INPUT,
        ("public_keys", "duplicate"),
        public_keys("key\nA\nB\nA\n"),
    ),
    Case(
        "public_keys_without_the_key_column",
        INPUT,
        ("public_keys", "missing column", "'key'"),
        public_keys("region\nA\n"),
    ),
    Case("public_keys_file_empty", INPUT, ("public_keys", "empty"), public_keys("key\n")),
    # Input schema.
    Case(
        "missing_unit_column",
        INPUT,
        ("privacy_unit.column 'uid'",),
        put("privacy_unit.column", "uid"),
    ),
    Case(
        "missing_partition_column",
        INPUT,
        ("partition_columns 'region'",),
        put("partition_columns", ["region"]),
    ),
    Case(
        "missing_metric_column",
        INPUT,
        ("metric column 'amount'",),
        both(put("metrics.2.column", "amount"), put("metrics.3.column", "amount")),
    ),
    Case(
        "metric_column_is_a_string",
        INPUT,
        ("metric column 'value'", "string", "numeric"),
        rows([r | {"value": "1"} for r in GOOD], with_schema(value=pa.string())),
    ),
    Case(
        "partition_column_is_a_double",
        INPUT,
        ("partition_columns 'key'", "double"),
        rows([r | {"key": 1.5} for r in GOOD], with_schema(key=pa.float64())),
    ),
    Case(
        "unit_column_is_a_list",
        INPUT,
        ("privacy_unit.column 'user'", "array<string>"),
        rows([r | {"user": [r["user"]]} for r in GOOD], with_schema(user=pa.list_(pa.string()))),
    ),
    # Input rows.
    Case(
        "empty_dataset_with_fail",
        INPUT,
        ("no usable row", "rows.parquet", "contracts.empty_input"),
        rows([], empty_input="fail"),
        charged=True,
    ),
    Case(
        "all_privacy_units_null_dropped_with_fail",
        INPUT,
        ("no usable row", "contracts.empty_input", "operator report"),
        rows([r | {"user": None} for r in GOOD], empty_input="fail"),
        charged=True,
    ),
    Case(
        "all_privacy_units_null_fail",
        INPUT,
        ("null privacy unit in column 'user' (privacy_unit.column)",),
        rows([r | {"user": None} for r in GOOD], null_privacy_unit="fail"),
        charged=True,
    ),
    Case(
        "null_partition_key_fail",
        INPUT,
        ("null partition key in column 'key' (partition_columns[0])",),
        rows([*GOOD, BAD_ROW | {"key": None}], null_partition_key="fail"),
        charged=True,
    ),
    Case(
        "nan_value_fail",
        INPUT,
        ("in column 'value' (metrics[2].column, metrics[3].column)", "contracts.non_finite_value"),
        rows([*GOOD, BAD_ROW | {"value": float("nan")}], non_finite_value="fail"),
        charged=True,
    ),
    Case(
        "infinite_values_fail",
        INPUT,
        ("rows with a null, NaN or infinite value in column 'value'", "operator report"),
        rows(
            [*GOOD, BAD_ROW | {"value": float("inf")}, BAD_ROW | {"value": float("-inf")}],
            non_finite_value="fail",
        ),
        charged=True,
    ),
    Case(
        "very_long_strings",
        INPUT,
        ("null, NaN or infinite value in column 'value'",),
        rows(
            [{"user": LONG + str(i), "key": LONG, "value": 1.0} for i in range(5)]
            + [{"user": LONG, "key": LONG, "value": None}],
            non_finite_value="fail",
        ),
        charged=True,
    ),
]


def test_the_catalogue_is_large_and_distinct() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in (root / "events" / "v0001").rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(
    case: Case,
    spark: SparkSession,
    golden: tuple[Path, Path],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    golden_root, good_input = golden
    root = tmp_path / "releases"
    shutil.copytree(golden_root, root)
    before = snapshot(root)
    config = tmp_path / "job.yaml"
    if case.text is not None:
        config.write_text(case.text)
    elif not case.missing_file:
        raw = copy.deepcopy(base_config(root, good_input))
        if case.edit is not None:
            case.edit(raw, tmp_path)
        config.write_text(yaml.safe_dump(raw))
    capfd.readouterr()

    code = main(["run", str(config)], spark=spark)

    out, err = capfd.readouterr()
    assert code == case.exit, err[-3000:]
    for name in case.names:
        assert name in err, f"{name!r} not in:\n{err[-3000:]}"
    assert out.strip() == ""  # no JSON summary line: nothing was published
    assert CANARY not in out
    assert CANARY not in err
    release = root / "events"
    assert [v.name for v in published_versions(release)] == ["v0001"]
    assert [p.name for p in release.iterdir() if VERSION_PATTERN.match(p.name)] == ["v0001"]
    assert not any((release / "_staging").iterdir())
    assert snapshot(root) == before
    ledger = SqliteLedger(root / "_ledger" / "ledger.sqlite")
    charges = [e for e in ledger.entries() if e.data_period == "2026-W48"]
    assert len(charges) == (1 if case.charged else 0), charges
    assert verify_release(release / "v0001") == []
    for report in (release / "_operator").rglob("*") if (release / "_operator").exists() else []:
        if report.is_file():
            assert CANARY not in report.read_text(encoding="utf-8")


# Inputs that must succeed: awkward but valid column names reach the release intact.

UNIT, KEY, VALUE = "user id", "region.name", "value`eur"
ODD_NAMES = pa.schema([(UNIT, pa.string()), (KEY, pa.string()), (VALUE, pa.float64())])


def odd_names_config(root: Path, directory: Path, selection: str) -> dict[str, Any]:
    """The base config over an input whose unit, key and value names need quoting."""
    data = [{UNIT: f"u{i}-{CANARY}", KEY: "AB"[i % 2], VALUE: float(i % 10)} for i in range(2000)]
    raw = base_config(root, write_rows(directory / "input" / "odd.parquet", data, ODD_NAMES))
    raw["privacy_unit"] = {"column": UNIT}
    raw["partition_columns"] = [KEY]
    bounds = {"column": VALUE, "lower": 0.0, "upper": 10.0}
    raw["metrics"] = [
        {"metric": "privacy_id_count"},
        {"metric": "count"},
        {"metric": "sum", "name": "sum_value", **bounds},
        {"metric": "mean", "name": "mean_value", **bounds},
    ]
    if selection == "public":
        public_keys(f"{KEY}\nA\nB\nC\n")(raw, directory)
    return raw


@pytest.mark.parametrize("selection", ["private", "public"])
def test_column_names_with_a_space_a_dot_and_a_backtick_run_end_to_end(
    selection: str, spark: SparkSession, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(odd_names_config(tmp_path / "releases", tmp_path, selection)))
    capfd.readouterr()

    code = main(["run", str(config)], spark=spark)

    out, err = capfd.readouterr()
    assert code == ExitCode.OK, err[-3000:]
    assert CANARY not in out + err
    version = tmp_path / "releases" / "events" / "v0001"
    assert verify_release(version) == []
    files = sorted((version / "data").glob("*.parquet"))
    table = pa.concat_tables(pq.read_table(file) for file in files)
    assert table.schema.names[0] == KEY
    assert {"privacy_id_count", "count", "sum_value", "mean_value"} <= set(table.schema.names)
    assert table.num_rows >= 2
    assert set(table.column(KEY).to_pylist()) <= {"A", "B", "C"}
    manifest = read_manifest(version)
    assert manifest["partitions"]["columns"] == [KEY]
