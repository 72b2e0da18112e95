"""Accessibility basics that need no browser: the palette's contrast (WCAG 2.1), and a
label for every form control of every template. Headings and keyboard reachability are
checked on the rendered pages by test_console_browser.py."""

from __future__ import annotations

import re

from sandbox.console.charts import SERIES
from tests.conftest import REPO

CONSOLE = REPO / "sandbox" / "console"
CSS = (CONSOLE / "static" / "console.css").read_text(encoding="utf-8")

# (foreground, background) pairs the stylesheet puts together for text.
TEXT_PAIRS = [
    ("--fg", "--bg"),
    ("--muted", "--bg"),
    ("--link", "--bg"),
    ("--fg", "--panel"),
    ("--muted", "--panel"),
    ("--link", "--panel"),
    ("--ok-fg", "--ok-bg"),
    ("--bad-fg", "--bad-bg"),
    ("--nav-fg", "--nav-bg"),
    ("--nav-fg", "--bad-fg"),  # the revoke button
]


def palette() -> dict[str, str]:
    root = re.search(r":root\s*{([^}]*)}", CSS)
    assert root
    return dict(re.findall(r"(--[a-z-]+):\s*(#[0-9a-fA-F]{6})", root.group(1)))


def luminance(colour: str) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_contrast_formula() -> None:
    assert round(contrast("#000000", "#ffffff"), 1) == 21.0
    assert round(contrast("#777777", "#ffffff"), 2) == 4.48


def test_text_colours_meet_wcag_aa() -> None:
    colours = palette()
    for fg, bg in TEXT_PAIRS:
        ratio = contrast(colours[fg], colours[bg])
        assert ratio >= 4.5, (fg, bg, round(ratio, 2))


def test_chart_lines_stand_out_from_the_page() -> None:
    for colour in SERIES:
        assert contrast(colour, "#ffffff") >= 3.0, colour  # WCAG 1.4.11 graphics


def test_every_form_control_has_a_label() -> None:
    for path in sorted((CONSOLE / "templates" / "console").glob("*.html")):
        html = path.read_text(encoding="utf-8")
        labelled = set(re.findall(r'<label for="([^"]+)"', html))
        for tag in re.findall(r"<(?:input|select|textarea)\b[^>]*>", html):
            if 'type="hidden"' in tag:
                continue
            wrapped = re.search(r'<label class="check"><input', html) and 'type="checkbox"' in tag
            ident = re.search(r'\bid="([^"]+)"', tag)
            assert wrapped or (ident and ident.group(1) in labelled), (path.name, tag)
