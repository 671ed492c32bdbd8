"""Per-cell contribution rules: what one (unit, partition) cell adds to each aggregate.

Invariant: every rule is a function of the cell's own n and exact sums only, and its result
lies inside the per-partition bound its metric kind declares (docs/privacy.md §4): COUNT
c = min(n, Linf), SUM the cell's total clamped to [c·lower, c·upper], MEAN's and
VARIANCE's centred sums scaled by c/n with integer rounding toward zero.
Every per-cell sum is an exact integer: a sum of non-negative long terms by ``try_sum``,
so no overflow can raise, whatever order Spark adds the rows in; a cell of at most Linf
rows never leaves the long range (``check_exact_arithmetic``), and a larger cell whose sum
does (millions of one unit's rows in one partition) is null and contributes a fixed
value of its allowed range, still a function of that unit's rows only. Scaling by c/n is
exact decimal(38,0) arithmetic with integer division toward zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.derivation import Encoding
from pipelines.metric_kinds import ROWS
from pipelines.plan import ReleasePlan

CELL_ROWS = "__cell_rows"  # n: the cell's row count before bounding
EXACT = T.DecimalType(38, 0)


def encoded_column(metric_name: str) -> str:
    """Name of a metric's integer-encoded value column (see ``encoded_columns``)."""
    return f"__units__{metric_name}"


def encoded_columns(plan: ReleasePlan) -> dict[str, str]:
    """Each measured metric's encoded column; metrics with equal encodings share one.

    Sum and mean of one column with the same bounds and grid are the same integers, so
    they are encoded, shuffled and summed once, under the first metric's name.
    """
    first: dict[Encoding, str] = {}
    return {
        name: encoded_column(first.setdefault(encoding, name))
        for name, encoding in plan.encodings.items()
    }


def _offset_sum(encoded: str) -> str:
    return f"__offset_sum{encoded}"


def _square_sum(encoded: str) -> str:
    return f"__square_sum{encoded}"


def _centred(units: Column, encoding: Encoding) -> Column:
    # y = 2 (units − lo) − width lies in [−width, width]; a long (|y| <= 2**41).
    return (units - F.lit(encoding.lo_units)) * F.lit(2) - F.lit(encoding.width)


def cell_sums(plan: ReleasePlan) -> list[Column]:
    """The cell aggregate's exact sums: per encoding Σ(units − lo) and, for variances, Σy².

    Every summed term is non-negative, so a long ``try_sum`` is null exactly when the
    cell's total passes the long range, whatever the order Spark adds the rows in.
    """
    columns = encoded_columns(plan)
    sums: dict[str, Column] = {}
    for output in plan.outputs:
        encoding = output.encoding
        if encoding is None or not output.aggregates_column:
            continue
        encoded = columns[output.name]
        units = F.col(encoded)
        sums.setdefault(_offset_sum(encoded), F.try_sum(units - F.lit(encoding.lo_units)))
        if any(p.term == "centred_squared" for p in output.kind.parts):
            # Linf·width² fits a long (check_exact_arithmetic), so a cell of at most Linf
            # rows never passes the long range.
            y = _centred(units, encoding)
            sums.setdefault(_square_sum(encoded), F.try_sum(y * y))
    return [total.alias(name) for name, total in sums.items()]


def _div(numerator: Column, denominator: Column) -> Column:
    """Integer division toward zero (Spark's ``div``) of decimal(38,0) operands, as a long.

    Callers guarantee that the quotient fits a long.
    """
    return F.call_function("div", numerator.cast(EXACT), denominator.cast(EXACT))


@dataclass(frozen=True)
class _Cell:
    """What one cell rule needs: Linf, the encoding, and the cell's sums."""

    linf: int
    encoding: Encoding
    offset: Column  # Σ (units − lo) >= 0; null past the long range
    squares: Column | None  # Σ y² >= 0, for variances; null past the long range


