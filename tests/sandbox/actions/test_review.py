"""The scheduled enumeration review (DESIGN §9, invariant 8): flags and suspensions are
written once per period, never during a caller's request, and cannot be recognised
by their leaf hash."""

from __future__ import annotations

import base64
import hashlib
import itertools
import random
import secrets
from typing import Any

import pytest

from audit import canonical
from sandbox.actions.review import review
from sandbox.runtime import Runtime
from sandbox.verification.codes import make_uscc
from tests.sandbox.api.test_verifications_api import demo  # noqa: F401  (fixture)
from tests.sandbox.conftest import Caller, error_code, store_refuses_entries

BATCH = "/v1/verifications/enterprise-good-standing/batch"
ONE = "/v1/verifications/enterprise-good-standing"
ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def unknown_keys(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        make_uscc("9", "1", "440106", "".join(rng.choice(ALPHABET) for _ in range(8)))
        for _ in range(n)
    ]


def send(enterprise: Caller, keys: list[str]) -> Any:
    return enterprise.post(
        BATCH, {"scope": "sc-kyc", "items": [{"subject": {"uscc": u}} for u in keys]}
    )


def reviews(regulator: Caller) -> list[dict[str, Any]]:
    got = regulator.get("/v1/audit/entries?action=scope.review&limit=1000").get_json()
    return [e["entry"] for e in got["entries"]]


def test_enumeration_is_flagged_and_suspended_by_the_review(
    demo: dict[str, Any],  # noqa: F811
    rt: Runtime,
    operator: Caller,
    enterprise: Caller,
    regulator: Caller,
) -> None:
    for start in range(0, 500, 100):  # 500 unknown keys: past the suspension threshold
        assert send(enterprise, unknown_keys(500, 7)[start : start + 100]).status_code == 200
    # Nothing happens during the requests; the review decides.
    assert rt.scopes.get("sc-kyc").status.value == "active"
    outcome = review(rt)
    assert outcome is not None and outcome.allowed
    assert review(rt) is None  # one review per period
    [entry] = reviews(regulator)
    assert entry["actor"] == "platform" and entry["target"] == {}
    [flag] = entry["flags"]
    assert flag["scope"] == "sc-kyc" and flag["suspended"] is True
    assert "enumeration" in flag["reason"]
    blocked = enterprise.post(ONE, {"scope": "sc-kyc", "subject": {"uscc": "x"}})
    assert blocked.status_code == 403 and error_code(blocked) == "scope_suspended"
    # The enterprise cannot read the review: it would tell which probes existed.
    own = enterprise.get("/v1/audit/entries?limit=1000").get_json()["entries"]
    assert all(e["entry"]["action"] != "scope.review" for e in own)
    assert operator.post("/v1/scopes/sc-kyc/resume").get_json()["status"] == "active"


def test_unknown_keys_diluted_among_known_ones_are_still_flagged(
    demo: dict[str, Any],  # noqa: F811
    rt: Runtime,
    enterprise: Caller,
    regulator: Caller,
) -> None:
    # The attack of the side-channel review: batches of 21 known and 79 unknown keys kept
    # the miss ratio under 80%, and 1,185 unknown keys went through one window unflagged.
    known = [r["uscc"] for r in demo["enterprise_registry"][:21]]
    unknown = unknown_keys(158, 19)
    for start in range(0, 158, 79):
        assert send(enterprise, known + unknown[start : start + 79]).status_code == 200
    review(rt)
    [entry] = reviews(regulator)
    [flag] = entry["flags"]
    assert flag["scope"] == "sc-kyc" and flag["suspended"] is False  # 158 unknown: flag only
    assert "158 (" in flag["reason"]


def test_the_index_a_caller_sees_does_not_depend_on_what_it_probed(
    demo: dict[str, Any],  # noqa: F811
    rt: Runtime,
    enterprise: Caller,
) -> None:
    # The oracle of the side-channel review: with the window loaded to just below the
    # threshold, the next call's X-Audit-Index jumped by 2 when the probed subject was
    # unknown (a flag entry) and by 1 when it existed. Now no entry but the caller's own
    # is written during its requests, whatever it probes.
    known = demo["enterprise_registry"][0]["uscc"]
    indexes = []
    for start in range(0, 400, 100):
        resp = send(enterprise, unknown_keys(400, 23)[start : start + 100])
        indexes.append(int(resp.headers["X-Audit-Index"]))
    for subject in (known, unknown_keys(1, 99)[0], known):
        resp = enterprise.post(ONE, {"scope": "sc-kyc", "subject": {"uscc": subject}})
        indexes.append(int(resp.headers["X-Audit-Index"]))
    assert [b - a for a, b in itertools.pairwise(indexes)] == [1] * 6


def test_review_entries_cannot_be_recognised_by_their_leaf_hash(
    demo: dict[str, Any],  # noqa: F811
    rt: Runtime,
    enterprise: Caller,
) -> None:
    # The attack of the side-channel review: a flag entry's content was predictable but
    # for its time, and any signed caller gets any leaf hash from an inclusion proof, so
    # brute force told which subjects existed. Here the attacker is given everything of
    # the review entry but its salt — every field, even the exact time — and still
    # cannot tell a review that flagged it from one that did not.
    for start in range(0, 200, 100):
        assert send(enterprise, unknown_keys(200, 31)[start : start + 100]).status_code == 200
    outcome = review(rt)
    assert outcome is not None
    proof = enterprise.get(f"/v1/audit/proofs/inclusion?index={outcome.index}").get_json()
    target = base64.b64decode(proof["leaf_hash"])
    entry = rt.audit.entries(cursor=outcome.index, limit=1).entries[0].entry
    assert entry["flags"] and entry["flags"][0]["scope"] == "sc-kyc"

    def leaf_hash_of(fields: dict[str, Any]) -> bytes:
        leaf = canonical.encode(fields)
        return hashlib.sha256(b"\x00" + leaf).digest()

    assert leaf_hash_of(entry) == target  # the reconstruction is exact with the salt
    guesses = [
        {**entry, "salt": salt, "flags": flags}
        for salt in ("", "0" * 32, secrets.token_hex(16))
        for flags in (entry["flags"], [])
    ]
    guesses.append({k: v for k, v in entry.items() if k != "salt"})
    assert all(leaf_hash_of(g) != target for g in guesses)
    assert len(entry["salt"]) == 32  # 128 random bits


def test_a_suspension_commits_only_with_its_review_entry(
    demo: dict[str, Any],  # noqa: F811
    rt: Runtime,
    enterprise: Caller,
    regulator: Caller,
) -> None:
    for start in range(0, 500, 100):
        assert send(enterprise, unknown_keys(500, 13)[start : start + 100]).status_code == 200
    with store_refuses_entries(rt, "scope.review"), pytest.raises(Exception, match="disk full"):
        review(rt)
    assert rt.scopes.get("sc-kyc").status.value == "active"
    assert reviews(regulator) == []
    assert review(rt) is not None  # the period is still open: reviewed now
    assert rt.scopes.get("sc-kyc").status.value == "suspended"
    assert [e["flags"][0]["suspended"] for e in reviews(regulator)] == [True]
