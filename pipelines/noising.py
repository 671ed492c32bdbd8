"""Partition selection and noise, in one vectorized Arrow UDF over the aggregated table.

Invariants: a partition's keep decision and each of its noise values are drawn exactly
once per task attempt, inside the task, from the OS CSPRNG (``SecureNoise``); the UDF is
marked non-deterministic so Spark never duplicates or re-orders it; every released count
or sum is ``grid * (exact integer + integer noise)``; mean and variance are
post-processing of those noisy values. Confidence intervals describe the noise only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.functions import pandas_udf

from dp_ops.grid import rounded_bounds
from dp_ops.noise import NoiseDistribution
from dp_ops.samplers import sample_bernoulli
from dp_ops.selection import (
    GaussianThresholdSelection,
    LaplaceThresholdSelection,
    TruncatedGeometricSelection,
)
from pipelines.plan import UNITS, OutputMetric, PublicPartitions, ReleasePlan
from pipelines.source import column

NOISY = "__noisy"
KEEP = "keep"
COUNT_METRICS = ("count", "privacy_id_count")
IntArray = npt.NDArray[np.int64] | npt.NDArray[np.object_]


class NoiseSource(Protocol):
    """Where integer noise and keep decisions come from (a seam for tests only)."""

    def integer_noise(self, distribution: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
        """``size`` independent draws of ``distribution``."""
        ...

    def keep(self, probabilities: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """One independent Bernoulli draw per probability."""
        ...


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
    """What the UDF needs, picklable and small: no config, no data, no generator."""

    aggregates: tuple[_Aggregate, ...]
    outputs: tuple[OutputMetric, ...]
    selection_kind: str  # "public", "truncated_geometric", "threshold"
    keep_table: tuple[float, ...]
    threshold_noise: NoiseDistribution | None
    threshold: int
    min_units: int
    clamp_negative_counts: bool
    decimals: int | None

    @property
    def inputs(self) -> list[str]:
        """Aggregated-table columns the UDF reads, in argument order."""
        names = [UNITS]
        for aggregate in self.aggregates:
            if aggregate.source not in names:
                names.append(aggregate.source)
        return names


def noise_step(plan: ReleasePlan) -> NoiseStep:
    """Extract the UDF's parameters from the plan (on the driver, before any data)."""
    selection = plan.selection
    keep_table: tuple[float, ...] = ()
    threshold_noise: NoiseDistribution | None = None
    threshold, min_units, kind = 0, 1, "public"
    if isinstance(selection, TruncatedGeometricSelection):
        kind, keep_table = "truncated_geometric", tuple(float(p) for p in selection.table)
    elif isinstance(selection, LaplaceThresholdSelection | GaussianThresholdSelection):
        kind, threshold_noise, threshold = "threshold", selection.noise, selection.threshold
        min_units = selection.min_units
    else:
        assert isinstance(selection, PublicPartitions)
    post = plan.config.post_processing
    return NoiseStep(
        aggregates=tuple(
            _Aggregate(a.name, a.source, a.noise, a.ci_half_width) for a in plan.aggregates
        ),
        outputs=plan.outputs,
        selection_kind=kind,
        keep_table=keep_table,
        threshold_noise=threshold_noise,
        threshold=threshold,
        min_units=min_units,
        clamp_negative_counts=post.clamp_negative_counts,
        decimals=post.decimals,
    )


def output_type(output: OutputMetric) -> T.DataType:
    """Spark type of a released value column (counts are integers)."""
    return T.LongType() if output.metric in COUNT_METRICS else T.DoubleType()


def noisy_struct_type(step: NoiseStep) -> T.StructType:
    """The UDF's struct: keep flag, then value, std, ci_low, ci_high per output."""
    fields = [T.StructField(KEEP, T.BooleanType(), True)]
    for output in step.outputs:
        value_type = output_type(output)
        fields += [
            T.StructField(output.name, value_type, True),
            T.StructField(f"{output.name}_std", T.DoubleType(), True),
            T.StructField(f"{output.name}_ci_low", value_type, True),
            T.StructField(f"{output.name}_ci_high", value_type, True),
        ]
    return T.StructType(fields)


