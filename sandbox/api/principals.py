"""Principals: registration by operators, lookup, key rotation."""

from __future__ import annotations

from flask import Response
from flask_smorest import Blueprint

from sandbox.actions import principals
from sandbox.api.calls import caller, json_body, respond, runtime
from sandbox.api.schemas import ref_body

blp = Blueprint("principals", __name__, url_prefix="/v1/principals", description="Principals")


@blp.route("", methods=["POST"])
@blp.doc(
    summary="Register an enterprise or regulator with its public key(s) (operator)",
    requestBody=ref_body("PrincipalRequest"),
)
def create() -> Response:
    return respond(principals.register(runtime(), json_body(), caller().id))


@blp.route("/<principal_id>", methods=["GET"])
@blp.doc(summary="A principal and its keys (operator, regulator, or the principal itself)")
def show(principal_id: str) -> Response:
    return respond(principals.read(runtime(), caller(), principal_id))


@blp.route("/<principal_id>/keys", methods=["POST"])
@blp.doc(summary="Add a public key to a principal (operator)")
def add_key(principal_id: str) -> Response:
    return respond(principals.add_key(runtime(), principal_id, json_body()))


@blp.route("/<principal_id>/keys/<kid>/disable", methods=["POST"])
@blp.doc(summary="Disable a principal's key (operator)")
def disable_key(principal_id: str, kid: str) -> Response:
    return respond(principals.disable_key(runtime(), principal_id, kid))
