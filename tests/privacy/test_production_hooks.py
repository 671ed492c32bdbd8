"""Test hooks in production: the noiseless mode, seeds and trust-me flags are unreachable.

The only seam for other noise is ``run_release(..., source=...)``, a keyword no
production caller passes. Checked on the syntax tree of every module in jobs/ (the CLI,
spark-submit mains, demo data; modules added later are picked up automatically) and
pipelines/: no call passes ``source=`` (outside the noise step's own plumbing) or
``seed=``, nothing imports ``tests``, no argparse option or environment variable looks
like a hook; the config schema offers no hook either; and the installed distribution
does not contain tests/. The scanner's power is checked on small bad sources.
"""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import setuptools  # type: ignore[import-untyped]

from jobs.cli import _parser
from pipelines.config import config_json_schema

REPO = Path(__file__).resolve().parents[2]
HOOK_WORDS = re.compile(
    r"seed|noiseless|zero|no[-_]?noise|source|test|trust|unsafe|skip|debug|insecure|fake|double",
    re.IGNORECASE,
)
ENV_ALLOWED = re.compile(r"^(PYSPARK_[A-Z_]+|SPARK_[A-Z_]+|JAVA_HOME|HADOOP_CONF_DIR)$")
# pipelines/job.py hands its (optional) source to the noise step: the seam itself.
SEAM_CALLS = {("pipelines/job.py", "run_release")}


@dataclass(frozen=True)
class Finding:
    rule: str
    line: int
    detail: str


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


class _HookScanner(ast.NodeVisitor):
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def flag(self, rule: str, node: ast.AST, detail: str) -> None:
        self.findings.append(Finding(rule, getattr(node, "lineno", 0), detail))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == "tests":
                self.flag("imports-tests", node, alias.name)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and (node.module or "").split(".")[0] == "tests":
            self.flag("imports-tests", node, node.module or "")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in {"ZeroNoise", "HalfScaleNoise", "RecordingNoise"}:
            self.flag("test-double", node, node.id)

    def visit_Call(self, node: ast.Call) -> None:
        callee = _name(node.func)
        for keyword in node.keywords:
            if keyword.arg in {"source", "seed"}:
                self.flag(f"passes-{keyword.arg}", node, f"{callee}({keyword.arg}=...)")
        if callee.endswith("add_argument"):
            names = [a.value for a in node.args if isinstance(a, ast.Constant)]
            names += [
                k.value.value
                for k in node.keywords
                if k.arg == "dest" and isinstance(k.value, ast.Constant)
            ]
            for name in names:
                if HOOK_WORDS.search(str(name)):
                    self.flag("hook-option", node, str(name))
        if callee in {"os.getenv", "os.environ.get", "environ.get", "getenv"} and node.args:
            self._env(node, node.args[0])
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if _name(node.value) in {"os.environ", "environ"}:
            self._env(node, node.slice)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        # "NAME" in os.environ
        if any(isinstance(op, ast.In | ast.NotIn) for op in node.ops) and any(
            _name(c) in {"os.environ", "environ"} for c in node.comparators
        ):
            self._env(node, node.left)
        self.generic_visit(node)

    def _env(self, node: ast.AST, name: ast.expr) -> None:
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            self.flag("env-read", node, "a computed environment variable name")
        elif not ENV_ALLOWED.match(name.value):
            self.flag("env-read", node, name.value)


def scan(source: str) -> list[Finding]:
    scanner = _HookScanner()
    scanner.visit(ast.parse(source))
    return scanner.findings


def _enclosing_function(tree: ast.Module, line: int) -> str:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.lineno <= line <= (node.end_lineno or 0):
            return node.name
    return ""


def production_modules() -> list[Path]:
    return sorted([*(REPO / "jobs").rglob("*.py"), *(REPO / "pipelines").rglob("*.py")])


