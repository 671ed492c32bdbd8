"""Privacy accounting within one release: spends, their composition, group privacy.

Composition rule (docs/privacy.md §8): sequential over mechanisms. Pure parts add ε and
δ; zCDP parts (Gaussian noise) add ρ and are converted to (ε, δ) once, with a δ
reserved for that conversion. Parallel composition across partitions is already
inside each spend, through the L0 factor of its sensitivity or per-partition budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from dp_ops.calibration import epsilon_for_rho, float_up
from dp_ops.checks import check_nonnegative

__all__ = [
    "MECHANISMS",
    "Composition",
    "GroupPrivacy",
    "MechanismSpend",
    "compose",
    "group_privacy_table",
]

MECHANISMS = frozenset(
    {
        "discrete_laplace",
        "discrete_gaussian",
        "truncated_geometric",
        "laplace_threshold",
        "gaussian_threshold",
    }
)


def _format(value: float) -> str:
    return f"{value:.6g}"


@dataclass(frozen=True)
class MechanismSpend:
    """The privacy cost of one mechanism of a release.

    The mechanism is (epsilon, delta)-DP, composed with rho-zCDP when rho is set (a
    Gaussian part). The sensitivities and noise scale are in grid units and are
    recorded for the manifest only; the accountant uses epsilon, delta and rho.
    ``exact_epsilon``, when set, is the exact rational epsilon the mechanism spends
    (``epsilon`` is then its nearest double) and is what composition adds up.
    """

    name: str
    mechanism: str
    epsilon: float
    delta: float
    rho: float | None = None
    l1_sensitivity: float | None = None
    l2_sensitivity: float | None = None
    noise_scale: float | None = None
    exact_epsilon: Fraction | None = None

    @property
    def epsilon_rational(self) -> Fraction:
        """The exact epsilon: ``exact_epsilon`` if set, else the double's exact value."""
        return self.exact_epsilon if self.exact_epsilon is not None else Fraction(self.epsilon)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("spend name must not be empty")
        if self.mechanism not in MECHANISMS:
            raise ValueError(
                f"unknown mechanism {self.mechanism!r}; expected one of {sorted(MECHANISMS)}"
            )
        check_nonnegative("epsilon", self.epsilon)
        check_nonnegative("delta", self.delta)
        if self.delta >= 1:
            raise ValueError(f"delta must be < 1, got {self.delta!r}")
        for field_name in ("rho", "l1_sensitivity", "l2_sensitivity", "noise_scale"):
            value = getattr(self, field_name)
            if value is not None:
                check_nonnegative(field_name, value)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view, all fields (None for absent parts)."""
        return {
            "name": self.name,
            "mechanism": self.mechanism,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "rho": self.rho,
            "l1_sensitivity": self.l1_sensitivity,
            "l2_sensitivity": self.l2_sensitivity,
            "noise_scale": self.noise_scale,
        } | ({} if self.exact_epsilon is None else {"epsilon_exact": str(self.exact_epsilon)})


@dataclass(frozen=True)
class Composition:
    """Totals of a release: the release is (epsilon, delta)-DP under add/remove-one-unit."""

    spends: tuple[MechanismSpend, ...]
    epsilon: float
    delta: float
    rho: float
    conversion_delta: float
    statement: str
    exact_epsilon: Fraction | None = None

    @property
    def epsilon_exact(self) -> str:
        """The exact total epsilon as a rational string ("1", "3/10"), else the double's."""
        return str(self.exact_epsilon if self.exact_epsilon is not None else self.epsilon)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view with every spend expanded."""
        return {
            "spends": [spend.to_dict() for spend in self.spends],
            "epsilon": self.epsilon,
            "epsilon_exact": self.epsilon_exact,
            "delta": self.delta,
            "rho": self.rho,
            "conversion_delta": self.conversion_delta,
            "statement": self.statement,
        }


_PARALLEL = (
    "Parallel composition across partitions: one privacy unit touches at most L0 "
    "partitions, and every sensitivity and per-partition selection budget above "
    "already carries that L0 factor."
)


def _unique_names(spends: Sequence[MechanismSpend]) -> list[str]:
    """The spends' names, refusing a name used twice."""
    names = [spend.name for spend in spends]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate spend names: {duplicates}")
    return names


