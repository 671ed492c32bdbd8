"""Static privacy rules over dp_ops/ and pipelines/, checked on the syntax tree (not grep).

Rules (docs/privacy.md §5, exact sampling from the OS CSPRNG):

* ``spark-in-dp-ops``: dp_ops imports no pyspark / pandas / pyarrow / great_expectations.
* ``random-module``: nobody imports the ``random`` module (``secrets`` and ``os.urandom``
  are fine).
* ``numpy-random``: nobody touches ``numpy.random`` (``np.random.<anything>``, imports of it).
* ``spark-rand``: nobody uses Spark's ``rand``/``randn`` (``F.rand``, ``functions.randn``,
  ``from pyspark.sql.functions import rand``, or ``rand(`` inside a SQL expression string).
* ``seed``: no call passes ``seed=``, and no generator is built from a literal seed
  (``default_rng(42)``, ``PCG64(1)``, ...).

The last tests prove the scanner's power: each rule flags a small bad source.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCANNED_PACKAGES = ("dp_ops", "pipelines")

SPARK_LIKE = frozenset({"pyspark", "pandas", "pyarrow", "great_expectations"})
SPARK_FUNCTIONS = "pyspark.sql.functions"
SPARK_RANDOM_FUNCTIONS = frozenset({"rand", "randn"})
SQL_TAKING_METHODS = frozenset({"expr", "selectExpr", "sql", "where", "filter"})
SQL_RAND = re.compile(r"\brandn?\s*\(", re.IGNORECASE)
SEEDABLE_CONSTRUCTORS = frozenset(
    {
        "default_rng",
        "RandomState",
        "Generator",
        "SeedSequence",
        "PCG64",
        "PCG64DXSM",
        "Philox",
        "SFC64",
        "MT19937",
    }
)


@dataclass(frozen=True)
class Violation:
    rule: str
    line: int
    detail: str


def _dotted(node: ast.expr) -> str | None:
    """'a.b.c' for a Name/Attribute chain, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True


class _Scanner(ast.NodeVisitor):
    def __init__(self, package: str) -> None:
        self.package = package
        self.violations: list[Violation] = []
        # Local name → module it stands for. F and functions mean Spark's functions
        # even when imported in a way we do not follow.
        self.aliases: dict[str, str] = {"F": SPARK_FUNCTIONS, "functions": SPARK_FUNCTIONS}

    def flag(self, rule: str, node: ast.AST, detail: str) -> None:
        self.violations.append(Violation(rule, getattr(node, "lineno", 0), detail))

    def check_module(self, module: str, node: ast.AST) -> None:
        top = module.split(".")[0]
        if self.package == "dp_ops" and top in SPARK_LIKE:
            self.flag("spark-in-dp-ops", node, module)
        if top == "random":
            self.flag("random-module", node, module)
        if module == "numpy.random" or module.startswith("numpy.random."):
            self.flag("numpy-random", node, module)

    def resolve(self, dotted: str) -> str:
        head, _, rest = dotted.partition(".")
        target = self.aliases.get(head, head)
        return f"{target}.{rest}" if rest else target

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.check_module(alias.name, node)
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.aliases.setdefault(top, top)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level == 0:
            self.check_module(module, node)
            for alias in node.names:
                full = f"{module}.{alias.name}"
                self.check_module(full, node)
                if module == SPARK_FUNCTIONS and alias.name in SPARK_RANDOM_FUNCTIONS:
                    self.flag("spark-rand", node, full)
                self.aliases[alias.asname or alias.name] = full
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = _dotted(node)
        if dotted is not None:
            full = self.resolve(dotted)
            if full == "numpy.random" or full.startswith("numpy.random."):
                self.flag("numpy-random", node, dotted)
                return  # one finding per chain
            if full in {f"{SPARK_FUNCTIONS}.{name}" for name in SPARK_RANDOM_FUNCTIONS}:
                self.flag("spark-rand", node, dotted)
                return
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        for keyword in node.keywords:
            if keyword.arg == "seed":
                self.flag("seed", node, "seed= keyword")
        callee = _dotted(node.func)
        name = callee.rsplit(".", 1)[-1] if callee else None
        if name in SEEDABLE_CONSTRUCTORS and any(_is_literal(arg) for arg in node.args):
            self.flag("seed", node, f"{callee}(<literal>)")
        if name in {"import_module", "__import__"} and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                self.check_module(first.value, node)
        if name in SQL_TAKING_METHODS:
            for arg in node.args:
                if (
                    isinstance(arg, ast.Constant)
                    and isinstance(arg.value, str)
                    and SQL_RAND.search(arg.value)
                ):
                    self.flag("spark-rand", node, f"{name}({arg.value!r})")
        self.generic_visit(node)


