"""DP quantiles from a noisy complete tree over a public grid (docs/privacy.md §4b).

A partition's clamped values fall into the leaves of a complete tree of ``height`` levels
and ``branching`` children per node over [lower, upper]. Each kept value adds 1 to one node
per level (levels 1..height; the root is not a noisy node), so one privacy unit moves a
partition's node vector by at most Linf per level (``tree_sensitivity``). Exact integer
noise is added to every node count; only the nodes a descent visits are drawn, lazily, one
sibling block at a time and at most once each, so every rank asked of one tree reads the
same noisy counts. Everything after the draw (clamping to >= 0, the descent, monotonicity,
intervals) is post-processing of the noisy tree and reads no data.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from dp_ops.calibration import Sensitivity
from dp_ops.checks import check_positive_int
from dp_ops.noise import NoiseDistribution

__all__ = [
    "FloatArray",
    "IntArray",
    "NoiseDraw",
    "NoisyTree",
    "TreeShape",
    "expected_rank_error",
    "rank_error_std",
    "rank_half_width",
    "tree_sensitivity",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
NoiseDraw = Callable[[NoiseDistribution, int], IntArray]
"""draw(noise, size): ``size`` independent exact integer noise values from ``noise``."""

MAX_HEIGHT = 8
MAX_BRANCHING = 256
MAX_LEAVES = 2**24


def _check_bounded_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def _check_finite(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class TreeShape:
    """The public shape of a quantile tree: ``branching**height`` leaves over [lower, upper].

    Invariants: lower < upper, both finite; 1 <= height <= 8; 2 <= branching <= 256;
    branching**height <= 2**24. Leaf ``l`` covers [lower + l·w, lower + (l+1)·w) with
    w = (upper − lower)/leaves (the last leaf also holds ``upper``).
    """

    lower: float
    upper: float
    height: int = 4
    branching: int = 16

    def __post_init__(self) -> None:
        _check_finite("lower", self.lower)
        _check_finite("upper", self.upper)
        if not self.lower < self.upper:
            raise ValueError(
                f"lower must be < upper, got lower={self.lower!r}, upper={self.upper!r}"
            )
        if not math.isfinite(float(self.upper) - float(self.lower)):
            raise ValueError(f"upper - lower must be finite, got {self.lower!r}, {self.upper!r}")
        _check_bounded_int("height", self.height, 1, MAX_HEIGHT)
        _check_bounded_int("branching", self.branching, 2, MAX_BRANCHING)
        if self.branching**self.height > MAX_LEAVES:
            raise ValueError(
                f"branching**height must be <= 2**24, got branching={self.branching}, "
                f"height={self.height} ({self.branching**self.height} leaves)"
            )

    @property
    def leaves(self) -> int:
        """Number of leaves: branching ** height."""
        return int(self.branching**self.height)

    @property
    def leaf_scale(self) -> float:
        """Leaves per value unit: leaves / (upper − lower)."""
        return self.leaves / (float(self.upper) - float(self.lower))

    def leaf_of(self, values: npt.NDArray[np.float64]) -> IntArray:
        """clip(floor((clamp(x) − lower)·leaf_scale), 0, leaves − 1), clamp to [lower, upper].

        The Spark side computes this same formula as a Column: keep both in step. NaN has
        no leaf (clamp(NaN) is NaN) and is refused: drop it before (docs/privacy.md §3).
        """
        array = np.asarray(values, dtype=np.float64)
        if np.any(np.isnan(array)):
            raise ValueError("values must not be NaN: drop them before placing them in leaves")
        clamped = np.clip(array, self.lower, self.upper)
        raw = np.floor((clamped - self.lower) * self.leaf_scale)
        return np.clip(raw, 0, self.leaves - 1).astype(np.int64)

    def leaf_edges(self, leaf: IntArray) -> tuple[FloatArray, FloatArray]:
        """[low, high) of each leaf in value units (up to float rounding); high <= upper."""
        return self._edges(np.asarray(leaf, dtype=np.int64), self.leaves)

    def node_edges(self, level: int, index: int) -> tuple[float, float]:
        """[low, high) of node ``index`` at ``level`` (0 = the root, height = the leaves).

        The same double arithmetic as ``leaf_edges``, on Python floats (one node).
        """
        _check_bounded_int("level", level, 0, self.height)
        nodes = self.branching**level
        if not 0 <= index < nodes:
            raise ValueError(f"node index must be in [0, {nodes}), got {index!r}")
        width = (float(self.upper) - float(self.lower)) / nodes
        low = self.lower + index * width
        high = float(self.upper) if index == nodes - 1 else self.lower + (index + 1) * width
        return float(low), min(float(high), float(self.upper))

    def _edges(self, index: IntArray, nodes: int) -> tuple[FloatArray, FloatArray]:
        if np.any((index < 0) | (index >= nodes)):
            raise ValueError(f"node index must be in [0, {nodes}), got {index!r}")
        width = (float(self.upper) - float(self.lower)) / nodes
        low = np.asarray(self.lower + index * width, dtype=np.float64)
        high = np.where(index == nodes - 1, self.upper, self.lower + (index + 1) * width)
        return low, np.minimum(np.asarray(high, dtype=np.float64), self.upper)


def tree_sensitivity(
    max_partitions_per_unit: int, max_values_per_cell: int, height: int
) -> Sensitivity:
    """Sensitivity of the tree's node counts (docs/privacy.md §4b).

    One unit keeps <= Linf = ``max_values_per_cell`` values in each of its <= L0 partitions;
    each value adds 1 to one node per level, so a partition's node vector moves by <= Linf
    in each of ``height`` levels: per-partition L1 = Linf·height, L2² = height·Linf².
    """
    check_positive_int("max_values_per_cell", max_values_per_cell)
    _check_bounded_int("height", height, 1, MAX_HEIGHT)
    return Sensitivity(
        max_partitions_per_unit,
        max_values_per_cell * height,
        per_partition_l2_squared=height * max_values_per_cell**2,
    )


def _check_ranks(ranks: Sequence[float]) -> FloatArray:
    array = np.asarray(ranks, dtype=np.float64)
    if array.ndim != 1 or not np.all((array > 0.0) & (array < 1.0)):
        raise ValueError(f"ranks must be a sequence of numbers in (0, 1), got {ranks!r}")
    return array


def _level_counts(
    shape: TreeShape, sorted_leaves: IntArray, sorted_counts: IntArray
) -> list[tuple[IntArray, IntArray]]:
    """Per level 1..height: the sorted indices of non-empty nodes and their exact counts
    (``sorted_leaves`` ascending, ``sorted_counts`` in the same order)."""
    levels: list[tuple[IntArray, IntArray]] = []
    for level in range(1, shape.height + 1):
        ids = sorted_leaves // shape.branching ** (shape.height - level)
        if ids.size == 0:
            levels.append((ids, sorted_counts))
            continue
        starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
        levels.append((ids[starts], np.add.reduceat(sorted_counts, starts).astype(np.int64)))
    return levels


@dataclass(frozen=True)
class _Block:
    """One sibling block's clamped noisy counts as Python ints, with running sums."""

    counts: tuple[int, ...]
    cumulative: tuple[int, ...]
    total: int

    @staticmethod
    def of(clamped: IntArray) -> _Block:
        counts = tuple(int(c) for c in clamped.tolist())
        cumulative = tuple(itertools.accumulate(counts))
        return _Block(counts, cumulative, cumulative[-1])


