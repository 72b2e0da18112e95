"""An app per test over real stores in a temp dir, and principals that sign their calls."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from audit.note import CosignatureSigner
from policies.calls import sign_call
from policies.principals import PrincipalSchema, Role, generate_keypair
from policies.sm2 import SM2PrivateKey, is_sm2_pem
from products.parsing import parse
from sandbox.actions import principals
from sandbox.actions.call import Caller as CallContext
from sandbox.actions.call import Outcome, Pending, commit
from sandbox.app import create_app
from sandbox.platform_keys import key_alg_for
from sandbox.runtime import Runtime
from sandbox.settings import Settings

AUDIENCE = "public-data-sandbox"


SUITES = ("ed25519-sha256", "sm2-sm3")


@pytest.fixture
def suite(request: pytest.FixtureRequest) -> str:
    """The deployment's cryptographic suite (DESIGN §13): ``ed25519-sha256`` unless a
    test module parametrises it (``pytest.mark.parametrize("suite", SUITES,
    indirect=True)``)."""
    return str(getattr(request, "param", "ed25519-sha256"))


@pytest.fixture
def settings(tmp_path: Path, suite: str) -> Settings:
    # No background thread: its checkpoints and reviews would add entries at times a
    # test does not choose (tests call review() and sweep() themselves).
    return Settings(
        data_dir=tmp_path / "var",
        query_threads=1,
        query_memory_limit="512MB",
        suite=suite,
        checkpoint_interval_s=0,
    )


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime.open(settings)
    yield runtime
    runtime.close()


@pytest.fixture
def app(rt: Runtime) -> Flask:
    return create_app(runtime=rt)


@dataclass
class Caller:
    """A principal with a private key, calling the app through Flask's test client."""

    id: str
    role: Role
    private_pem: bytes
    kid: str
    client: FlaskClient

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | None = None,
        content_type: str | None = None,
        token: str | None = None,
        sign_path: str | None = None,
        sign_body: bytes | None = None,
        headers: dict[str, str] | None = None,
        lifetime_s: int = 60,
    ) -> TestResponse:
        data = (
            body
            if body is not None
            else (json.dumps(json_body).encode() if json_body is not None else b"")
        )
        if json_body is not None and content_type is None:
            content_type = "application/json"
        if token is None:
            token = sign_call(
                self.private_pem,
                issuer=self.id,
                kid=self.kid,
                audience=AUDIENCE,
                method=method,
                path_and_query=sign_path or path,
                body=data if sign_body is None else sign_body,
                lifetime_s=lifetime_s,
            )
        hdrs = {"Authorization": f"Bearer {token}", **(headers or {})}
        if content_type:
            hdrs["Content-Type"] = content_type
        return self.client.open(path, method=method, data=data, headers=hdrs)

    def get(self, path: str, **kw: Any) -> TestResponse:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> TestResponse:
        return self.call("POST", path, json_body=body if body is not None else {}, **kw)


def local(rt: Runtime, pending: Pending) -> Outcome:
    """Commit ``pending`` as a local (CLI) command would; raise its refusal."""
    outcome = commit(rt, CallContext.local("sandbox tests", rt.suite.digest), pending)
    if outcome.error is not None:
        raise outcome.error
    return outcome


def add_principal(rt: Runtime, pid: str, role: Role, public_pem: bytes) -> str:
    """Register a principal through its action, as ``sandbox principals add`` does;
    return its kid."""
    data = {
        "id": pid,
        "role": role.value,
        "name": pid,
        "keys": [{"public_key": public_pem.decode()}],
    }
    request = parse(PrincipalSchema, data, "principal")
    outcome = local(rt, principals.register(rt, request, None, roles=tuple(Role)))
    assert outcome.body is not None
    kid: str = outcome.body["keys"][0]["kid"]
    return kid


def cosigner(private_pem: bytes, name: str) -> CosignatureSigner:
    """A witness's cosignature signer for an Ed25519 or SM2 PKCS#8 key."""
    if is_sm2_pem(private_pem):
        return CosignatureSigner(SM2PrivateKey.from_pem(private_pem), name)
    return CosignatureSigner.from_pem(private_pem, name=name)


def fresh_cosigner(suite: str, name: str) -> CosignatureSigner:
    """A cosignature signer with a new random key of ``suite``'s key type."""
    if suite == "sm2-sm3":
        return CosignatureSigner(SM2PrivateKey.generate(), name)
    return CosignatureSigner.generate(name)


def make_caller(app: Flask, rt: Runtime, pid: str, role: Role) -> Caller:
    """A principal with a fresh key of the deployment suite's type (SM2 in sm2-sm3)."""
    private, public = generate_keypair(key_alg_for(rt.suite))
    kid = add_principal(rt, pid, role, public)
    return Caller(pid, role, private, kid, app.test_client())


@pytest.fixture
def operator(app: Flask, rt: Runtime) -> Caller:
    return make_caller(app, rt, "op-city", Role.OPERATOR)


@pytest.fixture
def enterprise(app: Flask, rt: Runtime) -> Caller:
    return make_caller(app, rt, "ent-acme", Role.ENTERPRISE)


@pytest.fixture
def regulator(app: Flask, rt: Runtime) -> Caller:
    return make_caller(app, rt, "reg-bureau", Role.REGULATOR)


@contextmanager
def store_refuses_entries(rt: Runtime, action: str | None) -> Iterator[None]:
    """Within the block, the SQLite store fails every append of an ``action`` entry
    (``None``: of every entry) — a trigger standing in for a full disk: what the call
    would change must not happen."""
    when = "" if action is None else f"WHEN NEW.action = '{action}' "
    with rt.engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TRIGGER refuse_entries BEFORE INSERT ON audit_entries "
            f"{when}BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    try:
        yield
    finally:
        with rt.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER refuse_entries")


def error_code(resp: TestResponse) -> str:
    body = resp.get_json()
    assert isinstance(body, dict) and "error" in body, resp.data[:300]
    code: str = body["error"]["code"]
    return code


REGISTRY_MANIFEST: dict[str, Any] = {
    "id": "enterprise_registry",
    "title": "Enterprise registrations",
    "privacy_unit": "uscc",
    "max_rows_per_unit": 1,
    "unique": [["uscc"]],
    "columns": [
        {"name": "uscc", "type": "string", "classification": "identifier"},
        {"name": "name", "type": "string", "classification": "identifier"},
        {
            "name": "district",
            "type": "string",
            "classification": "attribute",
            "public_values": ["A", "B", "C"],
        },
        {
            "name": "status",
            "type": "string",
            "classification": "attribute",
            "public_values": ["active", "revoked"],
        },
        {
            "name": "registered_capital",
            "type": "float",
            "classification": "sensitive",
            "bounds": [0, 1.0e8],
        },
    ],
}

REGISTRY_ROWS = "uscc,name,district,status,registered_capital\n" + "".join(
    f"U{i:04d},Firm {i},{'ABC'[i % 3]},{'active' if i % 4 else 'revoked'},{(i * 7919) % 10**6}\n"
    for i in range(300)
)
