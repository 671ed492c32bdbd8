"""Exact budget arithmetic: sums of charges and the lifetime check.

Amounts. Each charge is stored as the IEEE-754 double the release was calibrated
with; SQLite REAL holds a double bit-exactly, so storing rounds nothing. Sums are
taken in exact rationals (``fractions.Fraction``), never by float addition, so no
charge is ever rounded down, and the comparison with the lifetime is exact. The
configured amounts are decimals whose doubles are slightly off (five doubles 0.2 sum
exactly to 1 + 5.6e-17, not 1), so the check admits ``spent + requested ≤ lifetime ·
(1 + 1e-12)``: that slack absorbs representation error, so that a lifetime of 1.0
admits exactly five runs of ε = 0.2, and bounds any over-spend at 1e-12 relative.
The slack is against the total, not per run: it never accumulates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from dp_ops.checks import check_delta, check_nonnegative
from pipelines.ledger.model import BudgetState, Lifetime

# Relative slack of the lifetime check, in the admitting direction only.
BUDGET_TOLERANCE = Fraction(1, 10**12)


@dataclass(frozen=True)
class _Spent:
    """Exact sums of (ε, δ) charges and how many charges they are."""

    epsilon: Fraction
    delta: Fraction
    charges: int

    def plus(self, epsilon: float, delta: float) -> _Spent:
        return _Spent(
            self.epsilon + Fraction(epsilon), self.delta + Fraction(delta), self.charges + 1
        )


def _spent(amounts: Iterable[tuple[float, float]]) -> _Spent:
    """Exact sums of (ε, δ) charges: no float addition, nothing rounded."""
    total = _Spent(Fraction(0), Fraction(0), 0)
    for entry_epsilon, entry_delta in amounts:
        total = total.plus(entry_epsilon, entry_delta)
    return total


def _admits(spent: Fraction, requested: float, lifetime: float) -> bool:
    return spent + Fraction(requested) <= Fraction(lifetime) * (1 + BUDGET_TOLERANCE)


def _budget_state(
    dataset: str, privacy_unit: str, lifetime: Lifetime, spent: _Spent
) -> BudgetState:
    return BudgetState(
        dataset=dataset,
        privacy_unit=privacy_unit,
        lifetime_epsilon=float(lifetime[0]),
        lifetime_delta=float(lifetime[1]),
        spent_epsilon=float(spent.epsilon),
        spent_delta=float(spent.delta),
        charges=spent.charges,
    )


def _lifetime(lifetime_epsilon: float, lifetime_delta: float) -> Lifetime:
    """The validated lifetime as exact doubles (ints become floats)."""
    check_nonnegative("lifetime_epsilon", lifetime_epsilon)
    check_delta("lifetime_delta", lifetime_delta, allow_zero=True)
    return (float(lifetime_epsilon), float(lifetime_delta))