class NoisyTree:
    """Noisy node counts of one partition's tree, drawn lazily, each node at most once.

    ``leaves`` are the distinct leaf indices present (any order), ``counts`` their exact
    counts (>= 0); an internal node's exact count is the integer sum of its leaves
    (leaf // branching**k). ``draw(noise, size)`` returns ``size`` integer noise values
    (production: ``noise.sample(size)`` inside the task). Invariant: each sibling block is
    drawn at most once and memoised, so ``draws`` = branching · blocks visited.
    """

    def __init__(
        self,
        shape: TreeShape,
        leaves: npt.NDArray[np.int64],
        counts: npt.NDArray[np.int64],
        noise: NoiseDistribution,
        draw: Callable[[NoiseDistribution, int], npt.NDArray[np.int64]],
    ) -> None:
        leaf_array = np.asarray(leaves, dtype=np.int64)
        count_array = np.asarray(counts, dtype=np.int64)
        if leaf_array.ndim != 1 or leaf_array.shape != count_array.shape:
            raise ValueError("leaves and counts must be 1-D arrays of the same length")
        if np.any((leaf_array < 0) | (leaf_array >= shape.leaves)):
            raise ValueError(f"leaves must be in [0, {shape.leaves})")
        order = np.argsort(leaf_array, kind="stable")
        sorted_leaves = leaf_array[order]
        if np.any(sorted_leaves[1:] == sorted_leaves[:-1]):
            raise ValueError("leaves must be distinct")
        if np.any(count_array < 0):
            raise ValueError("counts must be >= 0")
        self._shape = shape
        self._noise = noise
        self._draw = draw
        self._levels = _level_counts(shape, sorted_leaves, count_array[order])
        self._blocks: dict[tuple[int, int], _Block] = {}
        self._descents: dict[float, tuple[float, float]] = {}
        self._draws = 0

    @property
    def draws(self) -> int:
        """Noise values drawn so far (= branching · sibling blocks visited)."""
        return self._draws

    def _children(self, level: int, parent: int) -> _Block:
        """Noisy counts of ``parent``'s children at ``level`` (1..height), clamped to >= 0.

        Drawn on first use and memoised: a node's noise is never drawn twice.
        """
        key = (level, parent)
        block = self._blocks.get(key)
        if block is None:
            branching = self._shape.branching
            ids, sums = self._levels[level - 1]
            first = parent * branching
            lo, hi = np.searchsorted(ids, [first, first + branching])
            exact = np.zeros(branching, dtype=np.int64)
            exact[ids[lo:hi] - first] = sums[lo:hi]
            noise = np.asarray(self._draw(self._noise, branching), dtype=np.int64)
            if noise.shape != (branching,):
                raise ValueError(f"draw returned shape {noise.shape}, expected ({branching},)")
            self._draws += branching
            block = _Block.of(np.maximum(exact + noise, 0))
            self._blocks[key] = block
        return block

    def noisy_total(self) -> int:
        """N: the sum of the clamped noisy level-1 counts (post-processing)."""
        return self._children(1, 0).total

    def _descend(self, rank: float) -> tuple[float, float]:
        """The value at ``rank`` and the descent's spread Σ_levels Σ_i (r_k − w_ki)².

        At each node the local rank r_k picks the child where the cumulative clamped count
        crosses r_k·(sum of the children); w_ki is 1 left of it, the fraction f inside it,
        0 right of it, and f is the next local rank. An all-zero node gives its midpoint.
        Memoised per rank: a rank asked twice of one tree reads the same result.
        """
        known = self._descents.get(rank)
        if known is None:
            known = self._descents[rank] = self._walk(rank)
        return known

    def _walk(self, rank: float) -> tuple[float, float]:
        shape = self._shape
        branching = shape.branching
        parent, local, spread = 0, rank, 0.0
        for level in range(1, shape.height + 1):
            block = self._children(level, parent)
            if block.total == 0:
                low, high = shape.node_edges(level - 1, parent)
                return (low + high) / 2.0, spread
            target = local * block.total
            chosen = min(bisect.bisect_left(block.cumulative, target), branching - 1)
            if block.counts[chosen] == 0:  # only when target <= 0 through rounding
                chosen = next(i for i, c in enumerate(block.counts) if c > 0)
            count = block.counts[chosen]
            before = float(block.cumulative[chosen] - count)
            fraction = min(1.0, max(0.0, (target - before) / float(count)))
            # Σ_i (r − w_i)² with w = 1 left of the chosen child, f at it, 0 right of it.
            spread += (
                chosen * (local - 1.0) ** 2
                + (local - fraction) ** 2
                + (branching - chosen - 1) * local**2
            )
            parent, local = parent * branching + chosen, fraction
        low, high = shape.node_edges(shape.height, parent)
        return low + local * (high - low), spread

    def quantiles(self, ranks: Sequence[float]) -> FloatArray:
        """The noisy quantile at each rank in (0, 1), in the order given.

        Invariants: every result is in [lower, upper], and results are non-decreasing in
        rank (a running maximum over the ranks in sorted order guards float rounding).
        """
        array = _check_ranks(ranks)
        order = np.argsort(array, kind="stable")
        values = np.array([self._descend(float(array[i]))[0] for i in order], dtype=np.float64)
        values = np.clip(np.maximum.accumulate(values), self._shape.lower, self._shape.upper)
        result = np.empty_like(values)
        result[order] = values
        return result

    def intervals(self, ranks: Sequence[float], alpha: float) -> tuple[FloatArray, FloatArray]:
        """A (1 − alpha) noise-only interval per rank, from the noisy tree only.

        Half-width in rank units h = z_{1−alpha/2}·std·√spread (the Gaussian approximation
        of the linearised rank error, docs/privacy.md §4b); the interval is
        [Q(r − h/N), Q(r + h/N)] on the same tree, N = ``noisy_total``, each end widened to
        the outer edge of its leaf (the values' position inside a leaf is unknown) and to
        contain Q(r); an end whose rank leaves (0, 1) is lower or upper, and an empty noisy
        tree gives [lower, upper]. Invariants: ci_low <= quantile <= ci_high, all inside
        [lower, upper].
        """
        if not (math.isfinite(alpha) and 0.0 < alpha < 1.0):
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        array = _check_ranks(ranks)
        shape = self._shape
        center = self.quantiles(ranks)
        low = np.full(array.size, float(shape.lower))
        high = np.full(array.size, float(shape.upper))
        total = self.noisy_total()
        if total == 0:
            return low, high
        z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
        for i, rank in enumerate(array.tolist()):
            step = z * self._noise.std() * math.sqrt(self._descend(rank)[1]) / total
            if rank - step > 0.0:
                low[i] = self.quantiles([rank - step])[0]
            if rank + step < 1.0:
                high[i] = self.quantiles([rank + step])[0]
        low = np.minimum(shape.leaf_edges(shape.leaf_of(low))[0], center)
        high = np.maximum(shape.leaf_edges(shape.leaf_of(high))[1], center)
        return low, high