def is_main_module(path: Path) -> bool:
    """A module with a ``__main__`` block or a ``main`` function (CLI or spark-submit main)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in {"main", "_run"}:
            return True
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return True
    return False


def test_test_hooks_in_production_every_main_is_scanned() -> None:
    mains = {p.relative_to(REPO).as_posix() for p in production_modules() if is_main_module(p)}
    assert "jobs/cli.py" in mains
    assert all(m.startswith("jobs/") for m in mains), mains


@pytest.mark.parametrize("path", production_modules(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_test_hooks_in_production_are_unreachable_from_production_code(path: Path) -> None:
    relative = path.relative_to(REPO).as_posix()
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    findings = [
        f
        for f in scan(text)
        if not (
            f.rule == "passes-source"
            and (relative, _enclosing_function(tree, f.line)) in SEAM_CALLS
        )
    ]
    assert findings == [], "\n".join(f"{relative}:{f.line}: {f.rule}: {f.detail}" for f in findings)


def test_test_hooks_in_production_cli_parses_no_hook_option() -> None:
    """No option or positional of any `dprelease` subcommand names a hook."""
    parser = _parser()
    seen: set[str] = set()
    subparsers = [a for a in parser._actions if a.choices and isinstance(a.choices, dict)]
    assert subparsers
    for action in subparsers:
        assert isinstance(action.choices, dict)
        for name, sub in action.choices.items():
            for item in sub._actions:
                seen.update(item.option_strings or [f"{name}:{item.dest}"])
    # The option allow-list itself is tests/spark/test_cli.py; this adds positionals and
    # the hook vocabulary.
    assert "--supersede" in seen
    assert not [s for s in seen if HOOK_WORDS.search(s.split(":")[-1])]


def _property_names(schema: Any) -> list[str]:
    names: list[str] = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                names.extend(value)
            names.extend(_property_names(value))
    elif isinstance(schema, list):
        for item in schema:
            names.extend(_property_names(item))
    return names


def test_test_hooks_in_production_config_schema_has_no_hook_field() -> None:
    schema = config_json_schema()
    names = set(_property_names(schema))
    assert {"noise", "budget", "contribution_bounds"} <= names
    assert not [n for n in names if HOOK_WORDS.search(n)], names
    for form in schema["anyOf"]:  # one table, or several (tables:)
        noise = schema["$defs"][form["$ref"].rsplit("/", 1)[1]]["properties"]["noise"]
        assert set(noise.get("enum") or noise.get("anyOf", [{}])[0].get("enum", [])) == {
            "laplace",
            "gaussian",
        }


def test_test_hooks_in_production_the_distribution_excludes_tests() -> None:
    """Package discovery (pyproject) and the built metadata never include tests/."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    find = pyproject["tool"]["setuptools"]["packages"]["find"]
    packages = setuptools.find_packages(
        where=str(REPO), include=find.get("include", ["*"]), exclude=find.get("exclude", ())
    )
    assert packages and "pipelines" in packages
    assert not [p for p in packages if p.split(".")[0] in {"tests", "benchmarks"}], packages
    for info in REPO.glob("*.egg-info"):
        top_level = (info / "top_level.txt").read_text(encoding="utf-8").split()
        assert "tests" not in top_level
        sources = (info / "SOURCES.txt").read_text(encoding="utf-8").splitlines()
        assert not [s for s in sources if s.startswith("tests/")]
    scripts = pyproject["project"].get("scripts", {})
    assert all(not HOOK_WORDS.search(target) for target in scripts.values())


BAD_SOURCES = [
    ("passes-source", "run_release(spark, config, source=ZeroNoise())\n"),
    ("passes-seed", "make_noise(seed=3)\n"),
    ("imports-tests", "from tests.doubles import ZeroNoise\n"),
    ("imports-tests", "import tests.doubles\n"),
    ("test-double", "noise = ZeroNoise\n"),
    ("hook-option", "parser.add_argument('--noiseless', action='store_true')\n"),
    ("hook-option", "run.add_argument('--seed', type=int)\n"),
    ("hook-option", "run.add_argument('--trust-me', action='store_true')\n"),
    ("hook-option", "run.add_argument('-x', dest='zero_noise')\n"),
    ("env-read", "import os\nflag = os.environ.get('DPRELEASE_NO_NOISE')\n"),
    ("env-read", "import os\nflag = os.getenv('DPRELEASE_SEED')\n"),
    ("env-read", "import os\nflag = os.environ['NOISELESS']\n"),
    ("env-read", "import os\nflag = 'DPRELEASE_TEST' in os.environ\n"),
]


@pytest.mark.parametrize(("rule", "source"), BAD_SOURCES)
def test_test_hooks_in_production_scanner_flags_each_rule(rule: str, source: str) -> None:
    assert rule in {f.rule for f in scan(source)}, source


def test_test_hooks_in_production_scanner_accepts_good_sources() -> None:
    good = (
        "import os\nos.environ.setdefault('PYSPARK_PYTHON', 'python')\n"
        "submitted = 'PYSPARK_GATEWAY_PORT' in os.environ\n"
        "run.add_argument('--supersede', action='store_true')\n"
        "run_release(session, config, supersede=True)\n"
    )
    assert scan(good) == []
