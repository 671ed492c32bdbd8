"""Loading a job config: YAML parsing that refuses repeated keys, then validation.

Invariants: unknown keys and keys repeated in one mapping are errors that name their
field path; relative paths in a config file are resolved against that file's folder.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipelines.config.model import JobConfig
from pipelines.config.tables import (
    MultiTableConfig,
    ReleaseSpec,
    TableInvalidError,
    release_spec,
    single_table,
)
from pipelines.errors import ConfigError


def _field_path(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as a dotted field path like metrics[1].lower."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before") or "[" in str(part):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _error_lines(error: ValidationError, prefix: str = "") -> list[str]:
    """One line per pydantic error: its dotted field path and a plain message."""
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        path = _field_path(tuple(item["loc"]))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; `dprelease schema` lists the fields)"
        elif item["type"] == "missing":
            message = "required field is missing"
        message = message.removeprefix("Value error, ")
        where = "" if prefix and path == "(top level)" else f"{path}: "
        lines.append(f"{prefix}{where}{message}")
    return lines


def _invalid(source: str, lines: list[str]) -> ConfigError:
    return ConfigError(f"{source}: invalid config\n  " + "\n  ".join(lines))


def config_from_mapping(
    raw: Any, source: str = "config", base_dir: Path | None = None
) -> JobConfig:
    """Validate a parsed single-table YAML document; raise ConfigError naming every bad
    field path.

    With ``base_dir``, relative ``input.path``, ``partition_selection.public_keys.path``,
    ``release.output_root`` and ``ledger.path`` are resolved against it (absolute paths
    and URIs with a scheme are kept); without it, paths are kept as given.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of fields")
    try:
        return JobConfig.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as error:
        raise _invalid(source, _error_lines(error)) from None


def release_from_mapping(
    raw: Any, source: str = "config", base_dir: Path | None = None
) -> ReleaseSpec:
    """Validate a parsed YAML document of either form: with ``tables:`` (several tables)
    or without (one table). Raises ConfigError naming every bad field path; a rule a
    table breaks as a job of its own names ``tables[i]`` and the field."""
    if not isinstance(raw, dict) or "tables" not in raw:
        return single_table(config_from_mapping(raw, source, base_dir))
    try:
        multi = MultiTableConfig.model_validate(raw, context={"base_dir": base_dir})
        return release_spec(multi)
    except ValidationError as error:
        raise _invalid(source, _error_lines(error)) from None
    except TableInvalidError as invalid:
        name = raw["tables"][invalid.index].get("name", "")
        prefix = f"tables[{invalid.index}] ({name}): "
        raise _invalid(source, _error_lines(invalid.error, prefix)) from None


class DuplicateKeyError(yaml.YAMLError):
    """A key given twice in one YAML mapping; the message names its path and both lines."""


def _node_paths(root: yaml.Node) -> dict[int, str]:
    """The field path (``budget.epsilon``, ``metrics[1]``) of every node, keyed by id.

    Invariant: a node reached twice (a YAML alias) keeps the path where it is first met
    in breadth-first order; recursive documents terminate.
    """
    paths: dict[int, str] = {}
    queue: list[tuple[yaml.Node, str]] = [(root, "")]
    for node, path in queue:
        if id(node) in paths:
            continue
        paths[id(node)] = path
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                queue.append((value, f"{path}.{name}" if path else str(name)))
        elif isinstance(node, yaml.SequenceNode):
            queue.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))
    return paths


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader whose mappings refuse a repeated key, at every nesting level.

    Invariant: a document loads only if no mapping in it names one key twice (merge
    keys ``<<`` are YAML's explicit override and are not counted as repeats).
    """

    _paths: dict[int, str]

    def construct_document(self, node: yaml.Node) -> Any:
        self._paths = _node_paths(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, Hashable):
                continue  # the base constructor reports an unhashable key
            if key in seen:
                parent = getattr(self, "_paths", {}).get(id(node), "")
                path = f"{parent}.{key}" if parent else str(key)
                raise DuplicateKeyError(f"{path}: duplicate key (lines {seen[key]} and {line})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """Parse one YAML document; raise DuplicateKeyError on a key repeated in a mapping."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects


def load_release(path: str | Path) -> ReleaseSpec:
    """Read and validate a YAML job config of either form (one table or ``tables:``);
    raise ConfigError on any problem.

    Relative paths in the file are resolved against the file's folder (as named by
    ``path``), so a job reads and writes the same files from any working directory.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{file}: cannot read config file ({type(error).__name__})") from None
    try:
        raw = parse_yaml(text)
    except DuplicateKeyError as error:
        raise ConfigError(f"{file}: invalid config\n  {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{file}: malformed YAML{where}") from None
    return release_from_mapping(raw, str(file), base_dir=file.parent)


def load_config(path: str | Path) -> JobConfig:
    """Read and validate a single-table YAML job config; raise ConfigError on any problem
    (a config with ``tables:`` is refused: use ``load_release``)."""
    spec = load_release(path)
    if spec.multi:
        raise ConfigError(f"{path}: a release of several tables (use load_release)")
    return spec.config
