"""DP queries and their previews (DESIGN §5, §8)."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from sandbox.actions.queries import preview as preview_query
from sandbox.actions.queries import run_query
from sandbox.api.context import caller, note
from sandbox.api.lifecycle import json_body, render_refusal, runtime
from sandbox.api.schemas import ref_body, ref_response

blp = Blueprint("queries", __name__, url_prefix="/v1/queries", description="DP queries")


@blp.route("/preview", methods=["POST"])
@blp.doc(
    summary="Cost and 95% accuracy of a query; nothing is spent (enterprise)",
    requestBody=ref_body("QueryRequest"),
    responses={"200": ref_response("Preview")},
)
def preview() -> dict[str, Any]:
    n = note()
    return preview_query(runtime(), caller(), json_body(), n)


@blp.route("", methods=["POST"])
@blp.doc(
    summary="Run a DP aggregate query under a scope (enterprise)",
    requestBody=ref_body("QueryRequest"),
    responses={"200": ref_response("QueryAnswer")},
)
def run() -> dict[str, Any]:
    n = note()
    n.receipt = True
    return run_query(runtime(), caller(), json_body(), n, render_refusal)
