"""Deliberately broken variants of the release job. Test-only: each one must be caught.

Each variant is substituted for a name ``pipelines.job`` looks up at run time (with
pytest's ``monkeypatch``) or passed through ``run_release``'s ``source=`` seam. This
module is pickled by value into Spark UDFs (see conftest), so executors never import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.functions import pandas_udf

import pipelines.bounding
import pipelines.job
import pipelines.plan_metrics
from dp_ops.calibration import ContributionBounds
from dp_ops.noise import DiscreteGaussian, DiscreteLaplace, NoiseDistribution
from dp_ops.quantile_tree import tree_sensitivity
from dp_ops.samplers import sample_bernoulli
from pipelines.bounding import BoundingSalt, LeafSample, bound_contributions, select_encoded
from pipelines.contracts import ObservedInput, Verdict
from pipelines.leaf_entries import leaves_column, row_entry_column
from pipelines.noising import apply_noise
from pipelines.plan import ROWS, UNITS, ReleasePlan

# The real functions, captured before any test patches pipelines.job (the ones it imports
# are taken from their defining modules, which no test patches).
REAL_BOUND_CONTRIBUTIONS = bound_contributions
REAL_APPLY_NOISE = apply_noise
REAL_AGGREGATED_FRAME = pipelines.job.aggregated_frame
REAL_SELECT_ENCODED = select_encoded


# (i) Half the noise scale, through the NoiseSource seam.
class HalfScaleNoise:
    """Exact integer noise, but with half the calibrated scale (sigma for Gaussians)."""

    def integer_noise(self, distribution: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
        if isinstance(distribution, DiscreteLaplace):
            return DiscreteLaplace(distribution.scale / 2).sample(size)
        assert isinstance(distribution, DiscreteGaussian)
        return DiscreteGaussian(distribution.sigma_squared / 4).sample(size)

    def keep(self, probabilities: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        return sample_bernoulli(probabilities)


# (ii) Cross-partition bounding skipped: L0 ignored, Linf still applied.
def bound_contributions_ignoring_l0(
    encoded: DataFrame, plan: ReleasePlan, salt: BoundingSalt
) -> DataFrame:
    linf = plan.bounds.max_rows_per_unit_per_partition
    unbounded = dataclasses.replace(plan, bounds=ContributionBounds(2**31 - 1, linf))
    return REAL_BOUND_CONTRIBUTIONS(encoded, unbounded, salt)


# Wrong unit: every row bounded as if it were its own privacy unit (row-level bounding).
def select_encoded_with_rows_as_units(rows: DataFrame, plan: ReleasePlan) -> DataFrame:
    unit = plan.columns.privacy_unit
    row_ids = rows.withColumn(unit, F.monotonically_increasing_id().cast(T.StringType()))
    return REAL_SELECT_ENCODED(row_ids, plan)


# Quantiles with Linf ignored for values: a cell keeps the leaves of all its rows.
def leaf_sample_ignoring_linf(
    by_unit: DataFrame, plan: ReleasePlan, salt: BoundingSalt
) -> LeafSample:
    names = [leaves_column(o.name) for o in plan.trees]
    everything = [
        F.collect_list(row_entry_column(o.name)).alias(n)
        for o, n in zip(plan.trees, names, strict=True)
    ]
    return LeafSample(by_unit, everything, [F.col(n) for n in names])


# Quantiles: the tree's sensitivity computed as if it had one level (height left out).
def tree_sensitivity_ignoring_height(l0: int, linf: int, height: int) -> object:
    return tree_sensitivity(l0, linf, 1)


# (iii) Textbook float noise added to a double sum (and the grid guard switched off).
def _float_laplace(scale: float) -> Callable[[pd.Series], pd.Series]:
    def noisy(sums: pd.Series) -> pd.Series:
        # Fresh OS entropy per task; the defect is the floating-point arithmetic.
        return sums + np.random.default_rng().laplace(0.0, scale, len(sums))

    return noisy


def apply_float_noise_to_sums(
    aggregated: DataFrame, plan: ReleasePlan, source: object
) -> DataFrame:
    """The real noise step, then every SUM replaced by double(sum) + float Laplace noise."""
    released = REAL_APPLY_NOISE(aggregated, plan, source)  # type: ignore[arg-type]
    keys = list(plan.columns.partition_columns)
    for output in plan.outputs:
        if not output.kind.on_grid:
            continue
        assert output.encoding is not None
        g = output.encoding.grid.step
        scale = float(plan.aggregate(output.name).noise.scale) * g  # type: ignore[union-attr]

        udf = pandas_udf(_float_laplace(scale), returnType=T.DoubleType()).asNondeterministic()  # type: ignore[call-overload]
        double_sum = F.col(f"sum__{output.name}").cast(T.DoubleType()) * F.lit(g)
        floats = aggregated.select(*keys, udf(double_sum).alias("__float_sum"))
        columns = [
            F.col("__float_sum").alias(c) if c == output.name else F.col(c)
            for c in released.columns
        ]
        released = released.join(floats, on=keys).select(*columns)
    return released


def passing_output_contract(plan: ReleasePlan, expected: object, data: Path) -> Verdict:
    """The output contract with every check switched off (it would catch off-grid sums)."""
    return Verdict("output", {})


# (iv) Partition selection thresholding on row counts instead of unit counts.
def aggregated_frame_counting_rows_as_units(
    plan: ReleasePlan, frame: DataFrame, public_keys: DataFrame | None, salt: BoundingSalt
) -> tuple[DataFrame, ObservedInput, DataFrame | None]:
    aggregated, observed, counted = REAL_AGGREGATED_FRAME(plan, frame, public_keys, salt)
    return aggregated.withColumn(UNITS, F.col(ROWS).cast(T.LongType())), observed, counted


# Key-leak power check: a selection that keeps a 1-unit key three times too often.
class TripledKeepNoise:
    """Exact noise, but every keep probability tripled (capped at 1)."""

    def integer_noise(self, distribution: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
        return distribution.sample(size)

    def keep(self, probabilities: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        return sample_bernoulli(np.minimum(3.0 * probabilities, 1.0))


class ShiftedNoise:
    """Exact noise shifted up by ``shift``: a threshold rule that keeps as if T were
    ``shift`` lower (a miscalibrated threshold)."""

    def __init__(self, shift: int) -> None:
        self.shift = shift

    def integer_noise(self, distribution: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
        return distribution.sample(size) + self.shift

    def keep(self, probabilities: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        return sample_bernoulli(probabilities)


# Bad RNG: a generator object captured in the UDF closure.
class CapturedGeneratorNoise:
    """Holds a numpy Generator: every task unpickles the same state and draws the same noise."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(2024)

    def integer_noise(self, distribution: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
        scale = float(distribution.scale) if isinstance(distribution, DiscreteLaplace) else 1.0
        return np.rint(self.rng.laplace(0.0, scale, size)).astype(np.int64)

    def keep(self, probabilities: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        return np.asarray(self.rng.random(len(probabilities)) < probabilities, dtype=bool)


def use_variant(monkeypatch: pytest.MonkeyPatch, variant: str) -> object | None:
    """Install a broken variant; returns the NoiseSource to pass to run_release (or None)."""
    if variant == "half_noise_scale":
        return HalfScaleNoise()
    if variant == "l0_ignored":
        monkeypatch.setattr(pipelines.job, "bound_contributions", bound_contributions_ignoring_l0)
    elif variant == "linf_ignored_for_values":
        monkeypatch.setattr(pipelines.bounding, "leaf_sample", leaf_sample_ignoring_linf)
    elif variant == "tree_height_ignored":
        patched = tree_sensitivity_ignoring_height
        monkeypatch.setattr(pipelines.plan_metrics, "tree_sensitivity", patched)
    elif variant == "wrong_unit":
        monkeypatch.setattr(pipelines.job, "select_encoded", select_encoded_with_rows_as_units)
    elif variant == "float_noise":
        monkeypatch.setattr(pipelines.job, "apply_noise", apply_float_noise_to_sums)
        monkeypatch.setattr(pipelines.job, "check_output_contract", passing_output_contract)
    elif variant == "row_count_threshold":
        monkeypatch.setattr(
            pipelines.job, "aggregated_frame", aggregated_frame_counting_rows_as_units
        )
    elif variant != "correct":
        raise ValueError(variant)
    return None
