"""Verification products (operators define them) and verification calls (enterprises)."""

from __future__ import annotations

from flask import Response, request
from flask_smorest import Blueprint

from sandbox.actions import verifications
from sandbox.api.calls import caller, json_body, respond, runtime
from sandbox.api.schemas import ref_body, ref_response

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


@products_blp.route("", methods=["POST"])
@products_blp.doc(summary="Define a verification product (operator)")
def create() -> Response:
    return respond(verifications.define(runtime(), caller().id, json_body()))


@products_blp.route("", methods=["GET"])
@products_blp.doc(summary="Verification products (optionally of one data product)")
def list() -> Response:
    return respond(verifications.list_definitions(runtime(), request.args.get("product") or None))


@products_blp.route("/<vp_id>", methods=["GET"])
@products_blp.doc(summary="One verification product's definition")
def show(vp_id: str) -> Response:
    return respond(verifications.read_definition(runtime(), vp_id))


@calls_blp.route("/<vp_id>", methods=["POST"])
@calls_blp.doc(
    summary="Verify one subject: {match} or {match, checks} (enterprise)",
    requestBody=ref_body("VerificationRequest"),
    responses={"200": ref_response("VerificationAnswer")},
)
def verify_one(vp_id: str) -> Response:
    return respond(verifications.verify(runtime(), caller(), vp_id, json_body()))


@calls_blp.route("/<vp_id>/batch", methods=["POST"])
@calls_blp.doc(
    summary="Verify many subjects; answers in item order (enterprise)",
    requestBody=ref_body("BatchRequest"),
)
def batch(vp_id: str) -> Response:
    return respond(verifications.verify_batch(runtime(), caller(), vp_id, json_body()))
