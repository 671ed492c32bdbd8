"""Neighbouring datasets made of many cloned experiments, and the audited statistics.

One Spark run gives many independent samples: every experiment (a partition key, or a
group of keys) has its OWN copy of the units, with distinct unit ids, so its outputs are
an independent draw of the mechanism on that experiment. D holds, in every experiment,
one target unit; D' is D without the targets' rows (in every experiment, the target
unit's rows are removed: clone i of D' is the neighbour of clone i of D).

Why one run gives independent samples that are valid for the audit: in the correct job a
partition's outputs depend only on the rows of the units in it (bounding looks at a
unit's own rows and a salt; noise and keep decisions are drawn independently per
partition), so different experiments are independent draws, and experiment i's outputs
on D' have the same law as on D minus target i alone, a true neighbour of D.

Blocks (L0 = 1, Linf = 4, values in [0, 10]; base units have 1 row of value 0.0, a
target has 2*Linf rows of value 10.0, so bounding must cut it to Linf rows):

* ``m<i>``: one key with ``base_units`` base units + the target: COUNT, SUM and MEAN
  marginals (every key is kept with probability 1: base_units >= the keep table length).
* ``g<j>-<r>``, r < group_size: a group of keys sharing ONE target that has rows in all
  of them; audited statistic: the sum of the group's COUNTs. With L0 = 1 the target
  shifts it by at most Linf; with L0 ignored, by group_size * Linf.
* ``s<i>``: one key with ``selection_base`` base units (the steep part of the keep table)
  + the target; audited statistic: the key is released (partition selection).
* ``q<i>``: one key with ``base_units`` base units + a target with ``QUANTILE_TARGET_ROWS``
  (16·Linf) rows of value 10.0; audited statistic: the released median ``v_p50`` of a
  quantile tree over [0, 10] (the run must ask for it, see ``QUANTILES``). Bounding must
  keep Linf of the target's values; keeping all 64 moves the median to the top.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.privacy.auditing import (
    Event,
    FloatArray,
    Statistic,
    at_least,
    at_most,
    fine_bit_events,
)

LINF = 4
LOWER, UPPER = 0.0, 10.0
TARGET_ROWS = 2 * LINF
QUANTILE_TARGET_ROWS = 16 * LINF
#: The quantile metric a run with a ``q`` block asks for (released as ``v_p50``).
QUANTILES = {"metric": "quantiles", "column": "value", "lower": LOWER, "upper": UPPER}
QUANTILE_METRIC = {**QUANTILES, "ranks": [0.5], "name": "v"}
EVENTS = pa.schema([("user", pa.string()), ("key", pa.string()), ("value", pa.float64())])


@dataclass(frozen=True)
class Design:
    metric_keys: int = 0
    groups: int = 0
    group_size: int = 8
    selection_keys: int = 0
    quantile_keys: int = 0
    base_units: int = 9
    selection_base: int = 3


def neighbour_rows(design: Design, with_targets: bool) -> pa.Table:
    """D (with_targets) or D' as an Arrow table of (user, key, value)."""
    users: list[str] = []
    keys: list[str] = []
    values: list[float] = []

    def add(user: str, key: str, value: float, rows: int = 1) -> None:
        users.extend([user] * rows)
        keys.extend([key] * rows)
        values.extend([value] * rows)

    for i in range(design.metric_keys):
        for b in range(design.base_units):
            add(f"m{i}-b{b}", f"m{i}", LOWER)
        if with_targets:
            add(f"m{i}-t", f"m{i}", UPPER, TARGET_ROWS)
    for j in range(design.groups):
        for r in range(design.group_size):
            for b in range(design.base_units):
                add(f"g{j}-{r}-b{b}", f"g{j}-{r}", LOWER)
            if with_targets:
                add(f"g{j}-t", f"g{j}-{r}", UPPER, TARGET_ROWS)
    for i in range(design.selection_keys):
        for b in range(design.selection_base):
            add(f"s{i}-b{b}", f"s{i}", LOWER)
        if with_targets:
            add(f"s{i}-t", f"s{i}", UPPER, TARGET_ROWS)
    for i in range(design.quantile_keys):
        for b in range(design.base_units):
            add(f"q{i}-b{b}", f"q{i}", LOWER)
        if with_targets:
            add(f"q{i}-t", f"q{i}", UPPER, QUANTILE_TARGET_ROWS)
    order = np.random.default_rng(7).permutation(len(users))  # test data order only
    return pa.table(
        {
            "user": pa.array([users[k] for k in order], pa.string()),
            "key": pa.array([keys[k] for k in order], pa.string()),
            "value": pa.array([values[k] for k in order], pa.float64()),
        },
        schema=EVENTS,
    )


