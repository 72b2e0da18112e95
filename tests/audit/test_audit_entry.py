"""Entries ↔ leaf bytes, request and result hashes (DESIGN §7)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from audit_helpers import make_fields

from audit import entry
from audit.errors import BadEntry, NotCanonical

T = datetime(2026, 11, 23, 11, 2, 29, 123456, tzinfo=UTC)


def test_time_format_is_rfc3339_utc_millis() -> None:
    assert entry.format_time(T) == "2026-11-23T11:02:29.123Z"
    plus8 = T.astimezone(timezone(timedelta(hours=8)))
    assert entry.format_time(plus8) == "2026-11-23T11:02:29.123Z"
    assert entry.parse_time("2026-11-23T11:02:29.123Z") == T.replace(microsecond=123000)
    with pytest.raises(BadEntry):
        entry.format_time(datetime(2026, 1, 1))
    with pytest.raises(BadEntry):
        entry.parse_time("2026-11-23T11:02:29Z")


def test_request_hash() -> None:
    want = hashlib.sha256(b'POST\n/v1/queries?x=1\n{"a":1}').hexdigest()
    assert entry.request_hash("POST", "/v1/queries?x=1", b'{"a":1}') == want
    assert (
        entry.request_hash("GET", "/v1/keys", b"") == hashlib.sha256(b"GET\n/v1/keys\n").hexdigest()
    )


def test_result_hash_drops_receipt_and_accepts_dp_floats() -> None:
    answer = {"rows": [[1.5, 2]], "epsilon_spent": 0.5, "receipt": "x.y.z"}
    want = hashlib.sha256(b'{"epsilon_spent":0.5,"rows":[[1.5,2]]}').hexdigest()
    assert entry.result_hash(answer) == want
    assert entry.result_hash({"match": True}) == hashlib.sha256(b'{"match":true}').hexdigest()
    assert entry.result_hash(None) is None


def test_leaf_round_trip_and_extra_fields() -> None:
    fields = make_fields(3, consent_ref="c-77")
    leaf = entry.Entry.from_fields(fields).leaf(
        index=9, time=entry.format_time(T), prev=b"\x01" * 32
    )
    parsed = entry.parse_leaf(leaf)
    assert parsed["index"] == 9 and parsed["time"] == "2026-11-23T11:02:29.123Z"
    assert parsed["consent_ref"] == "c-77" and parsed["prev"] == "01" * 32
    assert leaf.startswith(b'{"action":') and b" " not in leaf.replace(b"127.0.0.1", b"")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"index": 1}, "assigned by the log"),
        ({"epsilon": 0.5}, "epsilon"),
        ({"epsilon": "1e-3"}, "epsilon"),
        ({"decision": "maybe"}, "decision"),
        ({"target": "p"}, "target"),
        ({"request_hash": "ABC"}, "request_hash"),
        ({"action": ""}, "action"),
        ({"action": None}, "non-empty string"),
        ({"actor": 5}, "actor"),
        ({"target": {"scope": 5}}, "target"),
    ],
)
def test_bad_fields_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(BadEntry, match=message):
        entry.Entry.from_fields(make_fields(1) | change)


def test_missing_field_and_float_extra() -> None:
    fields = make_fields(1)
    del fields["jti"]
    with pytest.raises(BadEntry, match="missing field 'jti'"):
        entry.Entry.from_fields(fields)
    with pytest.raises(NotCanonical):
        entry.Entry.from_fields(make_fields(1, score=0.1))
    with pytest.raises(BadEntry, match="shadow"):
        entry.Entry(**{k: v for k, v in make_fields(1).items()}, extra={"actor": "x"})


def test_parse_leaf_strictness() -> None:
    with pytest.raises(BadEntry):
        entry.parse_leaf(b'{"b":1, "a":2}')
    with pytest.raises(BadEntry):
        entry.parse_leaf(b'{"a":1.5}')
    with pytest.raises(BadEntry, match="lacks"):
        entry.parse_leaf(b'{"a":1}')
    assert entry.parse_leaf(b'{"b":1, "a":2}', strict=False) == {"a": 2, "b": 1}
