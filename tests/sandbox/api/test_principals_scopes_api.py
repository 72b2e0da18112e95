"""Principals and scopes over HTTP: roles, visibility, lifecycle codes."""

from __future__ import annotations

from typing import Any

from flask import Flask

from policies.principals import Role, generate_keypair
from policies.scopes import GrantSchema, ScopeStatus
from products.parsing import parse
from sandbox.actions import scopes
from sandbox.actions.call import Caller as CallContext
from sandbox.actions.call import commit
from sandbox.runtime import Runtime
from tests.sandbox.conftest import (
    REGISTRY_MANIFEST,
    REGISTRY_ROWS,
    Caller,
    error_code,
    local,
    make_caller,
    store_refuses_entries,
)


def scope_request(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "enterprise": "ent-acme",
        "product": "enterprise_registry",
        "purpose": "loan underwriting",
        "operations": {"aggregate": {"columns": ["district", "registered_capital"]}},
        "epsilon": 2.0,
        "delta": 0,
        "max_epsilon_per_query": 1.0,
        "rate_per_minute": 600,
        "daily_quota": 100000,
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": "2099-01-01T00:00:00Z",
    }
    base.update(over)
    return base


def setup_product(operator: Caller) -> None:
    assert operator.post("/v1/products", REGISTRY_MANIFEST).status_code == 201
    operator.call(
        "PUT",
        "/v1/products/enterprise_registry/data",
        body=REGISTRY_ROWS.encode(),
        content_type="text/csv",
    )


def test_operator_registers_an_enterprise_who_can_then_call(app: Flask, operator: Caller) -> None:
    private, public = generate_keypair("es256")
    resp = operator.post(
        "/v1/principals",
        {
            "id": "ent-new",
            "role": "enterprise",
            "name": "New Co",
            "keys": [{"public_key": public.decode(), "alg": "ES256"}],
        },
    )
    assert resp.status_code == 201, resp.get_json()
    kid = resp.get_json()["keys"][0]["kid"]
    newcomer = Caller("ent-new", Role.ENTERPRISE, private, kid, app.test_client())
    me = newcomer.get("/v1/principals/ent-new")
    assert me.status_code == 200 and me.get_json()["keys"][0]["jwk"]["crv"] == "P-256"
    other = newcomer.get("/v1/principals/op-city")
    assert other.status_code == 403


def test_bad_principal_requests(operator: Caller, enterprise: Caller) -> None:
    pub = generate_keypair()[1].decode()
    cases = [
        ({"id": "x", "role": "operator", "name": "n", "keys": [{"public_key": pub}]}, 400),
        ({"id": "x", "role": "enterprise", "name": "n", "keys": []}, 400),
        ({"id": "x", "role": "enterprise", "name": "n", "keys": [{"public_key": "junk"}]}, 400),
        (
            {
                "id": "x",
                "role": "enterprise",
                "name": "n",
                "keys": [{"public_key": pub, "alg": "ES256"}],
            },
            400,
        ),
        ({"id": "bad id", "role": "enterprise", "name": "n", "keys": [{"public_key": pub}]}, 400),
        ({"id": "ent-acme", "role": "enterprise", "name": "n", "keys": [{"public_key": pub}]}, 409),
    ]
    for body, status in cases:
        resp = operator.post("/v1/principals", body)
        assert resp.status_code == status, (body, resp.get_json())
    assert enterprise.post("/v1/principals", cases[0][0]).status_code == 403


def test_scope_grant_visibility_and_lifecycle(
    app: Flask, rt: Runtime, operator: Caller, enterprise: Caller, regulator: Caller
) -> None:
    setup_product(operator)
    resp = operator.post("/v1/scopes", scope_request(id="sc-acme"))
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["status"] == "active" and body["granted_by"] == "op-city"
    assert body["budget"] == {"epsilon": 2.0, "spent": 0.0, "remaining": 2.0}

    rival = make_caller(app, rt, "ent-rival", Role.ENTERPRISE)
    assert [s["id"] for s in enterprise.get("/v1/scopes").get_json()["scopes"]] == ["sc-acme"]
    assert rival.get("/v1/scopes").get_json()["scopes"] == []
    assert rival.get("/v1/scopes/sc-acme").status_code == 404
    assert regulator.get("/v1/scopes/sc-acme").status_code == 200

    assert (
        operator.post("/v1/scopes/sc-acme/suspend", {"reason": "review"}).get_json()["status"]
        == "suspended"
    )
    assert operator.post("/v1/scopes/sc-acme/resume").get_json()["status"] == "active"
    assert operator.post("/v1/scopes/sc-acme/revoke").get_json()["status"] == "revoked"
    again = operator.post("/v1/scopes/sc-acme/resume")
    assert again.status_code == 409 and error_code(again) == "conflict"
    assert enterprise.post("/v1/scopes/sc-acme/resume").status_code == 403


