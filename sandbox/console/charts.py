"""Charts drawn on the server as SVG (no script, no CDN): the budget each scope has spent
over time, as a step line per scope against its total."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from html import escape
from typing import Any

from flask_babel import gettext as _
from markupsafe import Markup

# Line colours: each has a contrast ratio of at least 3:1 against white (WCAG 1.4.11
# for graphical objects); tests/sandbox/console check it.
SERIES = ("#1f5fbf", "#b3261e", "#1b7a3a", "#8a4b00", "#6a3fa0", "#0b6e75", "#7a5c00")
W, H, LEFT, RIGHT, TOP, BOTTOM = 760, 240, 56, 250, 16, 36


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def budget_chart(
    history: Sequence[Mapping[str, Any]], totals: Mapping[str, float], *, title: str
) -> Markup:
    """An SVG step chart of cumulative epsilon per scope over time (``history``: charges
    with ``scope``, ``epsilon`` and ``time``; ``totals``: each scope's budget)."""
    label = _("Budget spent over time: %(who)s", who=title)
    if not history:
        nothing = _("No budget has been spent yet.")
        return Markup(f'<p class="muted">{escape(nothing)}</p>')
    points: dict[str, list[tuple[datetime, Decimal]]] = {}
    for h in history:
        series = points.setdefault(str(h["scope"]), [])
        before = series[-1][1] if series else Decimal(0)
        series.append((_t(str(h["time"])), before + Decimal(str(h["epsilon"]))))
    t0 = min(p[0][0] for p in points.values())
    t1 = max(p[-1][0] for p in points.values())
    span = max((t1 - t0).total_seconds(), 1.0)
    top = max(
        [float(s[-1][1]) for s in points.values()] + [float(totals.get(k, 0)) for k in points]
    )
    top = top or 1.0
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(t: datetime) -> float:
        return LEFT + pw * (t - t0).total_seconds() / span

    def y(v: float) -> float:
        return TOP + ph * (1 - v / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{escape(label)}" class="chart">',
        f"<title>{escape(label)}</title>",
        f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" class="axis"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}" class="axis"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end" class="tick">{top:g}</text>',
        f'<text x="{LEFT - 6}" y="{TOP + ph}" text-anchor="end" class="tick">0</text>',
        f'<text x="{LEFT}" y="{H - 8}" class="tick">{escape(t0.strftime("%Y-%m-%d %H:%M"))}</text>',
        f'<text x="{LEFT + pw}" y="{H - 8}" text-anchor="end" class="tick">'
        f"{escape(t1.strftime('%Y-%m-%d %H:%M'))}</text>",
        f'<text x="12" y="{TOP + ph / 2}" class="tick" transform="rotate(-90 12 {TOP + ph / 2})" '
        f'text-anchor="middle">ε</text>',
    ]
    for i, (scope, series) in enumerate(sorted(points.items())):
        colour = SERIES[i % len(SERIES)]
        d = [f"M{x(series[0][0]):.1f},{y(0):.1f}"]
        for t, v in series:
            d.append(f"H{x(t):.1f}V{y(float(v)):.1f}")
        d.append(f"H{LEFT + pw:.1f}")
        parts.append(f'<path d="{"".join(d)}" fill="none" stroke="{colour}" stroke-width="2"/>')
        total = float(totals.get(scope, 0))
        if total:
            parts.append(
                f'<line x1="{LEFT}" y1="{y(total):.1f}" x2="{LEFT + pw}" y2="{y(total):.1f}" '
                f'stroke="{colour}" stroke-dasharray="4 3"/>'
            )
        ly = TOP + 14 + 18 * i
        parts.append(
            f'<rect x="{LEFT + pw + 10}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>'
        )
        parts.append(
            f'<text x="{LEFT + pw + 24}" y="{ly}" class="legend">{escape(scope)} '
            f"({float(series[-1][1]):g}/{total:g})</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