def _exact_integers(series: pd.Series) -> IntArray:
    """An aggregate column as exact integers: int64 when it fits, Python ints otherwise."""
    if series.dtype != object:
        return series.to_numpy(dtype=np.int64)
    values = np.array([int(v) for v in series], dtype=object)
    if len(values) == 0 or max(abs(int(v)) for v in values) < 2**62:
        return values.astype(np.int64)
    return values


def keep_decisions(
    step: NoiseStep, units: npt.NDArray[np.int64], source: NoiseSource
) -> npt.NDArray[np.bool_]:
    """The DP keep decision per partition (all True for public partitions)."""
    if step.selection_kind == "public":
        return np.ones(len(units), dtype=bool)
    if step.selection_kind == "truncated_geometric":
        table = np.asarray(step.keep_table, dtype=np.float64)
        index = np.clip(units, 0, len(table) - 1)
        probabilities = np.where(units >= len(table), 1.0, table[index])
        return source.keep(probabilities)
    assert step.threshold_noise is not None
    noisy_units = units + source.integer_noise(step.threshold_noise, len(units))
    return np.asarray((units >= step.min_units) & (noisy_units >= step.threshold), dtype=bool)


def _as_float(values: IntArray) -> npt.NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64)


def _round(
    values: npt.NDArray[np.float64], decimals: int | None, lower: float, upper: float
) -> npt.NDArray[np.float64]:
    """Round to ``decimals`` and stay inside [lower, upper] (docs/privacy.md §7).

    Monotone, so interval order (low <= value <= high) survives rounding.
    """
    if decimals is None:
        return values
    low, high = rounded_bounds(lower, upper, decimals)
    return np.clip(np.round(values, decimals), low, high)


def released_columns(
    step: NoiseStep, noisy: Mapping[str, IntArray], size: int
) -> dict[str, npt.NDArray[np.generic]]:
    """Values, noise std and noise-only intervals of every output, from noisy integers.

    Pure post-processing: reads only the noisy integers and public parameters.
    """
    by_name = {a.name: a for a in step.aggregates}
    out: dict[str, npt.NDArray[np.generic]] = {}
    for output in step.outputs:
        name = output.name
        if output.metric in COUNT_METRICS:
            aggregate = by_name[name]
            counts = np.asarray(noisy[name], dtype=np.int64)
            count_lo, count_hi = counts - aggregate.half_width, counts + aggregate.half_width
            if step.clamp_negative_counts:
                counts, count_lo, count_hi = (
                    np.maximum(v, 0) for v in (counts, count_lo, count_hi)
                )
            out[name], out[f"{name}_ci_low"], out[f"{name}_ci_high"] = counts, count_lo, count_hi
            out[f"{name}_std"] = np.full(size, aggregate.noise.std())
            continue
        encoding = output.encoding
        assert encoding is not None and output.value_source is not None
        g = encoding.grid.step
        numerator = by_name[output.value_source]
        total = _as_float(noisy[output.value_source])
        if output.metric == "sum":
            h = numerator.half_width
            out[name] = total * g
            out[f"{name}_std"] = np.full(size, numerator.noise.std() * g)
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = (total - h) * g, (total + h) * g
            continue
        assert output.count_source is not None
        counter = by_name[output.count_source]
        count = np.maximum(_as_float(noisy[output.count_source]), 1.0)
        count_low = np.maximum(count - counter.half_width, 1.0)
        count_high = count + counter.half_width
        mid_units = (encoding.lo_units + encoding.hi_units) / 2
        lower, upper = encoding.lower, encoding.upper
        # Mean in centred units: y = 2*units - (lo + hi), so x = g * (mid + y / 2).
        mean_y = total / count
        y_corners = [
            (total + s * numerator.half_width) / c for s in (-1, 1) for c in (count_low, count_high)
        ]
        y_low, y_high = np.minimum.reduce(y_corners), np.maximum.reduce(y_corners)
        if output.metric == "mean":
            floor, top = lower, upper
            value = np.clip(g * (mid_units + mean_y / 2), lower, upper)
            std = (
                g
                / 2
                * np.sqrt(
                    (numerator.noise.std() / count) ** 2
                    + (total * counter.noise.std() / count**2) ** 2
                )
            )
            low = np.clip(g * (mid_units + y_low / 2), lower, upper)
            high = np.clip(g * (mid_units + y_high / 2), lower, upper)
        else:
            assert output.square_source is not None
            squares = by_name[output.square_source]
            square_total = _as_float(noisy[output.square_source])
            ceiling = ((upper - lower) / 2) ** 2
            floor, top = 0.0, ceiling
            scale = g * g / 4
            value = np.clip(scale * (square_total / count - mean_y**2), 0.0, ceiling)
            q_corners = [
                (square_total + s * squares.half_width) / c
                for s in (-1, 1)
                for c in (count_low, count_high)
            ]
            q_low, q_high = np.minimum.reduce(q_corners), np.maximum.reduce(q_corners)
            m2_low = np.where((y_low <= 0) & (y_high >= 0), 0.0, np.minimum(y_low**2, y_high**2))
            m2_high = np.maximum(y_low**2, y_high**2)
            low = np.clip(scale * (q_low - m2_high), 0.0, ceiling)
            high = np.clip(scale * (q_high - m2_low), 0.0, ceiling)
            std = scale * np.sqrt(
                (squares.noise.std() / count) ** 2
                + (2 * mean_y * numerator.noise.std() / count) ** 2
            )
        low, high = np.minimum(low, value), np.maximum(high, value)
        out[name] = _round(value, step.decimals, floor, top)
        out[f"{name}_std"] = std
        out[f"{name}_ci_low"] = _round(low, step.decimals, floor, top)
        out[f"{name}_ci_high"] = _round(high, step.decimals, floor, top)
    return out


