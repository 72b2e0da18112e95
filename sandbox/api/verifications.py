"""Verification products (operators define them) and verification calls (enterprises)."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_smorest import Blueprint

from sandbox.actions.verifications import define_with_entry, verify, verify_batch
from sandbox.api.context import caller, note
from sandbox.api.lifecycle import json_body, render_refusal, runtime
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
def create() -> tuple[dict[str, Any], int]:
    data = json_body()
    n = note(
        product=data.get("product") if isinstance(data.get("product"), str) else None,
    )
    vp = define_with_entry(runtime(), caller(), data, n, render_refusal)
    n.target["verification_product"] = vp.id
    return vp.to_dict(), 201


@products_blp.route("", methods=["GET"])
@products_blp.doc(summary="Verification products (optionally of one data product)")
def list() -> dict[str, Any]:
    note()
    rt = runtime()
    ids = rt.catalogue.verification_ids(request.args.get("product") or None)
    return {"verification_products": [rt.catalogue.verification(i)[0].to_dict() for i in ids]}


@products_blp.route("/<vp_id>", methods=["GET"])
@products_blp.doc(summary="One verification product's definition")
def show(vp_id: str) -> dict[str, Any]:
    note(verification_product=vp_id)
    return runtime().catalogue.verification(vp_id)[0].to_dict()


@calls_blp.route("/<vp_id>", methods=["POST"])
@calls_blp.doc(
    summary="Verify one subject: {match} or {match, checks} (enterprise)",
    requestBody=ref_body("VerificationRequest"),
    responses={"200": ref_response("VerificationAnswer")},
)
def verify_one(vp_id: str) -> dict[str, Any]:
    n = note(verification_product=vp_id)
    n.receipt = True
    return verify(runtime(), caller(), vp_id, json_body(), n)


@calls_blp.route("/<vp_id>/batch", methods=["POST"])
@calls_blp.doc(
    summary="Verify many subjects; answers in item order (enterprise)",
    requestBody=ref_body("BatchRequest"),
)
def batch(vp_id: str) -> dict[str, Any]:
    n = note(verification_product=vp_id)
    n.receipt = True
    return verify_batch(runtime(), caller(), vp_id, json_body(), n)
