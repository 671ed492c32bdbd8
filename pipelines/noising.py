"""Partition selection and noise, in one vectorized Arrow UDF over the aggregated table.

Invariants: a partition's keep decision and each of its noise values are drawn exactly
once per task attempt, inside the task, from the OS CSPRNG (``SecureNoise``); the UDF is
marked non-deterministic so Spark never duplicates or re-orders it; every released count
or sum is ``grid * (exact integer + integer noise)``; mean and variance are
post-processing of those noisy values. Confidence intervals describe the noise only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.functions import pandas_udf

from dp_ops.noise import NoiseDistribution
from dp_ops.samplers import sample_bernoulli
from dp_ops.selection_rules import RandomDraws, ThresholdRule
from pipelines.consistency import RowRules, consistent_values, row_rules
from pipelines.derivation import IntArray, NoisyPart, PostProcessing, Role, unreliable
from pipelines.plan import UNITS, OutputMetric, ReleasePlan
from pipelines.plan_metrics import SharedSum
from pipelines.plan_selection import Selection
from pipelines.released import FLAG, ReleasedColumn, released_name
from pipelines.source import column

NOISY = "__noisy"
_EXACT_LIMIT = 2**62  # int64 arithmetic below this magnitude, Python ints above
KEEP = "keep"


class NoiseSource(RandomDraws, Protocol):
    """Where integer noise and keep decisions come from (a seam for tests only)."""


class SecureNoise:
    """Production noise: exact samplers over the OS CSPRNG, fresh state in every call.

    Holds no state, so pickling it into the UDF closure captures no generator.
    """

    def integer_noise(self, distribution: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
        """Exact integer noise, drawn inside the calling task."""
        return distribution.sample(size)

    def keep(self, probabilities: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """Exact Bernoulli draws, inside the calling task."""
        return sample_bernoulli(probabilities)


@dataclass(frozen=True)
class _Aggregate:
    name: str
    source: str
    noise: NoiseDistribution
    half_width: int


@dataclass(frozen=True)
class NoiseStep:
    """What the UDF needs, picklable and small: no config, no data, no generator.

    The selection rule carries its keep table or threshold, built on the driver.
    """

    aggregates: tuple[_Aggregate, ...]
    outputs: tuple[OutputMetric, ...]
    released: tuple[ReleasedColumn, ...]
    selection: Selection
    post: PostProcessing
    rules: RowRules
    reuses: str | None = None  # the aggregate whose noisy value is the rule's noisy count

    @property
    def inputs(self) -> list[str]:
        """Aggregated-table columns the UDF reads, in argument order."""
        names = [UNITS]
        for aggregate in self.aggregates:
            if aggregate.source not in names:
                names.append(aggregate.source)
        return names


def noise_step(plan: ReleasePlan) -> NoiseStep:
    """Extract the UDF's parameters from the plan (on the driver, before any data).

    Quantile trees are left out: their noise is drawn per released partition after
    selection (``pipelines.quantiles``), and their columns are joined on the keys.
    """
    trees = {o.name for o in plan.trees}
    return NoiseStep(
        aggregates=tuple(
            _Aggregate(a.name, a.source, a.noise, a.ci_half_width) for a in plan.aggregates
        ),
        outputs=tuple(o for o in plan.outputs if o.tree is None),
        released=tuple(c for c in plan.released if c.output not in trees),
        selection=plan.selection,
        post=plan.post,
        rules=row_rules(plan.outputs, plan.post),
        reuses=plan.selection_reuses,
    )


def _spark_type(column: ReleasedColumn) -> T.DataType:
    if column.boolean:
        return T.BooleanType()
    return T.LongType() if column.integer else T.DoubleType()


def noisy_struct_type(step: NoiseStep) -> T.StructType:
    """The UDF's struct: keep flag, then the released columns (value, std, ci_low, ci_high,
    and the reliability flag when configured)."""
    fields = [T.StructField(KEEP, T.BooleanType(), True)]
    fields += [T.StructField(c.name, _spark_type(c), True) for c in step.released]
    return T.StructType(fields)


def _exact_integers(series: pd.Series) -> IntArray:
    """An aggregate column as exact integers: int64 when it fits, Python ints otherwise."""
    if series.dtype != object:
        return series.to_numpy(dtype=np.int64)
    values = np.array([int(v) for v in series], dtype=object)
    if len(values) == 0 or max(abs(int(v)) for v in values) < 2**62:
        return values.astype(np.int64)
    return values


def derived_sum(values: IntArray, counts: IntArray, shared: SharedSum) -> IntArray:
    """A shared sum's noisy integer Σy + C·(lo_u + hi_u), exact (half-grid units).

    int64 when every term provably fits, else Python ints (as the noisy integers).
    """
    if len(values) == 0:
        return np.asarray(values, dtype=np.int64)
    largest = max(abs(int(v)) for v in (np.max(values), np.min(values)))
    largest_count = max(abs(int(c)) for c in (np.max(counts), np.min(counts)))
    if largest + largest_count * abs(shared.offset) < _EXACT_LIMIT:
        return np.asarray(values, dtype=np.int64) + np.asarray(counts, dtype=np.int64) * int(
            shared.offset
        )
    exact: IntArray = np.asarray(values, dtype=object) + np.asarray(counts, dtype=object) * (
        shared.offset
    )
    return exact


def released_columns(
    step: NoiseStep, noisy: Mapping[str, IntArray], size: int
) -> dict[str, npt.NDArray[np.generic]]:
    """Values, noise std and noise-only intervals of every output, from noisy integers.

    Pure post-processing: reads only the noisy integers and public parameters; the
    released values of counts and sums are first made consistent (``step.rules``,
    docs/privacy.md §7), then each metric kind derives its own columns
    (``MetricKind.derive``). Other metrics (a mean's count) read the noisy integers as drawn.
    """
    by_name = {a.name: a for a in step.aggregates}
    variances = {a.name: a.noise.variance() for a in step.aggregates}
    noisy = dict(noisy)
    for output in step.outputs:
        if output.shared is not None:
            shared = output.shared
            noisy[shared.name] = derived_sum(noisy[shared.value], noisy[shared.count], shared)
            variances[shared.name] = shared.noise.variance()
    projected = consistent_values(step.rules, noisy, variances)
    out: dict[str, npt.NDArray[np.generic]] = {}
    for output in step.outputs:
        parts: dict[Role, NoisyPart] = {
            role: NoisyPart(noisy[name], by_name[name].noise, by_name[name].half_width)
            for role, name in output.sources
        }
        if output.shared is not None:
            shared = output.shared
            parts = {"value": NoisyPart(noisy[shared.name], shared.noise, shared.half_width)}
        value = output.value_aggregate
        if value in projected:
            parts["value"] = replace(parts["value"], values=projected[value], center=noisy[value])
        released = output.kind.derive(parts, output.encoding, step.post, size)
        out[released_name(output.name, "value")] = released.value
        out[released_name(output.name, "std")] = released.std
        out[released_name(output.name, "ci_low")] = released.low
        out[released_name(output.name, "ci_high")] = released.high
        share = step.post.reliability_share
        if share is not None:
            flags = unreliable(released.value, released.low, released.high, share)
            out[released_name(output.name, FLAG)] = flags
    return out


#: The nullable pandas dtype of each released column's Spark type (nulls: rows not kept).
_PANDAS_TYPES: dict[type[T.DataType], str] = {
    T.LongType: "Int64",
    T.DoubleType: "Float64",
    T.BooleanType: "boolean",
}


def noisy_frame(
    step: NoiseStep, columns: Mapping[str, pd.Series], source: NoiseSource
) -> pd.DataFrame:
    """One batch of the aggregated table → the UDF's struct rows (same length).

    Draws the keep decisions, then one noise value per (kept partition, aggregate);
    rows that are not kept get no noise and null values.
    """
    units = _exact_integers(columns[UNITS]).astype(np.int64)
    size = len(units)
    noisy: dict[str, IntArray] = {}
    rule = step.selection
    if step.reuses is not None and isinstance(rule, ThresholdRule):
        # Post-aggregation thresholding: one draw per partition, the rule's noisy unit
        # count, decides the keep and is the released privacy_id_count (docs/privacy.md §6).
        noisy_units = units + source.integer_noise(rule.noise, size)
        keep = np.asarray((units >= rule.min_units) & (noisy_units >= rule.threshold), dtype=bool)
        noisy[step.reuses] = noisy_units[keep]
    else:
        keep = rule.keep(units, source)
    kept = int(keep.sum())
    for aggregate in step.aggregates:
        if aggregate.name in noisy:
            continue
        exact = _exact_integers(columns[aggregate.source])[keep]
        noisy[aggregate.name] = exact + source.integer_noise(aggregate.noise, kept)
    released = released_columns(step, noisy, kept)
    frame = pd.DataFrame({KEEP: keep})
    for field in noisy_struct_type(step).fields[1:]:
        values = released[field.name]
        dtype = _PANDAS_TYPES[type(field.dataType)]
        full = pd.array([None] * size, dtype=dtype)  # type: ignore[call-overload]
        full[keep] = values
        frame[field.name] = full
    return frame


def apply_noise(aggregated: DataFrame, plan: ReleasePlan, source: NoiseSource) -> DataFrame:
    """One row per released partition: keys, then value, std, ci_low, ci_high per output
    (quantile trees' columns excepted: ``pipelines.quantiles``).

    Invariant: the UDF runs once per aggregated row per task attempt; the caller must
    materialize the result (write it) before anything else reads it.
    """
    step = noise_step(plan)
    keys = [column(name) for name in plan.columns.partition_columns]
    struct = noisy_struct_type(step)
    inputs = step.inputs

    def draw(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            # One input column arrives as a bare Series, not a one-element tuple.
            series = (batch,) if isinstance(batch, pd.Series) else batch
            yield noisy_frame(step, dict(zip(inputs, series, strict=True)), source)

    noise_udf = pandas_udf(draw, returnType=struct).asNondeterministic()  # type: ignore[call-overload]
    # One row per partition, with its struct of noisy outputs (drawn once).
    drawn = aggregated.select(*keys, noise_udf(*[F.col(c) for c in inputs]).alias(NOISY))
    # One row per released partition.
    return drawn.filter(F.col(f"{NOISY}.{KEEP}")).select(
        *keys, *[F.col(f"{NOISY}.{f.name}").alias(f.name) for f in struct.fields[1:]]
    )


_ARROW_TYPES: dict[type[T.DataType], pa.DataType] = {
    T.ByteType: pa.int8(),
    T.ShortType: pa.int16(),
    T.IntegerType: pa.int32(),
    T.LongType: pa.int64(),
    T.DoubleType: pa.float64(),
    T.StringType: pa.string(),
    T.BooleanType: pa.bool_(),
    T.DateType: pa.date32(),
    T.TimestampType: pa.timestamp("us", tz="UTC"),
    T.TimestampNTZType: pa.timestamp("us"),
}


def release_schema(plan: ReleasePlan, keys: T.StructType) -> pa.Schema:
    """The explicit Arrow schema of the released Parquet files: keys, then released columns."""
    fields = [pa.field(f.name, _ARROW_TYPES[type(f.dataType)]) for f in keys.fields]
    fields += [pa.field(c.name, _ARROW_TYPES[type(_spark_type(c))]) for c in plan.released]
    return pa.schema(fields)
