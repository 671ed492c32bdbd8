"""The release card's charts: static SVG from matplotlib, inlined into card.html.

Invariants: a chart is a pure function of its arguments (released values, configuration,
ledger charges), drawn without pyplot's global state; its SVG bytes are deterministic
(fixed id salt, no date, text kept as text) and carry no number with more than two
decimals, so the card never repeats a figure at a precision the noise does not support
(docs/privacy.md §7).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import Any

import matplotlib as mpl
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

__all__ = ["budget_chart", "keep_chart", "metric_chart", "spend_chart"]

# Colours of the card (also what the browser test looks for in its screenshot).
VALUE_COLOUR = "#1f5fa8"
INTERVAL_COLOUR = "#7aa6d8"
LIMIT_COLOUR = "#c0392b"
_STYLE: dict[Any, Any] = {
    "svg.hashsalt": "dprelease-card",
    "svg.fonttype": "none",
    "font.family": "DejaVu Sans",
    "font.size": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_LONG_DECIMALS = re.compile(r"(\d\.\d\d)\d+")
_HEADER = re.compile(r"^<\?xml[^>]*>\s*(<!DOCTYPE[^>]*>\s*)?", re.DOTALL)
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)


def _plain(label: str) -> str:
    """A label drawn as typed: ``$`` would otherwise start matplotlib's math text."""
    return label.replace("$", r"\$")


def _finite(numbers: Sequence[float]) -> list[float]:
    """The numbers with non-finite ones drawn as 0 (a chart must draw whatever it gets)."""
    return [n if math.isfinite(n) else 0.0 for n in numbers]


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=96, layout="constrained")
    FigureCanvasSVG(figure)
    return figure


def _svg(figure: Figure, label: str) -> str:
    """The figure as an inline ``<svg>`` element with an accessible label."""
    buffer = io.StringIO()
    with mpl.rc_context(_STYLE):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": "dprelease"})
    text = _METADATA.sub("", _HEADER.sub("", buffer.getvalue()))
    text = _LONG_DECIMALS.sub(r"\1", text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1)


def metric_chart(
    labels: Sequence[str],
    values: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    title: str,
    bars: bool,
) -> str:
    """Released values (bars for counts and sums, dots for means) with their intervals."""
    with mpl.rc_context(_STYLE):
        figure = _figure(7.0, 0.9 + 0.24 * max(len(labels), 1))
        axes = figure.add_subplot()
        positions = list(range(len(labels)))[::-1]
        values, lows, highs = _finite(values), _finite(lows), _finite(highs)
        # Whiskers never point inwards, whatever a (buggy) interval says: the output
        # contract and verify judge intervals, a chart only draws them.
        below = [max(v - lo, 0.0) for v, lo in zip(values, lows, strict=True)]
        above = [max(hi - v, 0.0) for v, hi in zip(values, highs, strict=True)]
        if bars:
            axes.barh(positions, values, color=VALUE_COLOUR, height=0.6)
        axes.errorbar(
            values,
            positions,
            xerr=[below, above],
            fmt="none" if bars else "o",
            color=VALUE_COLOUR,
            ecolor=INTERVAL_COLOUR if bars else VALUE_COLOUR,
            elinewidth=1.5,
            capsize=2,
            markersize=4,
        )
        axes.set_yticks(positions, [_plain(label[:40]) for label in labels])
        axes.set_title(_plain(title), loc="left", fontsize=10)
        axes.grid(axis="x", color="#dddddd", linewidth=0.6)
        axes.set_axisbelow(True)
        return _svg(figure, title)


def keep_chart(table: Sequence[tuple[int, float]], title: str) -> str:
    """Keep probability of a partition by its number of distinct units, up to 1."""
    with mpl.rc_context(_STYLE):
        figure = _figure(7.0, 2.6)
        axes = figure.add_subplot()
        units = [n for n, _ in table]
        axes.step(units, [p for _, p in table], where="post", color=VALUE_COLOUR, linewidth=1.8)
        axes.set_xscale("log")
        axes.set_ylim(0, 1.05)
        axes.set_xlabel("distinct privacy units in the partition")
        axes.set_ylabel("keep probability")
        axes.set_title(_plain(title), loc="left", fontsize=10)
        axes.grid(color="#dddddd", linewidth=0.6)
        return _svg(figure, title)


def spend_chart(
    charges: Sequence[str], cumulative: Sequence[float], lifetime: float, title: str
) -> str:
    """The dataset's cumulative epsilon after each charge (bars), and its lifetime budget
    (a dashed line, or a note when it lies far above the spend so far)."""
    with mpl.rc_context(_STYLE):
        figure = _figure(7.0, 2.8)
        axes = figure.add_subplot()
        positions = list(range(1, len(charges) + 1))
        cumulative = _finite(cumulative)
        axes.bar(positions, cumulative, color=VALUE_COLOUR, width=0.6)
        spent = max(cumulative, default=0.0)
        if lifetime <= 3 * spent or spent == 0:
            axes.axhline(lifetime, color=LIMIT_COLOUR, linestyle="--", linewidth=1.2)
            axes.set_ylim(0, lifetime * 1.15)
            note = "lifetime budget"
        else:
            axes.set_ylim(0, spent * 1.4)
            note = f"lifetime budget {lifetime:.4g}, above this chart"
        axes.annotate(note, (0.02, 0.93), xycoords="axes fraction", color=LIMIT_COLOUR, va="top")
        axes.set_xticks(positions, [_plain(c[:24]) for c in charges], rotation=20, ha="right")
        axes.set_ylabel("cumulative epsilon")
        axes.set_title(_plain(title), loc="left", fontsize=10)
        axes.grid(axis="y", color="#dddddd", linewidth=0.6)
        axes.set_axisbelow(True)
        return _svg(figure, title)


def budget_chart(names: Sequence[str], epsilons: Sequence[float], title: str) -> str:
    """The release's epsilon by mechanism (sequential composition adds them up)."""
    with mpl.rc_context(_STYLE):
        figure = _figure(7.0, 0.9 + 0.28 * max(len(names), 1))
        axes = figure.add_subplot()
        positions = list(range(len(names)))[::-1]
        axes.barh(positions, _finite(epsilons), color=VALUE_COLOUR, height=0.6)
        axes.set_yticks(positions, [_plain(name) for name in names])
        axes.set_xlabel("epsilon")
        axes.set_title(_plain(title), loc="left", fontsize=10)
        axes.grid(axis="x", color="#dddddd", linewidth=0.6)
        axes.set_axisbelow(True)
        return _svg(figure, title)
