"""Reading the private input and the public keys, and checking their shape.

Invariant: error messages name columns and types only, never a value from the data.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from py4j.protocol import Py4JJavaError  # type: ignore[import-untyped]
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.config import InputConfig, JobConfig, PublicKeysConfig
from pipelines.errors import InputContractError

NUMERIC = (
    T.ByteType,
    T.ShortType,
    T.IntegerType,
    T.LongType,
    T.FloatType,
    T.DoubleType,
    T.DecimalType,
)
KEY_TYPES = (
    T.StringType,
    T.ByteType,
    T.ShortType,
    T.IntegerType,
    T.LongType,
    T.DateType,
    T.TimestampType,
    T.TimestampNTZType,
    T.BooleanType,
)


def _read(
    spark: SparkSession,
    path: str | None,
    table: str | None,
    fmt: str,
    options: dict[str, str],
    what: str,
    schema: T.StructType | None = None,
) -> DataFrame:
    try:
        if table is not None:
            return spark.table(table)
        assert path is not None
        reader = spark.read.format(fmt).options(**options)
        return (reader if schema is None else reader.schema(schema)).load(path)
    except (AnalysisException, Py4JJavaError) as error:
        # Resolving a source reads metadata only (paths, footers, headers, the format's
        # class); the reason names the error class, never a value.
        where = table if table is not None else path
        raise InputContractError(
            f"{what}: cannot read {where!s} as {fmt} ({_reason(error)}); check "
            f"{what}.path, {what}.format and {what}.options"
        ) from None


def _reason(error: Exception) -> str:
    """The error class of a failed source resolution (Spark's condition, or the JVM class)."""
    condition = getattr(error, "getCondition", lambda: None)()
    if condition:
        return str(condition)
    java = getattr(error, "java_exception", None)
    if java is not None:
        return str(java.getClass().getName())
    return type(error).__name__


# Side files Spark and Hadoop writers leave next to data files; Spark skips them.
_SIDE_FILES = re.compile(
    r"^(_SUCCESS|_metadata|_common_metadata|_committed_.*|_started_.*|\..*\.crc)$"
)
# Formats whose files carry a footer that names every column and its type.
FOOTER_FORMATS = frozenset({"parquet"})


def _local_files(path: str) -> list[Path] | None:
    """The data files Spark would read under a local ``path``; None for a remote URI.

    Raises InputContractError naming a file Spark would silently skip (a name starting
    with '_' or '.' that is not a writer's side file).
    """
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) and not path.startswith("file://"):
        return None
    root = Path(path.removeprefix("file://"))
    if not root.exists():
        raise InputContractError(f"input.path: {root} does not exist")
    if root.is_file():
        return [root]
    files = []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        hidden = [part for part in file.relative_to(root).parts if part.startswith(("_", "."))]
        if not hidden:
            files.append(file)
        elif not _SIDE_FILES.match(file.name) or len(hidden) > 1:
            raise InputContractError(
                f"input: {file} starts with '_' or '.', so Spark would skip it; "
                "rename it to be read, or move it out of the input folder"
            )
    return files


def check_input_files(config: JobConfig) -> None:
    """Footers of every local Parquet input file: readable, and one type per configured
    column across all files. Metadata only: no row is read.

    Raises InputContractError naming the file and the reason.
    """
    source = config.input
    if source.path is None or source.format.lower() not in FOOTER_FORMATS:
        return
    files = _local_files(source.path)
    if files is None:
        return
    wanted = [config.privacy_unit.column, *config.partition_columns, *config.measured_columns]
    seen: dict[str, tuple[str, Path]] = {}
    for file in files:
        try:
            schema = pq.read_schema(file)
        except (OSError, pa.ArrowException) as error:
            reason = str(error).splitlines()[0][:200]
            raise InputContractError(
                f"input: {file} is not a readable Parquet file ({reason})"
            ) from None
        for name in wanted:
            if name not in schema.names:
                continue
            kind = str(schema.field(name).type)
            first = seen.setdefault(name, (kind, file))
            if first[0] != kind:
                raise InputContractError(
                    f"input: column '{name}' is {first[0]} in {first[1]} but {kind} in {file}; "
                    "all input files must agree on the configured columns' types"
                )


# Sources that carry no typed schema of their own: their values are read as text and
# cast to the declared types (input.schema), never typed by inference from private rows.
TEXT_FORMATS = frozenset({"csv", "json"})
# Reader options that would type the input by what its rows contain (value None: any).
_DATA_DEPENDENT_OPTIONS: dict[str, str | None] = {
    "inferschema": "true",
    "samplingratio": None,
    "prefersdecimal": "true",
}

# The declared types a config may name (input.schema), as Spark types.
DECLARED_TYPES: dict[str, T.DataType] = {
    "string": T.StringType(),
    "int": T.IntegerType(),
    "long": T.LongType(),
    "bigint": T.LongType(),
    "double": T.DoubleType(),
    "boolean": T.BooleanType(),
    "date": T.DateType(),
    "timestamp": T.TimestampType(),
}


