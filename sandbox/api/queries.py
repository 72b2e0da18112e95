"""DP queries and their previews (DESIGN §5, §8)."""

from __future__ import annotations

from flask import Response

from sandbox.actions import queries
from sandbox.actions.queries import QueryRequest, QueryRequestSchema
from sandbox.api.blueprint import Blueprint
from sandbox.api.calls import caller, respond, runtime
from sandbox.api.schemas import Preview, QueryAnswer

blp = Blueprint("queries", __name__, url_prefix="/v1/queries", description="DP queries")


@blp.route("/preview", methods=["POST"])
@blp.arguments(QueryRequestSchema)
@blp.response(200, Preview)
@blp.doc(summary="Cost and 95% accuracy of a query; nothing is spent (enterprise)")
def preview(request: QueryRequest) -> Response:
    return respond(queries.preview(runtime(), caller(), request))


@blp.route("", methods=["POST"])
@blp.arguments(QueryRequestSchema)
@blp.response(200, QueryAnswer)
@blp.doc(summary="Run a DP aggregate query under a scope (enterprise)")
def run(request: QueryRequest) -> Response:
    return respond(queries.run_query(runtime(), caller(), request))