def noisy_frame(
    step: NoiseStep, columns: Mapping[str, pd.Series], source: NoiseSource
) -> pd.DataFrame:
    """One batch of the aggregated table → the UDF's struct rows (same length).

    Draws the keep decisions, then one noise value per (kept partition, aggregate);
    rows that are not kept get no noise and null values.
    """
    units = _exact_integers(columns[UNITS]).astype(np.int64)
    size = len(units)
    keep = keep_decisions(step, units, source)
    kept = int(keep.sum())
    noisy: dict[str, IntArray] = {}
    for aggregate in step.aggregates:
        exact = _exact_integers(columns[aggregate.source])[keep]
        noisy[aggregate.name] = exact + source.integer_noise(aggregate.noise, kept)
    released = released_columns(step, noisy, kept)
    frame = pd.DataFrame({KEEP: keep})
    for field in noisy_struct_type(step).fields[1:]:
        values = released[field.name]
        dtype = "Int64" if isinstance(field.dataType, T.LongType) else "Float64"
        full = pd.array([None] * size, dtype=dtype)  # type: ignore[call-overload]
        full[keep] = values
        frame[field.name] = full
    return frame


def apply_noise(aggregated: DataFrame, plan: ReleasePlan, source: NoiseSource) -> DataFrame:
    """One row per released partition: keys, then value, std, ci_low, ci_high per output.

    Invariant: the UDF runs once per aggregated row per task attempt; the caller must
    materialize the result (write it) before anything else reads it.
    """
    step = noise_step(plan)
    keys = [column(name) for name in plan.config.partition_columns]
    struct = noisy_struct_type(step)
    inputs = step.inputs

    def draw(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield noisy_frame(step, dict(zip(inputs, batch, strict=True)), source)

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
    """The explicit Arrow schema of the released Parquet files."""
    fields = [pa.field(f.name, _ARROW_TYPES[type(f.dataType)]) for f in keys.fields]
    for output in plan.outputs:
        value = _ARROW_TYPES[type(output_type(output))]
        fields += [
            pa.field(output.name, value),
            pa.field(f"{output.name}_std", pa.float64()),
            pa.field(f"{output.name}_ci_low", value),
            pa.field(f"{output.name}_ci_high", value),
        ]
    return pa.schema(fields)
