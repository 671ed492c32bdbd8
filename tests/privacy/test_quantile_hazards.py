"""The DP reference's hazard rows for quantile trees (docs/privacy.md §4b).

* unbounded contribution, wrong unit: with the same salt, removing one heavy unit moves the
  exact leaf counts of at most L0 partitions, each by at most Linf values (so each node
  level by at most Linf, L1 over the tree <= Linf·levels), and leaves every other unit's
  kept leaves as they were; in noiseless mode the released quantiles change in at most L0
  partitions. Power: Linf ignored for values and bounding by the wrong unit are caught.
* wrong noise: the node noise the real job draws for a tree has the scale derived from the
  manifest's public description (L0·Linf·height / the tree's epsilon) and fits the exact
  pmf by chi-square. Power: a calibration that leaves the height out of the sensitivity is
  caught, and the same sample rejects 0.7x and 1.3x the scale.

The neighbour audit of the released median is in ``test_neighbour_audit.py``.
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from dp_ops.noise import DiscreteLaplace
from pipelines.bounding import UNIT, BoundingSalt, bound_contributions
from pipelines.bounding import select_encoded as real_select_encoded
from pipelines.config import config_from_mapping
from pipelines.job import run_release
from pipelines.leaf_entries import kept_leaves
from pipelines.plan import build_plan
from pipelines.quantiles import LEAF, VALUES, leaf_counts
from pipelines.release import read_manifest
from tests.doubles import ZeroNoise
from tests.privacy.broken import select_encoded_with_rows_as_units, use_variant
from tests.privacy.neighbours import EVENTS, QUANTILE_METRIC
from tests.privacy.recording import RecordingNoise, read_records
from tests.privacy.test_hazards import chi_square_p, scaled
from tests.support import audit_config, public_selection, write_rows

pytestmark = pytest.mark.usefixtures("audit_limits")

L0, LINF, KEYS, HEAVY_ROWS = 2, 3, 8, 10
BRANCHING, HEIGHT = 16, 4  # the public tree shape every quantile metric uses
Counts = dict[tuple[str, int], int]


def heavy_neighbours(directory: Path) -> tuple[Path, Path]:
    """D: 8 keys, 3 light units each (1 or 2 rows, within the bounds), and one heavy unit
    with 10 rows of distinct values in every key; D' = D without the heavy unit."""
    light = [
        {"user": f"u{k}-{j}", "key": f"k{k}", "value": 1.0 + j + 0.5 * r}
        for k in range(KEYS)
        for j in range(3)
        for r in range(1 + j % 2)
    ]
    heavy = [
        {"user": "heavy", "key": f"k{k}", "value": 0.25 + 0.97 * r}
        for k in range(KEYS)
        for r in range(HEAVY_ROWS)
    ]
    d = write_rows(directory / "d.parquet", light + heavy, EVENTS)
    return d, write_rows(directory / "d_prime.parquet", light, EVENTS)


def config(directory: Path, data: Path, name: str) -> dict[str, Any]:
    raw = audit_config(
        directory / "releases",
        data,
        contribution_bounds={
            "max_partitions_per_unit": L0,
            "max_rows_per_unit_per_partition": LINF,
        },
        metrics=[{"metric": "count"}, QUANTILE_METRIC],
    )
    raw["release"]["name"] = name
    return raw


def exact_trees(
    spark: SparkSession, raw: dict[str, Any], salt: BoundingSalt, select: Any
) -> tuple[Counts, dict[tuple[str, str], list[int]]]:
    """The exact (key, leaf) counts of the real bounding, and every cell's kept leaves."""
    plan = build_plan(config_from_mapping(raw))
    encoded = select(spark.read.parquet(raw["input"]["path"]), plan)
    cells = bound_contributions(encoded, plan, salt)
    counts = {(r["key"], r[LEAF]): r[VALUES] for r in leaf_counts(cells, plan).collect()}
    name = str(QUANTILE_METRIC["name"])
    decoded = cells.select(UNIT, "key", kept_leaves(plan, name).alias(name))
    kept = {(r[UNIT], r["key"]): sorted(r[name]) for r in decoded.collect()}
    return counts, kept