def write_neighbours(directory: Path, design: Design) -> tuple[Path, Path]:
    """(D, D') as Parquet files under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    d, d_prime = directory / "d.parquet", directory / "d_prime.parquet"
    pq.write_table(neighbour_rows(design, True), d)
    pq.write_table(neighbour_rows(design, False), d_prime)
    return d, d_prime


def off_grid_columns(version: Path) -> list[str]:
    """Released COUNT/SUM columns with a value that is not an integer multiple of its grid."""
    manifest = json.loads((version / "manifest.json").read_text(encoding="utf-8"))
    table = pq.read_table(version / "data")
    bad = []
    for column in manifest["columns"]:
        if column["metric"] not in ("count", "privacy_id_count", "sum"):
            continue
        values = np.array(table.column(column["name"]).to_pylist(), dtype=float)
        units = values / float(column.get("grid", 1.0))
        if not (np.isfinite(units) & (units == np.round(units))).all():
            bad.append(column["name"])
    return bad


def _by_key(table: pa.Table) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in table.to_pylist()}


def _column(rows: dict[str, dict[str, Any]], keys: list[str], name: str) -> FloatArray:
    return np.array(
        [
            float(rows[k][name]) if k in rows and rows[k][name] is not None else math.nan
            for k in keys
        ]
    )


def _mechanisms(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in manifest["mechanisms"]}


def _scale(mechanism: dict[str, Any]) -> float:
    """Noise scale of a mechanism in released units (grid units times the grid)."""
    noise = mechanism["noise"]
    units = float(noise["scale"]) if "scale" in noise else float(noise["sigma"])
    return units * float(mechanism["grid"])


def _sum_scale_and_claim(
    manifest: dict[str, Any], mechanisms: dict[str, dict[str, Any]], eps: dict[str, float]
) -> tuple[float, float]:
    """The sum's noise scale (released units) and claimed epsilon: its own mechanism's, or,
    for a sum derived from the mean's parts (shared parts), its std and the parts' total."""
    if "sum_value" in mechanisms:
        return _scale(mechanisms["sum_value"]), eps["sum_value"]
    column = next(c for c in manifest["columns"] if c["name"] == "sum_value")
    derived = column["derived_from"]
    return float(derived["std"]), sum(eps[name] for name in derived["mechanisms"])


def statistics(
    design: Design,
    manifest: dict[str, Any],
    on_d: pa.Table,
    on_d_prime: pa.Table,
) -> list[Statistic]:
    """The audited statistics of the blocks in ``design``, with pre-registered events.

    Claims come from the manifest: each metric's own spend (a statistic of one mechanism
    can lose no more than that mechanism's epsilon; the MEAN is post-processing of the
    COUNT and its normalized sum), the per-partition (epsilon, delta) of selection, and
    the release's delta everywhere (conservative). Events are thresholds placed from the
    exact values on D and D' (the test built them) and the manifest's public noise scales,
    plus low-order-bit events for the double-valued outputs.
    """
    mechanisms = _mechanisms(manifest)
    delta = float(manifest["privacy"]["delta"])
    eps = {name: float(m["spend"]["epsilon"]) for name, m in mechanisms.items()}
    d, dp = _by_key(on_d), _by_key(on_d_prime)
    out: list[Statistic] = []
    base = design.base_units
    if design.metric_keys:
        keys = [f"m{i}" for i in range(design.metric_keys)]
        s = _scale(mechanisms["count"])
        low, high = float(base), float(base + LINF)
        events: list[Event] = [at_least(high + k * s) for k in (0, 1, 2)]
        events += [at_most(low - k * s) for k in (0, 1, 2)]
        out.append(
            Statistic(
                "count",
                eps["count"],
                delta,
                _column(d, keys, "count"),
                _column(dp, keys, "count"),
                tuple(events),
            )
        )
        s, sum_claim = _sum_scale_and_claim(manifest, mechanisms, eps)
        low, high = base * LOWER, base * LOWER + LINF * UPPER
        events = [at_least(high + k * s) for k in (0, 1, 2)]
        events += [at_most(low - k * s) for k in (0, 1, 2)]
        out.append(
            Statistic(
                "sum",
                sum_claim,
                delta,
                _column(d, keys, "sum_value"),
                _column(dp, keys, "sum_value"),
                tuple(events + fine_bit_events()),
            )
        )
        low, high = LOWER, (base * LOWER + LINF * UPPER) / (base + LINF)
        step = (high - low) / 2
        events = [at_least(low + k * step) for k in (1, 2, 3, 4)]
        events += [at_most(low + k * step) for k in (0, 1)]
        out.append(
            Statistic(
                "mean",
                eps["count"] + eps["mean_value.normalized_sum"],
                delta,
                _column(d, keys, "mean_value"),
                _column(dp, keys, "mean_value"),
                tuple(events + fine_bit_events()),
            )
        )
    if design.groups:
        size = design.group_size

        def group_sums(rows: dict[str, dict[str, Any]]) -> FloatArray:
            counts = [
                [rows[f"g{j}-{r}"]["count"] if f"g{j}-{r}" in rows else 0 for r in range(size)]
                for j in range(design.groups)
            ]
            return np.array([float(sum(c)) for c in counts])

        sd = _scale(mechanisms["count"]) * math.sqrt(2 * size)
        low = float(size * base)
        events = [at_least(low + LINF + k * sd) for k in (1, 2, 3, 4)]
        events += [at_most(low - k * sd) for k in (1, 2, 3, 4)]
        out.append(
            Statistic(
                "group_count_sum", eps["count"], delta, group_sums(d), group_sums(dp), tuple(events)
            )
        )
    if design.selection_keys:
        keys = [f"s{i}" for i in range(design.selection_keys)]
        partitions = manifest["partitions"]
        out.append(
            Statistic(
                "partition_release",
                float(partitions["epsilon_per_partition"]),
                float(partitions["delta_per_partition"]),
                np.array([1.0 if k in d else 0.0 for k in keys]),
                np.array([1.0 if k in dp else 0.0 for k in keys]),
                (at_least(1.0), at_most(0.0)),
            )
        )
    if design.quantile_keys:
        out.append(_median_statistic(design, eps, delta, d, dp))
    return out


def _median_statistic(
    design: Design,
    eps: dict[str, float],
    delta: float,
    d: dict[str, dict[str, Any]],
    dp: dict[str, dict[str, Any]],
) -> Statistic:
    """The ``q`` block's released median, claimed at the tree mechanism's own spend.

    Events sit on the public node edges of the tree (level 1 and 2 over [0, 10]): the
    target's values are at the top, the base units' at the bottom.
    """
    keys = [f"q{i}" for i in range(design.quantile_keys)]
    width = UPPER - LOWER
    events = [at_least(UPPER - width * f) for f in (1 / 2, 1 / 16, 1 / 256)]
    events += [at_most(LOWER + width * f) for f in (1 / 16, 1 / 256)]
    name = str(QUANTILE_METRIC["name"])
    column = f"{name}_p50"
    return Statistic(
        "median",
        eps[name],
        delta,
        _column(d, keys, column),
        _column(dp, keys, column),
        tuple(events),
    )