def declared_types(config: JobConfig) -> dict[str, T.DataType]:
    """The type of every configured column for a text source: ``input.schema``, or string
    for the privacy unit and partition columns and double for measured columns.

    Invariant: a function of the config alone (docs/privacy.md §9).
    """
    given = config.input.schema or {}
    defaults: dict[str, T.DataType] = {config.privacy_unit.column: T.StringType()}
    defaults |= {name: T.StringType() for name in config.partition_columns}
    defaults |= {name: T.DoubleType() for name in config.measured_columns}
    return {n: DECLARED_TYPES[given[n]] if n in given else t for n, t in defaults.items()}


def _check_reader_options(source: InputConfig) -> None:
    for name, value in source.options.items():
        key = name.lower()
        if key in _DATA_DEPENDENT_OPTIONS and _DATA_DEPENDENT_OPTIONS[key] in (None, value.lower()):
            raise InputContractError(
                f"input.options.{name}: refused; types must not be inferred from private rows "
                "(declare them in input.schema)"
            )
        if key == "mode" and value.upper() != "PERMISSIVE":
            raise InputContractError(
                f"input.options.{name}: only PERMISSIVE is allowed; a malformed private row must "
                "become an invalid row (dropped per contracts), not end the run"
            )


def read_input(spark: SparkSession, config: JobConfig) -> DataFrame:
    """The private table as a DataFrame with the configured columns' types (lazy).

    Invariant: the column types are a function of the config and the source's declared
    schema only, never of the private rows (docs/privacy.md §9). Text sources (csv, json)
    are read as text and cast with ``try_cast``: a value that does not cast becomes null,
    an invalid row under the contract rules, never a type change or a failed run.
    """
    source = config.input
    fmt = source.format.lower()
    if fmt not in TEXT_FORMATS:
        frame = _read(spark, source.path, source.table, source.format, source.options, "input")
        check_declared_schema(frame, config)
        return frame
    _check_reader_options(source)
    types = declared_types(config)
    options = {k: v for k, v in source.options.items() if k.lower() != "inferschema"}
    text: T.StructType | None = None
    if fmt == "json":
        # Explicit text schema by field name: no inference pass over private rows.
        text = T.StructType([T.StructField(n, T.StringType()) for n in types])
    else:
        options["inferSchema"] = "false"
    frame = _read(spark, source.path, source.table, fmt, options, "input", text)
    missing = [n for n in types if n not in frame.columns]
    if missing:
        raise InputContractError(
            f"input: missing column(s) {missing} in the header of {source.path}; "
            f"the header has {frame.columns}"
        )
    # One row per input row: the configured columns, cast to their declared types.
    return frame.select(*[F.col(quoted(n)).try_cast(t).alias(n) for n, t in types.items()])


def check_declared_schema(frame: DataFrame, config: JobConfig) -> None:
    """For typed sources: ``input.schema``, where given, must match the source's schema."""
    given = config.input.schema or {}
    actual = {f.name: f.dataType for f in frame.schema.fields}
    for name, type_name in given.items():
        if name in actual and actual[name] != DECLARED_TYPES[type_name]:
            raise InputContractError(
                f"input.schema.{name}: declared {type_name}, but the input's schema has "
                f"{actual[name].simpleString()}"
            )


def quoted(name: str) -> str:
    """A column name as a Spark identifier (dots, spaces and backticks allowed)."""
    return "`" + name.replace("`", "``") + "`"


def column(name: str) -> Column:
    """A reference to the column literally named ``name`` (never a struct-field path)."""
    return F.col(quoted(name))


def read_public_keys(
    spark: SparkSession,
    keys: PublicKeysConfig,
    frame: DataFrame,
    config: JobConfig,
    names: list[str] | None = None,
) -> DataFrame:
    """Public partition keys of the file, cast to the input's key types; one row per key.

    ``names``: the partition columns the file holds (default: all of them).

    Raises InputContractError if a key column is missing, a key is null or repeated.
    The keys are public, so counting their duplicates is no privacy matter.
    """
    table = _read(spark, keys.path, keys.table, keys.format, keys.options, "public_keys")
    names = config.partition_columns if names is None else names
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise InputContractError(
            f"public_keys: missing column(s) {missing}; it has {table.columns}"
        )
    types = {f.name: f.dataType for f in frame.schema.fields}
    # One row per key in the public file, typed like the input's keys.
    typed = table.select(*[column(n).cast(types[n]).alias(n) for n in names])
    stats = typed.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count_distinct(*[column(n) for n in names]).alias("distinct"),
        F.sum(
            F.when(
                F.greatest(*[column(n).isNull().cast("int") for n in names], F.lit(0)) > 0, 1
            ).otherwise(0)
        ).alias("nulls"),
    ).first()
    assert stats is not None
    if stats["nulls"]:
        raise InputContractError(
            f"public_keys: {stats['nulls']} key(s) are null or do not convert to the input's "
            f"types {[types[n].simpleString() for n in names]}"
        )
    if stats["rows"] != stats["distinct"]:
        raise InputContractError(
            f"public_keys: {stats['rows'] - stats['distinct']} duplicate key(s); "
            "keys must be unique"
        )
    if stats["rows"] == 0:
        raise InputContractError("public_keys: the keys file is empty")
    return typed
