"""Test doubles for the noise seam. Test-only: production code cannot import tests/."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from dp_ops.noise import NoiseDistribution


class ZeroNoise:
    """Noiseless mode: every noise draw is 0 and every partition is kept.

    Lets tests see the exact pre-noise aggregates through the real pipeline.
    """

    def integer_noise(self, distribution: NoiseDistribution, size: int) -> npt.NDArray[np.int64]:
        return np.zeros(size, dtype=np.int64)

    def keep(self, probabilities: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        return np.ones(len(probabilities), dtype=bool)


class CertainKeysOnly(ZeroNoise):
    """Zero noise; a partition is kept exactly when its keep probability is 1.

    Makes the released table of two neighbours equal when the unit they differ by only
    touches partitions whose keep probability is below 1: the layout tests compare bytes.
    """

    def keep(self, probabilities: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        return np.asarray(probabilities >= 1.0, dtype=bool)
