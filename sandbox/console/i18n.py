"""The console's languages: English and Simplified Chinese (zh-CN), by Flask-Babel.

The locale is the one the user picked (``?lang=``, kept in a cookie), else the best
match of ``Accept-Language``, else English. Translations are the gettext catalogue
``translations/zh_CN/LC_MESSAGES/messages.po``, compiled in memory the first time a
process needs it (Babel's own reader and compiler): the ``.po`` file is the only
source, so no compiled ``.mo`` can fall out of step with it. ``scripts/i18n``
extracts the strings of the templates and of this package into it; a test checks
that every one is translated.
"""

from __future__ import annotations

import functools
import io
from importlib.resources import files
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from flask import Flask, request
from flask_babel import Babel, Domain, get_locale

LOCALES = ("en", "zh_CN")
DEFAULT = "en"
LANG_COOKIE = "pds_lang"
CATALOGUE = "translations/zh_CN/LC_MESSAGES/messages.po"


@functools.cache
def catalogue_text() -> str:
    """The zh_CN ``.po`` file's text."""
    return files("sandbox.console").joinpath(CATALOGUE).read_text(encoding="utf-8")


@functools.cache
def _translations(locale: str) -> NullTranslations:
    if locale != "zh_CN":
        return NullTranslations()
    catalog = read_po(io.StringIO(catalogue_text()), locale="zh_CN")
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(fp=buf)


class PoDomain(Domain):  # type: ignore[misc]
    """A Flask-Babel domain whose catalogues are compiled from the ``.po`` in memory."""

    def get_translations(self) -> NullTranslations:
        return _translations(current())


class ConsoleBabel(Babel):  # type: ignore[misc]
    @property
    def domain_instance(self) -> Domain:
        return _DOMAIN


_DOMAIN = PoDomain()


def chosen_locale() -> str:
    """``?lang=`` if valid, else the cookie, else ``Accept-Language``, else English."""
    asked = request.args.get("lang") or request.cookies.get(LANG_COOKIE)
    if asked in LOCALES:
        return asked
    best = request.accept_languages.best_match(["en", "zh-CN", "zh"], default=DEFAULT)
    return "zh_CN" if best.startswith("zh") else "en"


def current() -> str:
    """The request's locale as one of ``LOCALES`` (Babel spells zh_CN zh_Hans_CN)."""
    locale = get_locale()
    return "zh_CN" if locale is not None and locale.language == "zh" else "en"


def html_lang() -> str:
    """The page's ``lang`` attribute (BCP 47)."""
    return "zh-CN" if current() == "zh_CN" else "en"


def install(app: Flask) -> None:
    """Configure Flask-Babel on ``app`` (gettext in Jinja, locale per request)."""
    ConsoleBabel(app, locale_selector=chosen_locale)


def jinja_globals() -> dict[str, Any]:
    return {"html_lang": html_lang, "locales": LOCALES}
