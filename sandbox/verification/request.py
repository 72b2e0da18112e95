"""Verification calls parsed at the edge: subject, parameters and consent per item.

DESIGN §5 bodies: a single call ``{subject, params?, consent_ref?}`` and a batch
``{items: [{subject, params?, consent_ref?}...]}``. Each item becomes a frozen
``Item`` holding only typed, normalised values, so the lookup trusts its input. A
batch is refused as a whole when any item is bad (DESIGN §2.7: no partial answers),
with ``details.fields.items.<index>`` naming the item and field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from products.errors import InvalidRequest, TooLarge
from products.manifest import DataProduct, Scalar
from products.text import is_utf8
from products.verification import Param, VerificationProduct, bind_params
from sandbox.verification.normalize import strip_edges, subject_problems

MAX_CONSENT_REF = 256
ITEM_FIELDS = frozenset({"subject", "params", "consent_ref"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}\Z")


class ItemSchema(Schema):
    """One subject: ``{subject, params?, consent_ref?}``; what its values must be depends
    on the verification product (``parse_item``)."""

    class Meta:
        unknown = RAISE

    subject = fields.Dict(keys=fields.String(), required=True)
    params = fields.Dict(keys=fields.String())
    consent_ref = fields.Raw(metadata={"type": "string"})


class VerificationRequestSchema(ItemSchema):
    """``POST /v1/verifications/{vp_id}`` (DESIGN §5)."""

    scope = fields.String(required=True, validate=validate.Length(min=1, max=64))
    request_id = fields.String(
        validate=validate.Regexp(REQUEST_ID, error="1..128 printable ASCII characters")
    )


class BatchRequestSchema(Schema):
    """``POST /v1/verifications/{vp_id}/batch`` (DESIGN §5); each item counts as a call."""

    class Meta:
        unknown = RAISE

    scope = fields.String(required=True, validate=validate.Length(min=1, max=64))
    items = fields.List(fields.Nested(ItemSchema), required=True, validate=validate.Length(min=1))
    request_id = fields.String(
        validate=validate.Regexp(REQUEST_ID, error="1..128 printable ASCII characters")
    )


@dataclass(frozen=True)
class Item:
    """One subject to verify: its key (in ``vp.key`` order) and every check's parameter."""

    key: tuple[Scalar, ...]
    params: Mapping[str, Param | None]
    consent_ref: str | None = None


def _consent_problems(vp: VerificationProduct, consent_ref: Any) -> list[str]:
    if consent_ref is None:
        if vp.natural_person:
            return [
                "required: this verification concerns a natural person, so the call "
                "must carry the reference of the data subject's authorisation"
            ]
        return []
    if not isinstance(consent_ref, str):
        return ["must be a string"]
    ref = strip_edges(consent_ref)
    if not ref:
        return ["must not be empty"]
    if len(ref) > MAX_CONSENT_REF or _CONTROL.search(ref) or not is_utf8(ref):
        return [f"must be at most {MAX_CONSENT_REF} printable characters"]
    return []


def _item_problems(
    vp: VerificationProduct, product: DataProduct, body: Any
) -> tuple[Item | None, dict[str, Any]]:
    if not isinstance(body, Mapping):
        return None, {"_schema": ["must be an object with subject, params, consent_ref"]}
    problems: dict[str, Any] = {}
    for name in body:
        if name not in ITEM_FIELDS:
            problems[str(name)] = ["unknown field"]
    key, subject_errors = subject_problems(vp, product, body.get("subject"))
    if "subject" not in body:
        problems["subject"] = ["required"]
    elif subject_errors:
        problems["subject"] = subject_errors
    params: Mapping[str, Param | None] = {}
    try:
        params = bind_params(vp, product, body.get("params"))
    except InvalidRequest as exc:
        problems.update(exc.details["fields"])
    consent = _consent_problems(vp, body.get("consent_ref"))
    if consent:
        problems["consent_ref"] = consent
    if problems or key is None:
        return None, problems
    ref = body.get("consent_ref")
    return Item(key, params, strip_edges(ref) if isinstance(ref, str) else None), {}


def parse_item(vp: VerificationProduct, product: DataProduct, body: Any) -> Item:
    """Return the parsed call ``{subject, params?, consent_ref?}``.

    Raises ``InvalidRequest`` with ``details.fields`` naming each bad field (e.g.
    ``subject.uscc``, ``params.months_at_least``, ``consent_ref``).
    """
    item, problems = _item_problems(vp, product, body)
    if item is None:
        raise InvalidRequest("invalid verification call", {"fields": problems})
    return item


def parse_items(
    vp: VerificationProduct, product: DataProduct, items: Any, *, max_items: int
) -> list[Item]:
    """Return every item of a batch, parsed, in order.

    Raises ``TooLarge`` beyond ``max_items`` items and ``InvalidRequest`` (with
    ``details.fields.items.<index>``) when there are none or any is bad.
    """
    if not isinstance(items, Sequence) or isinstance(items, str | bytes) or not items:
        raise InvalidRequest(
            "items must be a non-empty list", {"fields": {"items": ["must be a non-empty list"]}}
        )
    if len(items) > max_items:
        raise TooLarge(
            f"a batch holds at most {max_items} items", {"items": len(items), "max": max_items}
        )
    parsed: list[Item] = []
    errors: dict[int, Any] = {}
    for i, body in enumerate(items):
        item, problems = _item_problems(vp, product, body)
        if item is None:
            errors[i] = problems
        else:
            parsed.append(item)
    if errors:
        raise InvalidRequest(
            f"{len(errors)} of {len(items)} batch item(s) are invalid; nothing was verified",
            {"fields": {"items": errors}},
        )
    return parsed
