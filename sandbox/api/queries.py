"""DP queries and their previews (DESIGN §5, §8)."""

from __future__ import annotations

from flask import Response
from flask_smorest import Blueprint

from sandbox.actions import queries
from sandbox.api.calls import caller, json_body, respond, runtime
from sandbox.api.schemas import ref_body, ref_response

blp = Blueprint("queries", __name__, url_prefix="/v1/queries", description="DP queries")


@blp.route("/preview", methods=["POST"])
@blp.doc(
    summary="Cost and 95% accuracy of a query; nothing is spent (enterprise)",
    requestBody=ref_body("QueryRequest"),
    responses={"200": ref_response("Preview")},
)
def preview() -> Response:
    req = queries.parse_query_request(json_body())
    return respond(queries.preview(runtime(), caller(), req))


@blp.route("", methods=["POST"])
@blp.doc(
    summary="Run a DP aggregate query under a scope (enterprise)",
    requestBody=ref_body("QueryRequest"),
    responses={"200": ref_response("QueryAnswer")},
)
def run() -> Response:
    req = queries.parse_query_request(json_body())
    return respond(queries.run_query(runtime(), caller(), req))
