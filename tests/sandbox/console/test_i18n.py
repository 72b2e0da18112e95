"""Every string of the console is translated (zh-CN), and no template holds text that
gettext cannot reach."""

from __future__ import annotations

import re
import subprocess
import sys

from babel.messages.pofile import read_po

from sandbox.app import create_app
from sandbox.runtime import Runtime
from tests.conftest import REPO

CONSOLE = REPO / "sandbox" / "console"
PO = CONSOLE / "translations" / "zh_CN" / "LC_MESSAGES" / "messages.po"
PLACEHOLDER = re.compile(r"%\([a-z_]+\)s|%%")
# Text a template may hold outside gettext: symbols, and the names of the two
# languages in their own language (the switch must be readable in either).
ALLOWED_TEXT = re.compile(r"^(中文|English|ε|±|—|–|/|\(|\)|:|·|=|[\s\d.,;✔✘?])*$")
EXEMPT_ELEMENTS = {"code", "pre", "script", "style", "title"}
TEXT_ATTRIBUTES = re.compile(r'\b(title|aria-label|placeholder|alt)="([^"{]*)"')


def test_the_catalogue_is_current_and_complete() -> None:
    check = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "i18n"), "--check"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    with PO.open("rb") as f:
        catalog = read_po(f, locale="zh_CN")
    messages = [m for m in catalog if m.id]
    assert len(messages) > 200
    for m in messages:
        assert m.string, f"untranslated: {m.id!r}"
        assert not m.fuzzy, f"fuzzy: {m.id!r}"
        assert sorted(PLACEHOLDER.findall(m.id)) == sorted(PLACEHOLDER.findall(m.string)), m.id


def _literal_text(source: str, env: object) -> list[str]:
    """Text of a template outside gettext: data tokens outside tags, and literal
    title/aria-label/placeholder/alt attributes, except inside code-like elements."""
    found: list[str] = []
    in_tag, tag, text, exempt = False, "", "", 0
    for _lineno, kind, value in env.lex(source):  # type: ignore[attr-defined]
        if kind != "data":
            if in_tag:
                tag += "{x}"
            continue
        for ch in value:
            if in_tag:
                if ch == ">":
                    in_tag = False
                    name = re.match(r"/?([a-zA-Z0-9]+)", tag)
                    if name and name.group(1).lower() in EXEMPT_ELEMENTS:
                        exempt += -1 if tag.startswith("/") else 1
                    for _attr, literal in TEXT_ATTRIBUTES.findall(tag):
                        code_like = re.fullmatch(r"[a-z0-9_.]+", literal)
                        if re.search(r"[A-Za-z\u4e00-\u9fff]{2,}", literal) and not code_like:
                            found.append(literal)
                    tag = ""
                else:
                    tag += ch
            elif ch == "<":
                if text.strip() and not exempt and not ALLOWED_TEXT.match(text.strip()):
                    found.append(text.strip())
                in_tag, text = True, ""
            else:
                text += ch
    return found


def test_no_template_text_escapes_gettext(rt: Runtime) -> None:
    env = create_app(runtime=rt).jinja_env
    offenders = {}
    for path in sorted((CONSOLE / "templates" / "console").glob("*.html")):
        found = _literal_text(path.read_text(encoding="utf-8"), env)
        if found:
            offenders[path.name] = found
    assert offenders == {}


def test_the_checker_finds_literal_text(rt: Runtime) -> None:
    env = create_app(runtime=rt).jinja_env
    bad = '<p>Hello {{ x }}</p><input aria-label="Search"><code>ok code</code><p>{{ _("ok") }}</p>'
    assert _literal_text(bad, env) == ["Hello", "Search"]


def test_python_labels_are_extracted() -> None:
    text = PO.read_text(encoding="utf-8")
    for source in (CONSOLE / "texts.py", CONSOLE / "charts.py"):
        for literal in re.findall(r'_\("([^"]+)"', source.read_text(encoding="utf-8")):
            assert f'msgid "{literal}"' in text or literal in text, literal
