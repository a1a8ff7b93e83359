"""Plots for the report: self-contained inline SVG, no library, works offline."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence


def percentile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    pos = (len(sorted_xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def fmt_num(x: float) -> str:
    """Compact human number: 12345.6 -> 12,346; 0.01234 -> 0.0123."""
    if math.isnan(x):
        return "n/a"
    a = abs(x)
    if a >= 100:
        return f"{x:,.0f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def fmt_pct(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:+.1f}%"


def svg_plot(label: str, unit: str, base: Sequence[float], patched: Sequence[float],
             width: int = 520) -> str:
    """A strip plot with a box (quartiles, median, min-max whiskers) per variant.

    Returned as a self-contained ``<svg>`` string: the page must work offline,
    so no plotting library and no external resources.  The axis says the unit.
    """
    pad_l, pad_r, row_h, top = 70, 20, 46, 10
    height = top + 2 * row_h + 46
    values = list(base) + list(patched)
    if not base or not patched:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{width}" '
                f'height="24" role="img" aria-label="{html.escape(label)}: no samples">'
                f'<text x="4" y="16" class="tick">no samples of {html.escape(label)}</text></svg>')
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    span = hi - lo
    lo, hi = lo - span * 0.05, hi + span * 0.05

    def x(v: float) -> float:
        return pad_l + (v - lo) / (hi - lo) * (width - pad_l - pad_r)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{html.escape(label)}: base against patched">']
    colours = {"base": "#5b6b7f", "patched": "#d9731a"}
    for i, (name, xs) in enumerate((("base", base), ("patched", patched))):
        cy = top + i * row_h + row_h / 2
        s = sorted(xs)
        q1, med, q3 = percentile(s, 0.25), percentile(s, 0.5), percentile(s, 0.75)
        col = colours[name]
        parts.append(f'<text x="{pad_l - 8}" y="{cy + 4:.1f}" text-anchor="end" '
                     f'class="lbl">{name}</text>')
        parts.append(f'<line x1="{x(s[0]):.1f}" x2="{x(s[-1]):.1f}" y1="{cy:.1f}" '
                     f'y2="{cy:.1f}" stroke="{col}" stroke-width="1"/>')
        parts.append(f'<rect x="{x(q1):.1f}" y="{cy - 11:.1f}" width="{max(x(q3) - x(q1), 1):.1f}" '
                     f'height="22" fill="{col}" fill-opacity="0.18" stroke="{col}"/>')
        parts.append(f'<line x1="{x(med):.1f}" x2="{x(med):.1f}" y1="{cy - 11:.1f}" '
                     f'y2="{cy + 11:.1f}" stroke="{col}" stroke-width="2"/>')
        for j, v in enumerate(xs):
            # deterministic jitter so overlapping points stay visible
            jy = ((j * 7) % 11 - 5) * 1.6
            parts.append(f'<circle cx="{x(v):.1f}" cy="{cy + jy:.1f}" r="3" fill="{col}" '
                         f'fill-opacity="0.8"><title>{name} run {j + 1}: {fmt_num(v)}</title>'
                         f'</circle>')
    axis_y = top + 2 * row_h + 6
    parts.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{axis_y}" y2="{axis_y}" '
                 f'stroke="#999"/>')
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        parts.append(f'<text x="{x(v):.1f}" y="{axis_y + 16}" text-anchor="middle" '
                     f'class="tick">{fmt_num(v)}</text>')
    if unit:
        parts.append(f'<text x="{width - pad_r}" y="{axis_y + 30}" text-anchor="end" '
                     f'class="tick">{html.escape(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


#: colour of a headline row by its verdict: a reader sees at once what changed
_VERDICT_COLOURS = {"improved": "#2e7d32", "regressed": "#c62828"}


def svg_forest(rows: Sequence[tuple[str, float, float, float, str]], width: int = 640) -> str:
    """The headline chart: each metric's relative change with its 95% interval.

    *rows* are ``(label, change, ci_low, ci_high, verdict)`` with changes as
    fractions (0.25 = +25%).  One line per row, a zero line, the interval as
    a bar and the estimate as a dot, green when improved, red when regressed,
    grey otherwise; the axis is "% change, patched against base".
    """
    if not rows:
        return ""
    pad_l, pad_r, row_h, top = 250, 24, 26, 8
    height = top + len(rows) * row_h + 40
    ends = [v for _l, c, lo, hi, _v in rows for v in (c, lo, hi)] + [0.0]
    lo_x, hi_x = min(ends), max(ends)
    span = (hi_x - lo_x) or 1.0
    lo_x, hi_x = lo_x - span * 0.06, hi_x + span * 0.06

    def x(v: float) -> float:
        return pad_l + (v - lo_x) / (hi_x - lo_x) * (width - pad_l - pad_r)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot headline" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             'aria-label="change of each metric, patched against base, with 95% intervals">']
    zero_bottom = top + len(rows) * row_h
    parts.append(f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top}" y2="{zero_bottom}" '
                 'stroke="#999" stroke-dasharray="3,3"/>')
    for i, (label, change, ci_lo, ci_hi, verdict) in enumerate(rows):
        cy = top + i * row_h + row_h / 2
        col = _VERDICT_COLOURS.get(verdict, "#757575")
        parts.append(f'<text x="{pad_l - 8}" y="{cy + 4:.1f}" text-anchor="end" '
                     f'class="lbl">{html.escape(label)}</text>')
        parts.append(f'<line x1="{x(ci_lo):.1f}" x2="{x(ci_hi):.1f}" y1="{cy:.1f}" y2="{cy:.1f}" '
                     f'stroke="{col}" stroke-width="3"/>')
        parts.append(f'<circle cx="{x(change):.1f}" cy="{cy:.1f}" r="5" fill="{col}">'
                     f'<title>{html.escape(label)}: {fmt_pct(change * 100)} '
                     f'[{fmt_pct(ci_lo * 100)} … {fmt_pct(ci_hi * 100)}], {html.escape(verdict)}'
                     '</title></circle>')
    axis_y = zero_bottom + 6
    parts.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{axis_y}" y2="{axis_y}" '
                 'stroke="#999"/>')
    for k in range(5):
        v = lo_x + (hi_x - lo_x) * k / 4
        parts.append(f'<text x="{x(v):.1f}" y="{axis_y + 16}" text-anchor="middle" '
                     f'class="tick">{fmt_pct(v * 100)}</text>')
    parts.append(f'<text x="{width - pad_r}" y="{axis_y + 31}" text-anchor="end" class="tick">'
                 '% change, patched against base (bar: 95% interval)</text>')
    parts.append("</svg>")
    return "".join(parts)
