"""Model products (模型产品) and their filing (算法备案), DESIGN §11.3: thin handlers."""

from __future__ import annotations

from typing import Any

from flask import Response
from marshmallow import Schema, fields

from sandbox.actions import model_products
from sandbox.api.blueprint import Blueprint
from sandbox.api.calls import caller, respond, runtime
from sandbox.models.products import ModelProductSchema, NoteSchema
from sandbox.verification.request import BatchRequestSchema, VerificationRequestSchema

blp = Blueprint(
    "model_products",
    __name__,
    url_prefix="/v1/model-products",
    description="Model products and their filing (模型产品, 算法备案)",
)


class ModelProductAnswer(Schema):
    id = fields.String()
    product = fields.String()
    key = fields.List(fields.String())
    natural_person = fields.Boolean()
    current_version = fields.String(allow_none=True)
    bands = fields.List(fields.String())
    versions = fields.List(fields.Dict(), metadata={"description": "operators and regulators"})


class ModelProductList(Schema):
    model_products = fields.List(fields.Nested(ModelProductAnswer))


class VersionAnswer(Schema):
    id = fields.String()
    version = fields.String(metadata={"description": "SHA-256 hex of the canonical definition"})
    status = fields.String()
    created = fields.Boolean()
    score_range = fields.List(fields.Float())


class ScoreAnswer(Schema):
    band = fields.String()
    model_version = fields.String()
    receipt = fields.String()


class ScoreBatchAnswer(Schema):
    results = fields.List(fields.Dict())
    model_version = fields.String()
    receipt = fields.String()


@blp.route("", methods=["POST"])
@blp.arguments(ModelProductSchema)
@blp.response(201, VersionAnswer)
@blp.doc(summary="Define a model product; a new definition is a new draft version (operator)")
def create(definition: dict[str, Any]) -> Response:
    return respond(model_products.define(runtime(), caller().id, definition))


@blp.route("", methods=["GET"])
@blp.response(200, ModelProductList)
@blp.doc(summary="Model products (versions in full for operators and regulators)")
def list() -> Response:
    return respond(model_products.list_all(runtime(), caller()))


@blp.route("/<mp_id>", methods=["GET"])
@blp.response(200, ModelProductAnswer)
@blp.doc(summary="One model product")
def show(mp_id: str) -> Response:
    return respond(model_products.read(runtime(), caller(), mp_id))


@blp.route("/<mp_id>/versions/<version>/file", methods=["POST"])
@blp.arguments(NoteSchema)
@blp.response(200, VersionAnswer)
@blp.doc(summary="File a draft version: from now on it scores (regulator, 算法备案)")
def file(body: dict[str, Any], mp_id: str, version: str) -> Response:
    return respond(
        model_products.transition(runtime(), caller(), mp_id, version, "file", body.get("note"))
    )


@blp.route("/<mp_id>/versions/<version>/withdraw", methods=["POST"])
@blp.arguments(NoteSchema)
@blp.response(200, VersionAnswer)
@blp.doc(summary="Withdraw a version (operator or regulator)")
def withdraw(body: dict[str, Any], mp_id: str, version: str) -> Response:
    return respond(
        model_products.transition(runtime(), caller(), mp_id, version, "withdraw", body.get("note"))
    )


@blp.route("/<mp_id>/score", methods=["POST"])
@blp.arguments(VerificationRequestSchema)
@blp.response(200, ScoreAnswer)
@blp.doc(summary="Score one subject: a band, never a score or an input (enterprise)")
def score(body: dict[str, Any], mp_id: str) -> Response:
    return respond(model_products.score(runtime(), caller(), mp_id, body))


@blp.route("/<mp_id>/score/batch", methods=["POST"])
@blp.arguments(BatchRequestSchema)
@blp.response(200, ScoreBatchAnswer)
@blp.doc(summary="Score many subjects; bands in item order (enterprise)")
def score_batch(body: dict[str, Any], mp_id: str) -> Response:
    return respond(model_products.score_batch(runtime(), caller(), mp_id, body))