def test_bad_scope_requests_name_fields(operator: Caller) -> None:
    setup_product(operator)
    cases = {
        "product": scope_request(product="nope"),
        "operations.aggregate.columns": scope_request(
            operations={"aggregate": {"columns": ["uscc", "colour"]}}
        ),
        "epsilon": scope_request(epsilon=-1),
        "valid_until": scope_request(valid_until="2025-01-01T00:00:00Z"),
        "enterprise": scope_request(enterprise="op-city"),
    }
    for field, body in cases.items():
        resp = operator.post("/v1/scopes", body)
        assert resp.status_code == 400, field
        assert field in resp.get_json()["error"]["details"]["fields"], resp.get_json()


def test_every_call_has_an_audit_index(operator: Caller, rt: Runtime) -> None:
    setup_product(operator)
    indices = []
    for resp in (
        operator.get("/v1/products"),
        operator.get("/v1/scopes"),
        operator.post("/v1/scopes", {}),
        operator.get("/v1/scopes/none"),
    ):
        indices.append(int(resp.headers["X-Audit-Index"]))
    assert indices == sorted(indices) and len(set(indices)) == 4
    assert rt.audit.size() == indices[-1] + 1


def test_a_scope_transition_commits_only_with_its_entry(
    rt: Runtime, operator: Caller, enterprise: Caller, regulator: Caller
) -> None:
    setup_product(operator)
    assert operator.post("/v1/scopes", scope_request(id="sc-acme")).status_code == 201
    # The store refuses the entry (a trigger standing in for a full disk): the caller
    # gets a 503 and the scope is left as it was, not suspended without a trace.
    with store_refuses_entries(rt, "scope.suspend"):
        failed = operator.post("/v1/scopes/sc-acme/suspend", {"reason": "review"})
    assert failed.status_code == 503 and error_code(failed) == "unavailable"
    assert rt.scopes.get("sc-acme").status.value == "active"
    done = operator.post("/v1/scopes/sc-acme/suspend", {"reason": "review"})
    assert done.status_code == 200 and done.get_json()["status"] == "suspended"
    assert done.get_json() == operator.get("/v1/scopes/sc-acme").get_json()
    entries = regulator.get("/v1/audit/entries?action=scope.suspend").get_json()["entries"]
    assert [(e["entry"]["decision"], e["index"]) for e in entries] == [
        ("allow", int(done.headers["X-Audit-Index"]))
    ]


def test_a_transition_made_impossible_before_its_commit_is_refused_and_recorded(
    rt: Runtime, operator: Caller, enterprise: Caller
) -> None:
    # Another process revokes the scope between the action's check and the commit.
    setup_product(operator)
    assert operator.post("/v1/scopes", scope_request(id="sc-acme")).status_code == 201
    pending = scopes.transition(rt, "sc-acme", ScopeStatus.SUSPENDED, None)
    local(rt, scopes.transition(rt, "sc-acme", ScopeStatus.REVOKED, "elsewhere"))
    outcome = commit(rt, CallContext.local("test"), pending)
    assert outcome.error is not None and (outcome.status, outcome.error.code) == (409, "conflict")
    entry = rt.audit.entries(limit=1000).entries[-1].entry
    assert entry["index"] == outcome.index
    assert (entry["decision"], entry["status"]) == ("deny", 409)
    assert rt.scopes.get("sc-acme").status.value == "revoked"


def test_a_grant_commits_only_with_its_entry(
    rt: Runtime, operator: Caller, enterprise: Caller, regulator: Caller
) -> None:
    setup_product(operator)
    with store_refuses_entries(rt, "scope.grant"):
        failed = operator.post("/v1/scopes", scope_request(id="sc-acme"))
    assert failed.status_code == 503 and error_code(failed) == "unavailable"
    assert operator.get("/v1/scopes/sc-acme").status_code == 404  # no grant without trace
    done = operator.post("/v1/scopes", scope_request(id="sc-acme"))
    assert done.status_code == 201
    assert done.get_json() == operator.get("/v1/scopes/sc-acme").get_json()
    entries = regulator.get("/v1/audit/entries?action=scope.grant").get_json()["entries"]
    assert [e["index"] for e in entries] == [int(done.headers["X-Audit-Index"])]
    taken = operator.post("/v1/scopes", scope_request(id="sc-acme"))
    assert taken.status_code == 409 and error_code(taken) == "conflict"


