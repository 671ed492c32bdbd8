"""The public keys of a release as one DataFrame: a keys file, generated values, or both.

Generated keys (``partition_selection.public_keys.values``) are a function of the config
alone and a keys file is public input, so everything here is public: checking, counting
and naming keys in messages reveals nothing about the private data (docs/privacy.md §6).

Invariant: the result has one row per distinct key, one column per partition column in
``config.partition_columns`` order, typed like the input's partition columns; no two
values of a column differ only by surrounding whitespace or case.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.config import JobConfig, PublicKeysConfig
from pipelines.config.key_generators import (
    PUBLIC_KEYS_LIMIT,
    IntegerRange,
    KeyGenerator,
    generated_key_count,
    generated_values,
)
from pipelines.errors import ConfigError
from pipelines.source import column, read_public_keys

_FIELD = "partition_selection.public_keys"


def public_key_frame(
    spark: SparkSession, keys: PublicKeysConfig, frame: DataFrame, config: JobConfig
) -> DataFrame:
    """Every public key, typed like ``frame``'s partition columns; one row per key.

    The keys file's keys (over the partition columns not generated) times the cross
    product of the generated columns. Raises ConfigError for a generated value that does
    not convert to its column's type, for values of one column that differ only by
    surrounding whitespace or case, and for more than ``PUBLIC_KEYS_LIMIT`` keys.
    """
    types = {f.name: f.dataType for f in frame.schema.fields}
    generated = keys.values or {}
    file_columns = [n for n in config.partition_columns if n not in generated]
    product: DataFrame | None = None
    if keys.has_file:
        product = read_public_keys(spark, keys, frame, config, file_columns)
        check_case_clashes(product, file_columns, f"{_FIELD} (keys file)")
        total = product.count() * generated_key_count(generated)
        if total > PUBLIC_KEYS_LIMIT:
            raise ConfigError(
                f"{_FIELD}: the keys file times the values holds {total:,} keys, more than "
                f"PUBLIC_KEYS_LIMIT ({PUBLIC_KEYS_LIMIT:,})"
            )
    for name, generator in generated.items():
        values = generated_column(spark, name, generator, types[name])
        # One row per key of the columns so far times one value of ``name``.
        product = values if product is None else product.crossJoin(values)
    assert product is not None  # the config names a file or at least one column
    # One row per public key, columns in the configured order.
    return product.select(*[column(n) for n in config.partition_columns])


def generated_column(
    spark: SparkSession, name: str, generator: KeyGenerator, data_type: T.DataType
) -> DataFrame:
    """One column's generated values, cast to ``data_type``; one row per value.

    Raises ConfigError naming the column and the value that does not convert, or two
    values that become one key (or, for text, differ only by surrounding whitespace or case).
    """
    values = generated_values(generator)
    if isinstance(values, IntegerRange):
        first, last = values.range
        # One row per integer of the range.
        raw = spark.range(first, last + 1).select(F.col("id").alias("given"))
    else:
        # One row per listed value (or ISO week), as text.
        raw = spark.createDataFrame([(v,) for v in values], "given string")
    # One row per value: the value as given and as the column's type.
    typed = raw.select("given", F.col("given").try_cast(data_type).alias(name))
    field = f"{_FIELD}.values.{name}"
    failed = typed.filter(column(name).isNull()).select("given").limit(1).collect()
    if failed:
        raise ConfigError(
            f"{field}: {failed[0]['given']!r} does not convert to the column's type "
            f"{data_type.simpleString()}"
        )
    # One row per key that two or more given values became.
    repeated = (
        typed.groupBy(column(name))
        .agg(F.min("given").alias("first"), F.max("given").alias("second"), F.count("*").alias("n"))
        .filter(F.col("n") > 1)
        .limit(1)
        .collect()
    )
    if repeated:
        raise ConfigError(
            f"{field}: {repeated[0]['first']!r} and {repeated[0]['second']!r} are the same "
            f"key as {data_type.simpleString()}"
        )
    return typed.select(name)


def check_case_clashes(keys: DataFrame, names: list[str], field: str) -> None:
    """No two values of a text column of ``keys`` differ only by surrounding whitespace or case.

    Raises ConfigError naming the column and both values (the keys are public).
    """
    text = [f.name for f in keys.schema.fields if f.name in names and f.dataType == T.StringType()]
    for name in text:
        # One row per folded value that two or more distinct values share.
        clash = (
            keys.groupBy(F.lower(F.trim(column(name))).alias("folded"))
            .agg(F.min(column(name)).alias("first"), F.max(column(name)).alias("second"))
            .filter(F.col("first") != F.col("second"))
            .limit(1)
            .collect()
        )
        if clash:
            raise ConfigError(
                f"{field}: column {name!r} has {clash[0]['first']!r} and "
                f"{clash[0]['second']!r}, which differ only by surrounding whitespace or case"
            )
