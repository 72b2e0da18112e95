"""Console tests: an app over real stores, principals that sign in with their keys."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from policies.calls import sign_call
from policies.principals import Role
from policies.sessions import CHALLENGE_PATH
from sandbox.app import create_app
from sandbox.runtime import Runtime
from sandbox.settings import Settings
from tests.sandbox.conftest import (
    AUDIENCE,
    REGISTRY_MANIFEST,
    REGISTRY_ROWS,
    Caller,
    make_caller,
)

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Clock:
    """A settable clock shared by the runtime and the tests (sessions expire on it)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class World:
    rt: Runtime
    app: Flask
    clock: Clock
    operator: Caller
    enterprise: Caller
    regulator: Caller
    other: Caller  # a second enterprise


def csrf_of(resp: TestResponse) -> str:
    m = CSRF.search(resp.get_data(as_text=True))
    assert m, resp.get_data(as_text=True)[:500]
    return m.group(1)


def token_for(caller: Caller, challenge: str, **kw: Any) -> str:
    return sign_call(
        caller.private_pem,
        issuer=caller.id,
        kid=caller.kid,
        audience=AUDIENCE,
        method="POST",
        path_and_query=CHALLENGE_PATH,
        body=challenge.encode(),
        **kw,
    )


def sign_in(client: FlaskClient, caller: Caller) -> TestResponse:
    """Sign ``caller`` in through the link flow; return the POST's response."""
    challenge = client.get("/console/challenge").get_json()["challenge"]
    token = token_for(caller, challenge)
    page = client.get("/console/sign-in", query_string={"challenge": challenge, "token": token})
    return client.post(
        "/console/sign-in",
        data={"csrf_token": csrf_of(page), "challenge": challenge, "token": token},
    )


def browser(w: World, caller: Caller, lang: str = "en") -> FlaskClient:
    """A test client (its own cookie jar) signed in as ``caller``."""
    return browser_session(w.app, caller, lang)


def browser_session(app: Flask, caller: Caller, lang: str = "en") -> FlaskClient:
    """A test client of ``app`` (its own cookie jar) signed in as ``caller``."""
    client = app.test_client()
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = lang
    resp = sign_in(client, caller)
    assert resp.status_code == 303, resp.get_data(as_text=True)[:500]
    return client


def grant_body(sid: str, enterprise: str = "ent-acme") -> dict[str, Any]:
    return {
        "id": sid,
        "enterprise": enterprise,
        "product": "enterprise_registry",
        "purpose": "console tests",
        "operations": {"aggregate": {"columns": ["district", "registered_capital"]}},
        "epsilon": 5,
        "max_epsilon_per_query": 1,
        "rate_per_minute": 1000,
        "daily_quota": 100000,
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": "2099-01-01T00:00:00Z",
    }


def dev_grant_body(sid: str = "sc-acme-dev") -> dict[str, Any]:
    """A scope granting DP synthetic data (DESIGN §11.1) on the registry to ent-acme."""
    body = grant_body(sid)
    body["operations"] = {
        "aggregate": {"columns": ["district", "status", "registered_capital"]},
        "synthetic": True,
    }
    return body


# A scorecard over the registry (DESIGN §11.3), published as a draft in the template.
RISK_MODEL: dict[str, Any] = {
    "id": "registry-risk",
    "product": "enterprise_registry",
    "key": ["uscc"],
    "model": {
        "kind": "scorecard",
        "base_points": 500,
        "features": [
            {
                "column": "district",
                "bins": [
                    {"value": "A", "points": 20},
                    {"value": "B", "points": 0},
                    {"value": "C", "points": -20},
                ],
                "missing_points": 0,
            },
            {
                "column": "registered_capital",
                "bins": [
                    {"range": [0, 100000], "points": -30},
                    {"range": [100000, 500000], "points": 0},
                    {"range": [500000, 100000000], "points": 30},
                ],
                "missing_points": 0,
            },
        ],
    },
    "output": {"bands": [{"label": "A", "min_score": 520}, {"label": "B", "min_score": 0}]},
    "natural_person": False,
    "description": "经营风险等级 (console tests)",
}


ROLES = {
    "op-city": Role.OPERATOR,
    "ent-acme": Role.ENTERPRISE,
    "reg-bureau": Role.REGULATOR,
    "ent-other": Role.ENTERPRISE,
}


def settings_for(data_dir: Path, jax_cache: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        query_threads=1,
        query_memory_limit="512MB",
        checkpoint_interval_s=0,
        model_cache_dir=jax_cache,
    )


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One JAX compilation cache per test process: a synthetic-data fit compiles once."""
    return tmp_path_factory.mktemp("console-jax-cache")


@pytest.fixture(scope="session")
def template(
    tmp_path_factory: pytest.TempPathFactory, jax_cache: Path
) -> tuple[Path, dict[str, tuple[bytes, str]]]:
    """A deployment built once per test process (principals, a loaded product, three
    scopes, a draft model product); each test gets a copy of its files (building it
    takes a second)."""
    data = tmp_path_factory.mktemp("console-template") / "var"
    rt = Runtime.open(settings_for(data, jax_cache))
    app = create_app(runtime=rt)
    callers = {pid: make_caller(app, rt, pid, role) for pid, role in ROLES.items()}
    operator = callers["op-city"]
    assert operator.post("/v1/products", REGISTRY_MANIFEST).status_code == 201
    up = operator.call(
        "PUT",
        "/v1/products/enterprise_registry/data",
        body=REGISTRY_ROWS.encode(),
        content_type="text/csv",
    )
    assert up.status_code == 200, up.get_json()
    assert operator.post("/v1/scopes", grant_body("sc-acme")).status_code == 201
    assert operator.post("/v1/scopes", grant_body("sc-other", "ent-other")).status_code == 201
    assert operator.post("/v1/scopes", dev_grant_body()).status_code == 201
    defined = operator.post("/v1/model-products", RISK_MODEL)
    assert defined.status_code == 201, defined.get_json()
    rt.close()
    return data, {pid: (c.private_pem, c.kid) for pid, c in callers.items()}


@pytest.fixture
def world(
    template: tuple[Path, dict[str, tuple[bytes, str]]], tmp_path: Path, jax_cache: Path
) -> Iterator[World]:
    source, keys = template
    data = tmp_path / "var"
    shutil.copytree(source, data)
    clock = Clock()
    rt = Runtime.open(settings_for(data, jax_cache), clock=clock)
    app = create_app(runtime=rt)
    callers = {
        pid: Caller(pid, ROLES[pid], pem, kid, app.test_client())
        for pid, (pem, kid) in keys.items()
    }
    yield World(
        rt,
        app,
        clock,
        callers["op-city"],
        callers["ent-acme"],
        callers["reg-bureau"],
        callers["ent-other"],
    )
    rt.close()


Size = Callable[[], int]