def test_a_grant_whose_id_was_taken_before_its_commit_is_refused_and_recorded(
    rt: Runtime, operator: Caller, enterprise: Caller
) -> None:
    setup_product(operator)
    request = parse(GrantSchema, scope_request(id="sc-acme"), "scope")
    pending = scopes.grant(rt, request, "op-city")
    local(rt, scopes.grant(rt, request, "op-other"))  # another process
    outcome = commit(rt, CallContext.local("test"), pending)
    assert outcome.error is not None and (outcome.status, outcome.error.code) == (409, "conflict")
    entry = rt.audit.entries(limit=1000).entries[-1].entry
    assert (entry["decision"], entry["status"]) == ("deny", 409)
    assert rt.scopes.get("sc-acme").granted_by == "op-other"


def test_principals_and_keys_change_only_with_their_entries(
    rt: Runtime, operator: Caller, regulator: Caller
) -> None:
    pub1, pub2 = (generate_keypair()[1].decode() for _ in range(2))
    body = {"id": "ent-new", "role": "enterprise", "name": "New Co", "keys": [{"public_key": pub1}]}

    with store_refuses_entries(rt, "principal.register"):
        assert operator.post("/v1/principals", body).status_code == 503
    assert operator.get("/v1/principals/ent-new").status_code == 404
    created = operator.post("/v1/principals", body)
    assert created.status_code == 201
    assert created.get_json() == operator.get("/v1/principals/ent-new").get_json()

    with store_refuses_entries(rt, "principal.key_add"):
        assert operator.post("/v1/principals/ent-new/keys", {"public_key": pub2}).status_code == 503
    assert len(operator.get("/v1/principals/ent-new").get_json()["keys"]) == 1
    added = operator.post("/v1/principals/ent-new/keys", {"public_key": pub2})
    assert added.status_code == 201 and len(added.get_json()["keys"]) == 2
    assert added.get_json() == operator.get("/v1/principals/ent-new").get_json()
    kid = added.get_json()["keys"][1]["kid"]

    with store_refuses_entries(rt, "principal.key_disable"):
        assert operator.post(f"/v1/principals/ent-new/keys/{kid}/disable").status_code == 503
    assert {k["status"] for k in operator.get("/v1/principals/ent-new").get_json()["keys"]} == {
        "active"
    }
    disabled = operator.post(f"/v1/principals/ent-new/keys/{kid}/disable")
    assert disabled.status_code == 200
    assert disabled.get_json() == operator.get("/v1/principals/ent-new").get_json()
    assert [k["status"] for k in disabled.get_json()["keys"] if k["kid"] == kid] == ["disabled"]

    for action in ("principal.register", "principal.key_add", "principal.key_disable"):
        entries = regulator.get(f"/v1/audit/entries?action={action}").get_json()["entries"]
        mine = [e for e in entries if e["entry"]["target"].get("principal") == "ent-new"]
        assert [e["entry"]["decision"] for e in mine] == ["allow"], action


def test_names_the_platform_writes_under_cannot_be_registered(
    operator: Caller, regulator: Caller
) -> None:
    # An operator registering "platform" or "anonymous" could then read (and be taken
    # for) the platform's own entries.
    pub = generate_keypair()[1].decode()
    for pid in ("platform", "anonymous", "Platform", "unauthenticated"):
        body = {"id": pid, "role": "regulator", "name": "x", "keys": [{"public_key": pub}]}
        resp = operator.post("/v1/principals", body)
        assert resp.status_code == 400 and "id" in resp.get_json()["error"]["details"]["fields"]


def test_a_public_key_of_an_unknown_algorithm_is_a_clear_400(operator: Caller) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    others = [
        rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(),
        ec.generate_private_key(ec.SECP384R1()).public_key(),
    ]
    for key in others:
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        body = {"id": "ent-x", "role": "enterprise", "name": "X", "keys": [{"public_key": pem}]}
        resp = operator.post("/v1/principals", body)
        assert resp.status_code == 400, resp.get_json()
    # An SPKI whose algorithm identifier no library knows (a made-up OID).
    bogus = (
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2V5AyEA" + "A" * 43 + "=\n-----END PUBLIC KEY-----\n"
    )
    body = {"id": "ent-x", "role": "enterprise", "name": "X", "keys": [{"public_key": bogus}]}
    assert operator.post("/v1/principals", body).status_code == 400
