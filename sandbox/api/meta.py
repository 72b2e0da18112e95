"""Unsigned, unaudited endpoints: liveness, the platform's public keys, API docs."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from flask import Response

from sandbox.api.blueprint import Blueprint
from sandbox.api.calls import runtime

blp = Blueprint("meta", __name__, url_prefix="/v1", description="Liveness, keys and docs")


@blp.route("/health", methods=["GET"])
@blp.doc(security=[], summary="Liveness (unsigned)")
def health() -> dict[str, Any]:
    return {"status": "ok"}


@blp.route("/keys", methods=["GET"])
@blp.doc(security=[], summary="The platform's public keys as a JWKS (unsigned)")
def keys() -> dict[str, Any]:
    return runtime().keys.jwks()


@blp.route("/docs", methods=["GET"])
@blp.doc(security=[], summary="Human-readable API reference rendered from openapi.json")
def docs() -> Response:
    html = files("sandbox.api").joinpath("static/docs.html").read_text(encoding="utf-8")
    return Response(html, mimetype="text/html")
