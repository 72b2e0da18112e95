"""The audit trail over HTTP: entries, checkpoints, proofs, bundles, cosignatures."""

from __future__ import annotations

import tempfile
from typing import Any

from flask import Response, send_file
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from policies.scopes import TimeField
from sandbox.actions import audit_access
from sandbox.api.blueprint import Blueprint
from sandbox.api.calls import caller, respond, runtime
from sandbox.api.schemas import Checkpoint, ConsistencyProof, Cosignature, EntryPage, InclusionProof

blp = Blueprint("audit", __name__, url_prefix="/v1/audit", description="Audit trail")

MAX_INDEX = 2**62
Index = validate.Range(min=0, max=MAX_INDEX)


class EntriesArgs(Schema):
    class Meta:
        unknown = RAISE

    start_time = TimeField(data_key="from", metadata={"description": "RFC 3339, inclusive"})
    end_time = TimeField(data_key="to", metadata={"description": "RFC 3339, exclusive"})
    actor = fields.String(validate=validate.Length(min=1, max=200))
    action = fields.String(validate=validate.Length(min=1, max=200))
    decision = fields.String(validate=validate.OneOf(["allow", "deny"]))
    product = fields.String(validate=validate.Length(min=1, max=200))
    scope = fields.String(validate=validate.Length(min=1, max=200))
    cursor = fields.Integer(load_default=0, validate=Index)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=MAX_INDEX))


class InclusionArgs(Schema):
    class Meta:
        unknown = RAISE

    index = fields.Integer(required=True, validate=Index)
    tree_size = fields.Integer(validate=Index)


class ConsistencyArgs(Schema):
    class Meta:
        unknown = RAISE

    first = fields.Integer(required=True, validate=Index)
    second = fields.Integer(validate=Index)


class ExportArgs(Schema):
    class Meta:
        unknown = RAISE

    start = fields.Integer(load_default=0, validate=Index)
    end = fields.Integer(validate=Index)

    @validates_schema
    def _order(self, data: dict[str, Any], **_: Any) -> None:
        if "end" in data and data["end"] < data["start"]:
            raise ValidationError({"end": ["must be at least start"]})


class CosignatureRequest(Schema):
    class Meta:
        unknown = RAISE

    note = fields.String(
        required=True,
        validate=validate.Length(min=1, max=100_000),
        metadata={"description": "the checkpoint with your cosignature line"},
    )


@blp.route("/entries", methods=["GET"])
@blp.arguments(EntriesArgs, location="query")
@blp.response(200, EntryPage)
@blp.doc(summary="Audit entries with filters and cursor paging (regulator: all; others: own)")
def entries(args: dict[str, Any]) -> Response:
    return respond(audit_access.entries(runtime(), caller(), **_filters(args)))


def _filters(args: dict[str, Any]) -> dict[str, Any]:
    names = ("start_time", "end_time", "actor", "action", "decision", "product", "scope")
    return {**{n: args.get(n) for n in names}, "cursor": args["cursor"], "limit": args["limit"]}


@blp.route("/checkpoint", methods=["GET"])
@blp.response(200, Checkpoint)
@blp.doc(summary="The latest signed checkpoint (C2SP tlog-checkpoint), with cosignatures")
def checkpoint() -> Response:
    return respond(audit_access.checkpoint(runtime()))


@blp.route("/proofs/inclusion", methods=["GET"])
@blp.arguments(InclusionArgs, location="query")
@blp.response(200, InclusionProof)
@blp.doc(summary="RFC 9162 inclusion proof of an entry")
def inclusion(args: dict[str, Any]) -> Response:
    return respond(audit_access.inclusion(runtime(), args["index"], args.get("tree_size")))


@blp.route("/proofs/consistency", methods=["GET"])
@blp.arguments(ConsistencyArgs, location="query")
@blp.response(200, ConsistencyProof)
@blp.doc(summary="RFC 9162 consistency proof between two tree sizes")
def consistency(args: dict[str, Any]) -> Response:
    return respond(audit_access.consistency(runtime(), args["first"], args.get("second")))


@blp.route("/export", methods=["GET"])
@blp.arguments(ExportArgs, location="query")
@blp.doc(
    summary="An audit bundle (JSON Lines, DESIGN §7) of entries start ≤ i < end (regulator)",
    responses={"200": {"description": "the bundle", "content": {"application/x-ndjson": {}}}},
)
def export(args: dict[str, Any]) -> Response:
    rt = runtime()
    start = args["start"]
    pending, end = audit_access.export(rt, start, args.get("end"))
    answer = respond(pending)
    if answer.status_code != 200:
        return answer
    spool = tempfile.TemporaryFile(dir=rt.settings.data_dir)  # noqa: SIM115 - streamed out
    try:
        keys, witnesses = rt.bundle_keys()
        rt.audit.export(spool, start=start, end=end, keys=keys, witnesses=witnesses)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    resp = send_file(
        spool,
        mimetype="application/x-ndjson",
        as_attachment=True,
        download_name=f"audit-{start}-{end}.jsonl",
    )
    resp.headers["X-Audit-Index"] = answer.headers["X-Audit-Index"]
    return resp


@blp.route("/cosignatures", methods=["POST"])
@blp.arguments(CosignatureRequest)
@blp.response(201, Cosignature)
@blp.doc(summary="Store a witness cosignature of a checkpoint (regulator)")
def cosign(body: dict[str, Any]) -> Response:
    return respond(audit_access.cosign(runtime(), caller(), body["note"]))