def _bounded_sum(cell: _Cell) -> Column:
    """SUM: the cell's total clamped to [c·lo, c·hi] (for n <= Linf: exact, inside already)."""
    e, linf, n = cell.encoding, cell.linf, F.col(CELL_ROWS)
    exact = cell.offset + n * F.lit(e.lo_units)
    # n > Linf: c = Linf, and T = Σ(units − lo) + (n − Linf)·lo is clamped to [0, Linf·width].
    shift = (n - F.lit(linf)).cast(EXACT) * F.lit(e.lo_units).cast(EXACT)
    over = (cell.offset.cast(EXACT) + shift).cast(EXACT)
    clamped = F.least(F.greatest(over, F.lit(0).cast(EXACT)), F.lit(linf * e.width).cast(EXACT))
    large = F.lit(linf * e.lo_units) + clamped.cast(T.LongType())
    # Past the long range (null): the value of [c·lo, c·hi] nearest 0.
    fallback = F.lit(min(max(0, linf * e.lo_units), linf * e.hi_units))
    return F.when(n <= F.lit(linf), exact).otherwise(
        F.when(cell.offset.isNull(), fallback).otherwise(large)
    )


def _bounded_centred(cell: _Cell) -> Column:
    """MEAN: Σy with y = 2·(units − lo) − width, scaled by c/n with rounding toward zero."""
    e, linf, n = cell.encoding, cell.linf, F.col(CELL_ROWS)
    exact = cell.offset * F.lit(2) - n * F.lit(e.width)
    # |Σy| <= n·2**41 and Linf <= 2**20, so Σy·Linf fits decimal(38,0).
    wide = cell.offset.cast(EXACT) * F.lit(2) - n.cast(EXACT) * F.lit(e.width)
    scaled = _div(wide.cast(EXACT) * F.lit(linf).cast(EXACT), n)
    return F.when(n <= F.lit(linf), exact).otherwise(
        F.when(cell.offset.isNull(), F.lit(0)).otherwise(scaled)
    )


def _bounded_squares(cell: _Cell) -> Column:
    """VARIANCE: Σy², scaled by c/n with rounding toward zero (Σy² >= 0)."""
    assert cell.squares is not None
    linf, n = cell.linf, F.col(CELL_ROWS)
    # Σy² < 2**63 (else null) and Linf <= 2**20: the product fits decimal(38,0), and the
    # quotient, at most Linf·width², a long (check_exact_arithmetic).
    scaled = _div(cell.squares.cast(EXACT) * F.lit(linf).cast(EXACT), n)
    return F.when(n <= F.lit(linf), cell.squares).otherwise(
        F.when(cell.squares.isNull(), F.lit(0)).otherwise(scaled)
    )


#: How a cell's bounded contribution to a part is computed, by ``Part.term``.
CELL_RULES: dict[str, Callable[[_Cell], Column]] = {
    "units": _bounded_sum,
    "centred": _bounded_centred,
    "centred_squared": _bounded_squares,
}


def contributions(plan: ReleasePlan) -> dict[str, Column]:
    """Every cell's bounded contribution, by aggregated column (see ``CELL_RULES``)."""
    linf = plan.bounds.max_rows_per_unit_per_partition
    columns = encoded_columns(plan)
    out: dict[str, Column] = {ROWS: F.least(F.col(CELL_ROWS), F.lit(linf))}
    for output in plan.outputs:
        encoding = output.encoding
        if encoding is None or not output.aggregates_column:
            continue
        encoded = columns[output.name]
        cell = _Cell(linf, encoding, F.col(_offset_sum(encoded)), F.col(_square_sum(encoded)))
        for part in output.kind.parts:
            if part.term is None:
                continue
            # A long: |contribution| <= Linf·(row bound) < 2**63 (check_exact_arithmetic).
            out[part.source(output.name)] = CELL_RULES[part.term](cell).cast(T.LongType())
    return out
