"""Principals: registration by operators, lookup, key rotation."""

from __future__ import annotations

from flask import Response

from policies.principals import KeySchema, PrincipalRequest, PrincipalSchema, PublicKey
from sandbox.actions import principals
from sandbox.api.blueprint import Blueprint
from sandbox.api.calls import caller, respond, runtime
from sandbox.api.schemas import PrincipalAnswer

blp = Blueprint("principals", __name__, url_prefix="/v1/principals", description="Principals")


@blp.route("", methods=["POST"])
@blp.arguments(PrincipalSchema)
@blp.response(201, PrincipalAnswer)
@blp.doc(summary="Register an enterprise or regulator with its public key(s) (operator)")
def create(request: PrincipalRequest) -> Response:
    return respond(principals.register(runtime(), request, caller().id))


@blp.route("/<principal_id>", methods=["GET"])
@blp.response(200, PrincipalAnswer)
@blp.doc(summary="A principal and its keys (operator, regulator, or the principal itself)")
def show(principal_id: str) -> Response:
    return respond(principals.read(runtime(), caller(), principal_id))


@blp.route("/<principal_id>/keys", methods=["POST"])
@blp.arguments(KeySchema)
@blp.response(201, PrincipalAnswer)
@blp.doc(summary="Add a public key to a principal (operator)")
def add_key(key: PublicKey, principal_id: str) -> Response:
    return respond(principals.add_key(runtime(), principal_id, key))


@blp.route("/<principal_id>/keys/<kid>/disable", methods=["POST"])
@blp.response(200, PrincipalAnswer)
@blp.doc(summary="Disable a principal's key (operator)")
def disable_key(principal_id: str, kid: str) -> Response:
    return respond(principals.disable_key(runtime(), principal_id, kid))
