"""Reading the private input and the public keys, and checking their shape.

Invariant: error messages name columns and types only, never a value from the data.
"""

from __future__ import annotations

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.config import InputConfig, JobConfig, PublicKeysConfig

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


class InputContractError(Exception):
    """The input does not meet the job's contract; the message names the column."""


def _read(
    spark: SparkSession,
    path: str | None,
    table: str | None,
    fmt: str,
    options: dict[str, str],
    what: str,
) -> DataFrame:
    try:
        if table is not None:
            return spark.table(table)
        assert path is not None
        return spark.read.format(fmt).options(**options).load(path)
    except AnalysisException as error:
        reason = getattr(error, "getCondition", lambda: None)() or type(error).__name__
        where = table if table is not None else path
        raise InputContractError(f"{what}: cannot read {where!s} as {fmt} ({reason})") from None


def read_input(spark: SparkSession, source: InputConfig) -> DataFrame:
    """The private table as a DataFrame (lazy: no data is read yet)."""
    return _read(spark, source.path, source.table, source.format, source.options, "input")


def check_input_schema(frame: DataFrame, config: JobConfig) -> None:
    """Raise InputContractError unless every configured column exists with a usable type."""
    types = {field.name: field.dataType for field in frame.schema.fields}
    wanted = {
        f"privacy_unit.column '{config.privacy_unit.column}'": config.privacy_unit.column,
        **{f"partition_columns '{name}'": name for name in config.partition_columns},
        **{f"metric column '{name}'": name for name in config.measured_columns},
    }
    missing = [label for label, name in wanted.items() if name not in types]
    if missing:
        raise InputContractError(
            f"input: missing column(s): {', '.join(missing)}; the input has {sorted(types)}"
        )
    for name in config.partition_columns:
        if not isinstance(types[name], KEY_TYPES):
            raise InputContractError(
                f"input: partition column '{name}' has type {types[name].simpleString()}; "
                "use a string, integer, boolean, date or timestamp column"
            )
    for name in config.measured_columns:
        if not isinstance(types[name], NUMERIC):
            raise InputContractError(
                f"input: metric column '{name}' has type {types[name].simpleString()}; "
                "it must be numeric"
            )
    unit_type = types[config.privacy_unit.column]
    if not isinstance(unit_type, KEY_TYPES):
        raise InputContractError(
            f"input: privacy_unit.column '{config.privacy_unit.column}' has type "
            f"{unit_type.simpleString()}; use a string or integer id"
        )


def read_public_keys(
    spark: SparkSession, keys: PublicKeysConfig, frame: DataFrame, config: JobConfig
) -> DataFrame:
    """Public partition keys, cast to the input's key types; one row per distinct key.

    Raises InputContractError if a key column is missing, a key is null or repeated.
    The keys are public, so counting their duplicates is no privacy matter.
    """
    table = _read(spark, keys.path, keys.table, keys.format, keys.options, "public_keys")
    names = config.partition_columns
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise InputContractError(
            f"public_keys: missing column(s) {missing}; it has {table.columns}"
        )
    types = {f.name: f.dataType for f in frame.schema.fields}
    # One row per key in the public file, typed like the input's keys.
    typed = table.select(*[F.col(n).cast(types[n]).alias(n) for n in names])
    stats = typed.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count_distinct(*[F.col(n) for n in names]).alias("distinct"),
        F.sum(
            F.when(
                F.greatest(*[F.col(n).isNull().cast("int") for n in names], F.lit(0)) > 0, 1
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
