"""Sampler throughput: our exact samplers beside OpenDP's, in one run.

Run as ``python -m benchmarks.samplers``. Ours: 1,000,000 draws per call, median of 3
calls. OpenDP (vectorised input: one mechanism call on a vector of zeros): 100,000 draws
per call, median of 3, because it is about 20x slower; throughput is per draw, so the
ratio is comparable. Both run on one core of this machine, with the OS CSPRNG.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from fractions import Fraction

import numpy as np

from dp_ops.samplers import sample_bernoulli, sample_discrete_gaussian, sample_discrete_laplace

SCALES = (1, 1000, 1_000_000)


def _median_rate(draw: Callable[[int], object], samples: int, repeats: int) -> float:
    """Median draws per second over ``repeats`` calls of ``draw(samples)``."""
    draw(min(samples, 1000))  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        draw(samples)
        times.append(time.perf_counter() - start)
    return samples / statistics.median(times)


def _our_sampler(kind: str, scale: Fraction) -> Callable[[int], object]:
    """Our sampler at this scale (Gaussian: σ = scale, σ² = scale²)."""
    if kind == "discrete_laplace":
        return lambda n: sample_discrete_laplace(scale, n)
    return lambda n: sample_discrete_gaussian(scale**2, n)


def _opendp_sampler(kind: str, scale: float) -> Callable[[int], object] | None:
    """OpenDP's integer mechanism on a vector of zeros, or None without opendp."""
    try:
        import opendp.prelude as dp
    except ImportError:  # opendp is a dev-only dependency
        return None
    dp.enable_features("contrib")
    domain = dp.vector_domain(dp.atom_domain(T=int))
    if kind == "discrete_laplace":
        mechanism = dp.m.make_laplace(domain, dp.l1_distance(T=int), scale=scale)
    else:
        mechanism = dp.m.make_gaussian(domain, dp.l2_distance(T=int), scale=scale)
    return lambda n: mechanism([0] * n)


def sampler_rows(
    *, samples: int = 1_000_000, opendp_samples: int = 100_000, repeats: int = 3
) -> list[dict[str, object]]:
    """Throughput measurements, one dict per (sampler, scale).

    Keys: sampler, scale (Laplace scale b, Gaussian σ, or "-"), samples, ours_per_s,
    opendp_samples, opendp_per_s (None without opendp or for Bernoulli), ratio
    (ours / OpenDP, or None).
    """
    rows: list[dict[str, object]] = []
    for kind in ("discrete_laplace", "discrete_gaussian"):
        for scale in SCALES:
            ours = _our_sampler(kind, Fraction(scale))
            ours_rate = _median_rate(ours, samples, repeats)
            reference = _opendp_sampler(kind, float(scale))
            opendp_rate = (
                None if reference is None else _median_rate(reference, opendp_samples, repeats)
            )
            rows.append(
                {
                    "sampler": kind,
                    "scale": scale,
                    "samples": samples,
                    "ours_per_s": ours_rate,
                    "opendp_samples": opendp_samples if reference else None,
                    "opendp_per_s": opendp_rate,
                    "ratio": None if opendp_rate is None else ours_rate / opendp_rate,
                }
            )
    probabilities = np.linspace(0.0, 1.0, samples)
    rows.append(
        {
            "sampler": "bernoulli",
            "scale": "-",
            "samples": samples,
            "ours_per_s": _median_rate(
                lambda n: sample_bernoulli(probabilities[:n]), samples, repeats
            ),
            "opendp_samples": None,
            "opendp_per_s": None,
            "ratio": None,
        }
    )
    return rows


def _format_rate(value: object) -> str:
    return "n/a" if not isinstance(value, float) else f"{value:,.0f}"


def main() -> None:
    """Print the throughput table (plain text) on stdout."""
    rows = sampler_rows()
    header = f"{'sampler':<18} {'scale':>9} {'ours/s':>12} {'OpenDP/s':>12} {'ours/OpenDP':>12}"
    print("Sampler throughput (draws per second, one core, OS CSPRNG; median of 3 calls)")
    print("ours: 1,000,000 draws per call; OpenDP: 100,000 draws per call on a vector of zeros")
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = row["ratio"]
        ratio_text = "n/a" if not isinstance(ratio, float) else f"{ratio:.1f}x"
        print(
            f"{row['sampler']!s:<18} {row['scale']!s:>9} {_format_rate(row['ours_per_s']):>12} "
            f"{_format_rate(row['opendp_per_s']):>12} {ratio_text:>12}"
        )
    print("bernoulli: p = linspace(0, 1, 1,000,000), exact comparison with the bits of p")


if __name__ == "__main__":
    main()
