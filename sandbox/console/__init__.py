"""The web console (DESIGN §12) under ``/console/``: sign-in by a signed challenge,
then pages for regulators, operators and enterprises, in English and Chinese.

Every console call is an audited call of the signed-in principal, committed through
the same actions as the API (``sandbox/console/edge.py``); see docs/console.md.
"""

from __future__ import annotations

from flask import Flask

from sandbox.console import auth, i18n, models, operations, supervision
from sandbox.console.edge import blp

__all__ = ["auth", "install", "models", "operations", "supervision"]


def install(app: Flask) -> None:
    """Register the console blueprint and its languages on ``app``."""
    i18n.install(app)
    app.register_blueprint(blp)