def node_change(on_d: Counts, on_d_prime: Counts, key: str) -> list[int]:
    """Per level 1..height, the L1 change of the key's node counts (leaf // 16**k)."""
    change = []
    for level in range(1, HEIGHT + 1):
        nodes: Counter[int] = Counter()
        for (k, leaf), count in on_d.items():
            if k == key:
                nodes[leaf // BRANCHING ** (HEIGHT - level)] += count
        for (k, leaf), count in on_d_prime.items():
            if k == key:
                nodes[leaf // BRANCHING ** (HEIGHT - level)] -= count
        change.append(sum(abs(v) for v in nodes.values()))
    return change


def tree_change(on_d: Counts, on_d_prime: Counts) -> dict[str, list[int]]:
    """Per partition whose tree changed, the L1 change of each level."""
    keys = {k for k, _ in on_d.keys() | on_d_prime.keys()}
    changes = {key: node_change(on_d, on_d_prime, key) for key in sorted(keys)}
    return {key: change for key, change in changes.items() if any(change)}


def test_unbounded_contribution_moves_at_most_linf_leaves_in_at_most_l0_partitions(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, d_prime = heavy_neighbours(tmp_path / "input")
    salt = BoundingSalt.fresh()  # the same salt on both sides: a cell's sample is fixed
    on_d, kept_d = exact_trees(spark, config(tmp_path, d, "d"), salt, real_select_encoded)
    raw_prime = config(tmp_path, d_prime, "d_prime")
    on_d_prime, kept_prime = exact_trees(spark, raw_prime, salt, real_select_encoded)
    changed = tree_change(on_d, on_d_prime)
    assert len(changed) == L0
    assert all(change == [LINF] * HEIGHT for change in changed.values()), changed
    # Every other unit's kept leaves are its own: the same with or without the heavy unit.
    assert {c: v for c, v in kept_d.items() if c[0] != "heavy"} == kept_prime
    assert all(len(v) <= LINF for v in kept_d.values())
    # Power: Linf ignored for values lets all 10 of the heavy unit's values through.
    with monkeypatch.context() as patch:
        use_variant(patch, "linf_ignored_for_values")
        broken, _ = exact_trees(spark, config(tmp_path, d, "d"), salt, real_select_encoded)
    assert {max(c) for c in tree_change(broken, on_d_prime).values()} == {HEAVY_ROWS}
    # Power: each row its own unit: every key changes, each by all 10 rows.
    wrong = select_encoded_with_rows_as_units
    broken, _ = exact_trees(spark, config(tmp_path, d, "d"), salt, wrong)
    changed = tree_change(broken, on_d_prime)
    assert len(changed) == KEYS and {max(c) for c in changed.values()} == {HEAVY_ROWS}


def test_unbounded_contribution_noiseless_quantiles_change_in_at_most_l0_partitions(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Noiseless mode through the real job: the heavy unit changes the released median of
    at most L0 of its 8 partitions (every partition is kept in noiseless mode)."""
    d, d_prime = heavy_neighbours(tmp_path / "input")

    def medians(data: Path, name: str) -> dict[str, float]:
        raw = config(tmp_path, data, name)
        result = run_release(spark, config_from_mapping(raw), source=ZeroNoise())
        table = pq.read_table(Path(result.path) / "data").to_pylist()
        return {row["key"]: row["v_p50"] for row in table}

    on_d, on_d_prime = medians(d, "d"), medians(d_prime, "d_prime")
    assert on_d.keys() == on_d_prime.keys() == {f"k{k}" for k in range(KEYS)}
    assert 1 <= sum(on_d[k] != on_d_prime[k] for k in on_d) <= L0


# ------------------------------------------------------------------ tree node noise

NOISE_KEYS, TREE_EPSILON = 600, 2.0


def node_noise(spark: SparkSession, directory: Path) -> tuple[list[int], set[str], Fraction]:
    """The recorded tree-node draws of one real run over public keys, the distributions
    they were drawn from, and the scale the manifest's public description implies."""
    rows = [{"user": f"u{i}", "key": f"k{i % 50}", "value": float(i % 11)} for i in range(500)]
    data = write_rows(directory / "rows.parquet", rows, EVENTS)
    raw = audit_config(
        directory / "releases",
        data,
        metrics=[QUANTILE_METRIC],
        budget={"epsilon": TREE_EPSILON, "delta": 0.0},
        partition_selection=public_selection(directory, [f"k{i}" for i in range(NOISE_KEYS)]),
    )
    records = directory / "draws"
    records.mkdir()
    result = run_release(spark, config_from_mapping(raw), source=RecordingNoise(str(records)))
    manifest = read_manifest(Path(result.path))
    (mechanism,) = manifest["mechanisms"]
    bounds = manifest["contribution_bounds"]
    l1 = bounds["max_partitions_per_unit"] * bounds["max_rows_per_unit_per_partition"]
    expected = Fraction(l1 * mechanism["tree"]["height"]) / Fraction(TREE_EPSILON)
    draws = [r for r in read_records(records) if r["kind"] != "keep"]
    values = [v for r in draws for v in r["values"]]
    return values, {r["kind"] for r in draws}, expected


def noise_problems(values: list[int], kinds: set[str], expected: Fraction) -> list[str]:
    """What is wrong with the recorded node noise against the expected scale ([] if ok):
    chi-square p < 1e-3 at the expected scale fails (false-failure rate 1e-3)."""
    problems = []
    if kinds != {f"laplace:{expected}"}:
        problems.append(f"drawn from {sorted(kinds)}, expected scale {expected}")
    p = chi_square_p(np.array(values), DiscreteLaplace(expected).pmf)
    if p < 1e-3:
        problems.append(f"chi-square p = {p:.3g} at scale {expected}")
    return problems


def test_wrong_noise_tree_nodes_have_the_scale_derived_from_the_bounds(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """600 public keys, one median each: every node draw (pooled blocks of 4,096, so tens
    of thousands of values) is discrete Laplace at L0·Linf·height/epsilon = 1·4·4/2 = 8
    and fits its pmf (false-failure rate 1e-3). Power: the same sample rejects 0.7x and
    1.3x the scale (p < 1e-6); leaving the height out of the sensitivity is caught."""
    values, kinds, expected = node_noise(spark, tmp_path / "correct")
    assert expected == 8 and len(values) >= 20_000
    assert noise_problems(values, kinds, expected) == []
    for factor in (Fraction(7, 10), Fraction(13, 10)):
        wrong = scaled(DiscreteLaplace(expected), factor)
        assert chi_square_p(np.array(values), wrong.pmf) < 1e-6
    with monkeypatch.context() as patch:
        use_variant(patch, "tree_height_ignored")
        values, kinds, expected = node_noise(spark, tmp_path / "broken")
    assert expected == 8
    assert len(noise_problems(values, kinds, expected)) == 2