def compose(spends: Sequence[MechanismSpend], conversion_delta: float = 0.0) -> Composition:
    """Sequential composition of the spends of one release.

    Pure parts: ε = Σε_i, δ = Σδ_i. zCDP parts: ρ = Σρ_i, converted once to
    (epsilon_for_rho(ρ, conversion_delta), conversion_delta) by the tight CKS
    conversion. Totals: ε = Σε_i + ε(ρ), δ = Σδ_i + conversion_delta. With no zCDP part
    nothing is converted and conversion_delta is recorded (and charged) as 0.
    The sums are exact rationals (each spend's ``epsilon_rational``, each delta's exact
    value), and each total is the smallest double at or above its exact sum: a release
    whose rational shares add up to epsilon = 1 composes to exactly 1.0, never below the
    exact spend (docs/privacy.md §8).
    """
    check_nonnegative("conversion_delta", conversion_delta)
    spends = tuple(spends)
    names = _unique_names(spends)
    exact_pure_epsilon = sum((spend.epsilon_rational for spend in spends), Fraction(0))
    exact_pure_delta = sum((Fraction(spend.delta) for spend in spends), Fraction(0))
    pure_epsilon, pure_delta = float_up(exact_pure_epsilon), float_up(exact_pure_delta)
    rho = math.fsum(spend.rho for spend in spends if spend.rho is not None)
    zcdp_names = [spend.name for spend in spends if spend.rho is not None and spend.rho > 0]

    parts = [
        f"Sequential composition over {len(spends)} mechanism(s)"
        + (f" ({', '.join(names)})" if names else "")
        + f": the pure parts add up to ε={_format(pure_epsilon)}, δ={_format(pure_delta)}."
    ]
    if zcdp_names:
        if not 0 < conversion_delta < 1:
            raise ValueError(
                f"zCDP parts ({', '.join(zcdp_names)}) need a conversion_delta in (0, 1), "
                f"got {conversion_delta!r}"
            )
        conversion_epsilon = epsilon_for_rho(rho, conversion_delta)
        parts.append(
            f"The zCDP parts ({', '.join(zcdp_names)}) add up to ρ={_format(rho)}, converted once "
            f"to (ε={_format(conversion_epsilon)}, δ={_format(conversion_delta)}) with the tight "
            "conversion of Canonne, Kamath and Steinke (2020, Prop. 12 / Cor. 13)."
        )
    else:
        rho = 0.0
        conversion_delta = 0.0
        conversion_epsilon = 0.0
    exact_epsilon = exact_pure_epsilon + Fraction(conversion_epsilon)
    epsilon = float_up(exact_epsilon)
    delta = float_up(exact_pure_delta + Fraction(conversion_delta))
    if delta >= 1:
        raise ValueError(f"total delta {delta!r} is >= 1: no guarantee")
    parts.append(_PARALLEL)
    parts.append(
        f"Total: (ε={_format(epsilon)}, δ={_format(delta)})-DP, neighbours differ by adding "
        "or removing all rows of one privacy unit."
    )
    return Composition(
        spends=spends,
        epsilon=epsilon,
        delta=delta,
        rho=rho,
        conversion_delta=conversion_delta,
        statement=" ".join(parts),
        exact_epsilon=exact_epsilon,
    )


@dataclass(frozen=True)
class GroupPrivacy:
    """Guarantee for a group of `group_size` privacy units (e.g. one household)."""

    group_size: int
    epsilon: float
    delta: float


def group_privacy_table(
    epsilon: float, delta: float, group_sizes: Sequence[int] = (1, 2, 4, 8)
) -> tuple[GroupPrivacy, ...]:
    """Group privacy of an (ε, δ)-DP release: a group of k units gets (k·ε, k·e^{(k−1)ε}·δ).

    Delta is capped at 1 (where the bound says nothing).
    """
    check_nonnegative("epsilon", epsilon)
    check_nonnegative("delta", delta)
    rows = []
    for size in group_sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"group size must be an integer >= 1, got {size!r}")
        if delta == 0:
            group_delta = 0.0
        elif math.log(size) + (size - 1) * epsilon + math.log(delta) >= 0:
            group_delta = 1.0  # also avoids overflow of e^{(k−1)ε}
        else:
            group_delta = min(1.0, size * math.exp((size - 1) * epsilon) * delta)
        rows.append(GroupPrivacy(group_size=size, epsilon=size * epsilon, delta=group_delta))
    return tuple(rows)
