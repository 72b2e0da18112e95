"""The benchmark's floor app does the signature work it stands for: a call it answers
was checked like a real one (refused when forged or bound to another body; it keeps
no nonces, so replays are not refused), and its receipt is signed by the platform
key. Otherwise its ratio would bound nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from flask import Flask

from bench.floor_app import create_app
from policies.calls import sign_call
from policies.principals import Role, generate_keypair
from sandbox.runtime import Runtime
from sandbox.settings import Settings
from tests.sandbox.conftest import add_principal

AUDIENCE = "public-data-sandbox"
PATH = "/v1/verifications/enterprise-good-standing"


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime.open(Settings(data_dir=tmp_path / "var"))
    yield runtime
    runtime.close()


def floor(rt: Runtime) -> tuple[Flask, bytes, str]:
    private, public = generate_keypair("ed25519")
    kid = add_principal(rt, "ent-acme", Role.ENTERPRISE, public)
    return create_app(rt), private, kid


def signed(private: bytes, kid: str, body: bytes) -> str:
    return sign_call(
        private,
        issuer="ent-acme",
        kid=kid,
        audience=AUDIENCE,
        method="POST",
        path_and_query=PATH,
        body=body,
    )


def post(app: Flask, body: bytes, token: str) -> tuple[int, dict[str, object]]:
    resp = app.test_client().post(PATH, data=body, headers={"Authorization": f"Bearer {token}"})
    return resp.status_code, resp.get_json(silent=True) or {}


def test_floor_answers_a_signed_call_with_a_platform_receipt(rt: Runtime) -> None:
    app, private, kid = floor(rt)
    body = json.dumps({"scope": "sc-1", "subject": {"uscc": "91440300MA5FXXXX1X"}}).encode()
    status, answer = post(app, body, signed(private, kid, body))
    assert status == 200 and answer["match"] is True
    receipt = answer["receipt"]
    assert isinstance(receipt, str)
    platform_key = jwt.PyJWKSet.from_dict(rt.keys.jwks()).keys[0]
    claims = jwt.decode(receipt, platform_key, algorithms=["EdDSA"])
    assert claims["audit_index"] == 0 and len(claims["leaf_hash"]) == 64


def test_floor_refuses_a_forged_or_rebound_call(rt: Runtime) -> None:
    app, private, kid = floor(rt)
    body = b'{"scope": "sc-1", "subject": {"uscc": "91440300MA5FXXXX1X"}}'
    other, _ = generate_keypair("ed25519")
    # Signed by another key; signed over another body.
    for token in (signed(other, kid, body), signed(private, kid, b"{}")):
        status, answer = post(app, body, token)
        assert status == 401 and "receipt" not in answer
        assert answer["error"]["code"] == "bad_signature"  # type: ignore[index]