def rank_error_std(shape: TreeShape, noise: NoiseDistribution, partition_size: int) -> float:
    """Std of the rank error (a fraction of n = ``partition_size``) of a released quantile.

    Linearising the descent (``NoisyTree._descend``), the true rank of the released value
    minus r·n is Σ_k Σ_i (r_k − w_ki)·z_ki over the visited levels k, z the node noises.
    When a level's mass is spread over the siblings, Σ_i (r_k − w_ki)² ≈ branching·r_k(1 − r_k)
    <= branching/4, so level k adds at most Var·branching/4. The error of level k also stays
    inside its parent node, which holds about m_k = n/branching**(k−1) values when the
    values are spread, so its variance is capped at m_k². With v = Σ_k min(Var·branching/4,
    m_k²), the std is √v/n. Ignores clamping and the leaf resolution; an estimate for
    spread values (concentrated values make deep levels fuller), checked against
    simulation in the tests. Non-increasing in n and in the noise's inverse variance.
    """
    check_positive_int("partition_size", partition_size)
    per_level = noise.variance() * shape.branching / 4.0
    variance = math.fsum(
        min(per_level, (partition_size / shape.branching ** (level - 1)) ** 2)
        for level in range(1, shape.height + 1)
    )
    return math.sqrt(variance) / partition_size


def expected_rank_error(shape: TreeShape, noise: NoiseDistribution, partition_size: int) -> float:
    """Expected |rank error| (a fraction of n = ``partition_size``) of a released quantile:
    √(2/π)·``rank_error_std`` (the error is a sum of many independent noises, so about
    Gaussian), capped at 1."""
    return min(1.0, math.sqrt(2.0 / math.pi) * rank_error_std(shape, noise, partition_size))


def rank_half_width(
    shape: TreeShape, noise: NoiseDistribution, partition_size: int, alpha: float
) -> float:
    """The (1 − alpha) half-width of the rank error (a fraction of n), z·``rank_error_std``
    capped at 1: the planning figure of the interval ``NoisyTree.intervals`` releases (which
    uses the descent's own spread and widens each end to its leaf)."""
    if not (math.isfinite(alpha) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    return min(1.0, z * rank_error_std(shape, noise, partition_size))