def scan_source(source: str, package: str) -> list[Violation]:
    """Violations of the rules in one module's source (package: 'dp_ops' or 'pipelines')."""
    scanner = _Scanner(package)
    scanner.visit(ast.parse(source))
    return scanner.violations


def scanned_files() -> list[Path]:
    return sorted(
        path for package in SCANNED_PACKAGES for path in (REPO_ROOT / package).rglob("*.py")
    )


def test_scanner_sees_the_packages() -> None:
    files = scanned_files()
    assert any(path.parent.name == "dp_ops" for path in files)
    assert (REPO_ROOT / "dp_ops" / "selection.py") in files


@pytest.mark.parametrize("path", scanned_files(), ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_module_follows_the_privacy_rules(path: Path) -> None:
    package = path.relative_to(REPO_ROOT).parts[0]
    violations = scan_source(path.read_text(encoding="utf-8"), package)
    assert violations == [], "\n".join(
        f"{path.relative_to(REPO_ROOT)}:{v.line}: {v.rule}: {v.detail}" for v in violations
    )


# ---------------------------------------------------------------- the scanner's power

BAD_SOURCES = [
    ("spark-in-dp-ops", "dp_ops", "import pyspark\n"),
    ("spark-in-dp-ops", "dp_ops", "from pyspark.sql import functions as F\n"),
    ("spark-in-dp-ops", "dp_ops", "import pandas as pd\n"),
    ("spark-in-dp-ops", "dp_ops", "import pyarrow.compute as pc\n"),
    ("spark-in-dp-ops", "dp_ops", "import importlib\nimportlib.import_module('pyspark.sql')\n"),
    ("random-module", "dp_ops", "import random\n"),
    ("random-module", "pipelines", "from random import randint\n"),
    ("random-module", "pipelines", "import random as r\n"),
    ("numpy-random", "dp_ops", "import numpy as np\nx = np.random.laplace(0, 1)\n"),
    ("numpy-random", "dp_ops", "import numpy\nrng = numpy.random.default_rng()\n"),
    ("numpy-random", "pipelines", "from numpy.random import default_rng\n"),
    ("numpy-random", "pipelines", "from numpy import random\n"),
    ("numpy-random", "pipelines", "import numpy.random\n"),
    (
        "spark-rand",
        "pipelines",
        "from pyspark.sql import functions as F\ndf.withColumn('r', F.rand())\n",
    ),
    ("spark-rand", "pipelines", "import pyspark.sql.functions as G\nG.randn(3)\n"),
    ("spark-rand", "pipelines", "functions.rand()\n"),
    ("spark-rand", "pipelines", "from pyspark.sql.functions import rand\n"),
    ("spark-rand", "pipelines", "df.selectExpr('rand() as r')\n"),
    ("spark-rand", "pipelines", "import pyspark\npyspark.sql.functions.rand(1)\n"),
    ("seed", "pipelines", "make_noise(seed=7)\n"),
    ("seed", "dp_ops", "from numpy.random import default_rng\nrng = default_rng(42)\n"),
    ("seed", "dp_ops", "bits = PCG64(1234)\n"),
]


@pytest.mark.parametrize(("rule", "package", "source"), BAD_SOURCES)
def test_scanner_flags_each_rule(rule: str, package: str, source: str) -> None:
    rules = {violation.rule for violation in scan_source(source, package)}
    assert rule in rules, f"{rule} not flagged in {source!r}: {rules}"


GOOD_SOURCES = [
    ("dp_ops", "import os\nimport secrets\nx = secrets.randbelow(10)\ny = os.urandom(8)\n"),
    ("dp_ops", "import numpy as np\nx = np.arange(3)\n"),
    ("dp_ops", "from dp_ops.entropy import OsRandomBits\nbits = OsRandomBits()\n"),
    (
        "pipelines",
        "from pyspark.sql import functions as F\ndf.select(F.col('x'), F.sha2('y', 256))\n",
    ),
    ("pipelines", "import pandas as pd\nimport pyarrow as pa\n"),
    ("pipelines", "df.selectExpr('operand as x')\n"),
    ("pipelines", "rng = make_generator(source)\n"),
]


@pytest.mark.parametrize(("package", "source"), GOOD_SOURCES)
def test_scanner_accepts_good_sources(package: str, source: str) -> None:
    assert scan_source(source, package) == []
