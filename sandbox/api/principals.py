"""Principals: registration by operators, lookup, key rotation."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from policies.principals import Role, parse_key
from products.errors import Forbidden, InvalidRequest
from sandbox.actions.principals import add_key as add_key_with_entry
from sandbox.actions.principals import disable_key as disable_key_with_entry
from sandbox.actions.principals import register
from sandbox.api.context import caller, note
from sandbox.api.lifecycle import json_body, render_refusal, runtime
from sandbox.api.schemas import ref_body

blp = Blueprint("principals", __name__, url_prefix="/v1/principals", description="Principals")


def _keys(data: dict[str, Any]) -> list[Any]:
    keys = data.get("keys")
    if not isinstance(keys, list) or not keys:
        raise InvalidRequest(
            "keys: at least one {public_key, kid?, alg?}",
            {"fields": {"keys": ["required, non-empty"]}},
        )
    if not all(isinstance(k, dict) for k in keys):
        raise InvalidRequest("keys must be objects", {"fields": {"keys": ["not objects"]}})
    return [parse_key(k) for k in keys]


@blp.route("", methods=["POST"])
@blp.doc(
    summary="Register an enterprise or regulator with its public key(s) (operator)",
    requestBody=ref_body("PrincipalRequest"),
)
def create() -> tuple[dict[str, Any], int]:
    data = json_body()
    pid = data.get("id")
    n = note(principal=pid if isinstance(pid, str) else None)
    errors: dict[str, list[str]] = {}
    role = data.get("role")
    if role not in (Role.ENTERPRISE.value, Role.REGULATOR.value):
        errors["role"] = [
            "must be 'enterprise' or 'regulator' (operators are added with "
            "'sandbox principals add')"
        ]
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 300:
        errors["name"] = ["required: the display name (≤ 300 characters)"]
    if not isinstance(pid, str):
        errors["id"] = ["required"]
    unknown = sorted(set(data) - {"id", "role", "name", "keys"})
    if unknown:
        errors["_schema"] = [f"unknown field(s): {', '.join(unknown)}"]
    if errors:
        raise InvalidRequest("invalid principal", {"fields": errors})
    keys = _keys(data)
    assert isinstance(pid, str) and isinstance(name, str) and isinstance(role, str)
    answer = register(
        runtime(), pid, Role(role), name.strip(), keys, caller().id, n, render_refusal
    )
    return answer, 201


def _visible(principal_id: str) -> None:
    me = caller()
    if me.role is Role.ENTERPRISE and me.id != principal_id:
        raise Forbidden("enterprises may only read their own principal record")


@blp.route("/<principal_id>", methods=["GET"])
@blp.doc(summary="A principal and its keys (operator, regulator, or the principal itself)")
def show(principal_id: str) -> dict[str, Any]:
    note(principal=principal_id)
    _visible(principal_id)
    return runtime().principals.get(principal_id).to_dict()


@blp.route("/<principal_id>/keys", methods=["POST"])
@blp.doc(summary="Add a public key to a principal (operator)")
def add_key(principal_id: str) -> tuple[dict[str, Any], int]:
    n = note(principal=principal_id)
    key = parse_key(json_body())
    return add_key_with_entry(runtime(), principal_id, key, n, render_refusal), 201


@blp.route("/<principal_id>/keys/<kid>/disable", methods=["POST"])
@blp.doc(summary="Disable a principal's key (operator)")
def disable_key(principal_id: str, kid: str) -> dict[str, Any]:
    n = note(principal=principal_id)
    return disable_key_with_entry(runtime(), principal_id, kid, n, render_refusal)
