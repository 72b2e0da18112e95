"""Verification products (operators define them) and verification calls (enterprises)."""

from __future__ import annotations

from typing import Any

from flask import Response
from marshmallow import Schema, fields

from products.verification import VerificationSchema
from sandbox.actions import verifications
from sandbox.api.blueprint import Blueprint
from sandbox.api.calls import caller, respond, runtime
from sandbox.api.schemas import BatchAnswer, VerificationAnswer, VerificationProductList
from sandbox.verification.request import BatchRequestSchema, VerificationRequestSchema

products_blp = Blueprint(
    "verification_products",
    __name__,
    url_prefix="/v1/verification-products",
    description="Verification products (核验)",
)
calls_blp = Blueprint(
    "verifications",
    __name__,
    url_prefix="/v1/verifications",
    description="Verification calls: yes/no answers only",
)


class ProductFilter(Schema):
    product = fields.String(metadata={"description": "only those of this data product"})


@products_blp.route("", methods=["POST"])
@products_blp.arguments(VerificationSchema)
@products_blp.response(201, VerificationSchema)
@products_blp.doc(summary="Define a verification product (operator)")
def create(definition: dict[str, Any]) -> Response:
    return respond(verifications.define(runtime(), caller().id, definition))


@products_blp.route("", methods=["GET"])
@products_blp.arguments(ProductFilter, location="query")
@products_blp.response(200, VerificationProductList)
@products_blp.doc(summary="Verification products (optionally of one data product)")
def list(args: dict[str, Any]) -> Response:
    return respond(verifications.list_definitions(runtime(), args.get("product") or None))


@products_blp.route("/<vp_id>", methods=["GET"])
@products_blp.response(200, VerificationSchema)
@products_blp.doc(summary="One verification product's definition")
def show(vp_id: str) -> Response:
    return respond(verifications.read_definition(runtime(), vp_id))


@calls_blp.route("/<vp_id>", methods=["POST"])
@calls_blp.arguments(VerificationRequestSchema)
@calls_blp.response(200, VerificationAnswer)
@calls_blp.doc(summary="Verify one subject: {match} or {match, checks} (enterprise)")
def verify_one(body: dict[str, Any], vp_id: str) -> Response:
    return respond(verifications.verify(runtime(), caller(), vp_id, body))


@calls_blp.route("/<vp_id>/batch", methods=["POST"])
@calls_blp.arguments(BatchRequestSchema)
@calls_blp.response(200, BatchAnswer)
@calls_blp.doc(summary="Verify many subjects; answers in item order (enterprise)")
def batch(body: dict[str, Any], vp_id: str) -> Response:
    return respond(verifications.verify_batch(runtime(), caller(), vp_id, body))
