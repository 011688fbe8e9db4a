"""Bar charts drawn on the server as SVG text (no charting package, no JavaScript).

Colours come from CSS classes (``series-<name>``) so the page's stylesheet decides them.
Every text is XML-escaped: labels are operator extensions and DIDs, i.e. data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr


@dataclass(frozen=True)
class Series:
    name: str  # CSS class suffix
    label: str  # legend text
    values: Sequence[float]


def nice_max(value: float, ticks: int = 4) -> float:
    """A round axis maximum at or above value, split into `ticks` whole steps (1, 2, 5 x 10^n)."""
    if value <= 0:
        return float(ticks)
    raw_step = value / ticks
    power = 10 ** math.floor(math.log10(raw_step)) if raw_step >= 1 else 1
    for factor in (1, 2, 2.5, 5, 10):
        if factor * power >= raw_step and float(factor * power).is_integer():
            return float(factor * power * ticks)
    return float(10 * power * ticks)  # pragma: no cover - the loop always returns


def _legend(series: Sequence[Series], x: float, y: float) -> list[str]:
    parts = []
    for s in series:
        parts.append(f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="11" height="11" '
                     f'class="series-{escape(s.name)}"/>')
        parts.append(f'<text x="{x + 16:.1f}" y="{y:.1f}" class="legend">{escape(s.label)}</text>')
        x += 30 + 8.5 * len(s.label)
    return parts


def stacked_columns(
    categories: Sequence[str], series: Sequence[Series], *, title: str,
    fmt: Callable[[float], str] = lambda v: f"{v:g}", width: int = 1100, height: int = 280,
) -> str:
    """Vertical stacked columns, one per category (e.g. per day: answered / missed)."""
    left, right, top, bottom = 44.0, 10.0, 30.0, 40.0
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(s.values[i] for s in series) for i in range(len(categories))]
    top_value = nice_max(max(totals, default=0))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label={quoteattr(title)}>', f"<title>{escape(title)}</title>"]
    for tick in range(5):
        value = top_value * tick / 4
        y = top + plot_h - plot_h * tick / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">'
                     f"{escape(fmt(value))}</text>")
    count = max(len(categories), 1)
    slot = plot_w / count
    bar = max(min(slot * 0.7, 48.0), 1.0)
    label_every = max(1, math.ceil(count / 16))
    for i, category in enumerate(categories):
        x = left + slot * i + (slot - bar) / 2
        y = top + plot_h
        for s in series:
            value = s.values[i]
            if value <= 0:
                continue
            h = plot_h * value / top_value
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                         f'class="series-{escape(s.name)}"><title>{escape(category)}: '
                         f"{escape(s.label)} {escape(fmt(value))}</title></rect>")
        if i % label_every == 0:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{top + plot_h + 16:.1f}" class="axis" '
                         f'text-anchor="middle">{escape(category)}</text>')
    parts += _legend(series, left, 16.0)
    parts.append("</svg>")
    return "".join(parts)


def stacked_rows(
    labels: Sequence[str], series: Sequence[Series], *, title: str,
    fmt: Callable[[float], str] = lambda v: f"{v:g}", width: int = 1100, row_height: int = 28,
) -> str:
    """Horizontal stacked bars, one per label (operators, DIDs), the total written at the end."""
    left, right, top = 230.0, 60.0, 30.0
    plot_w = width - left - right
    height = int(top + row_height * max(len(labels), 1) + 10)
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top_value = nice_max(max(totals, default=0))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label={quoteattr(title)}>', f"<title>{escape(title)}</title>"]
    for i, label in enumerate(labels):
        y = top + row_height * i
        shown = label if len(label) <= 34 else label[:33] + "…"
        parts.append(f'<text x="{left - 8}" y="{y + row_height * 0.62:.1f}" class="axis" '
                     f'text-anchor="end">{escape(shown)}</text>')
        x = left
        for s in series:
            value = s.values[i]
            if value <= 0:
                continue
            w = plot_w * value / top_value
            parts.append(f'<rect x="{x:.1f}" y="{y + 4:.1f}" width="{w:.1f}" '
                         f'height="{row_height - 8}" class="series-{escape(s.name)}">'
                         f"<title>{escape(label)}: {escape(s.label)} {escape(fmt(value))}</title></rect>")
            x += w
        parts.append(f'<text x="{x + 6:.1f}" y="{y + row_height * 0.62:.1f}" class="value">'
                     f"{escape(fmt(totals[i]))}</text>")
    if not labels:
        parts.append(f'<text x="{left}" y="{top + 16}" class="axis">—</text>')
    parts += _legend(series, left, 16.0)
    parts.append("</svg>")
    return "".join(parts)
