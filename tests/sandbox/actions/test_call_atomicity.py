"""One call, one write transaction (DESIGN §2.9), and nothing without its entry (§2.5).

Every audited endpoint, allowed or refused, writes in exactly one transaction: the one
that appends its entry. And when the store refuses that entry, nothing the call would
have changed is changed — for every action, whether it comes through the API or a
local command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

from policies.principals import Role, generate_keypair
from sandbox.app import create_app
from sandbox.cli import main
from sandbox.demo import DemoSizes, manifest_data, verification_data, write_all
from sandbox.runtime import Runtime
from sandbox.settings import Settings
from tests.sandbox.conftest import Caller, make_caller, store_refuses_entries

WRITES = ("insert", "update", "delete", "replace")


class WriteTransactions:
    """Counts committed transactions that wrote, on every engine of the process."""

    def __init__(self) -> None:
        self.count = 0

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().lower().startswith(WRITES):
            conn.info["wrote"] = True

    def _commit(self, conn: Any) -> None:
        if conn.info.pop("wrote", False):
            self.count += 1

    def _rollback(self, conn: Any) -> None:
        conn.info.pop("wrote", None)

    def __enter__(self) -> WriteTransactions:
        event.listen(Engine, "before_cursor_execute", self._statement)
        event.listen(Engine, "commit", self._commit)
        event.listen(Engine, "rollback", self._rollback)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(Engine, "before_cursor_execute", self._statement)
        event.remove(Engine, "commit", self._commit)
        event.remove(Engine, "rollback", self._rollback)


@dataclass
class World:
    rt: Runtime
    operator: Caller
    enterprise: Caller
    regulator: Caller
    subject: str
    files: dict[str, Path]


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One JAX compilation cache for the module's synthetic-data calls."""
    return tmp_path_factory.mktemp("jax-cache")


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path, jax_cache: Path) -> Iterator[World]:
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    # No background work: its own transactions (checkpoints, reviews) would be counted.
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=url,
        query_threads=1,
        query_memory_limit="512MB",
        checkpoint_interval_s=0,
        model_cache_dir=jax_cache,
    )
    rt = Runtime.open(settings)
    app: Flask = create_app(runtime=rt)
    operator = make_caller(app, rt, "op-city", Role.OPERATOR)
    enterprise = make_caller(app, rt, "ent-acme", Role.ENTERPRISE)
    regulator = make_caller(app, rt, "reg-bureau", Role.REGULATOR)
    files = write_all(tmp_path / "csv", DemoSizes(60, 120, 60))
    manifest = manifest_data()["enterprise_registry"]
    assert operator.post("/v1/products", manifest).status_code == 201
    upload = operator.call(
        "PUT",
        "/v1/products/enterprise_registry/data",
        body=files["enterprise_registry"].read_bytes(),
        content_type="text/csv",
    )
    assert upload.status_code == 200, upload.get_json()
    vp = verification_data()["enterprise-good-standing"]
    assert operator.post("/v1/verification-products", vp).status_code == 201
    assert operator.post("/v1/scopes", scope("sc-1")).status_code == 201
    with files["enterprise_registry"].open(encoding="utf-8") as f:
        subject = f.readlines()[1].split(",")[0]
    yield World(rt, operator, enterprise, regulator, subject, files)
    rt.close()


def scope(sid: str, **ops: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "enterprise": "ent-acme",
        "product": "enterprise_registry",
        "purpose": "tests",
        "operations": {
            "aggregate": {"columns": ["district", "registered_capital", "abnormal_list"]},
            "verify": ["enterprise-good-standing"],
            "synthetic": True,
            "train": True,
            **ops,
        },
        "epsilon": 5,
        "max_epsilon_per_query": 1,
        "rate_per_minute": 1000,
        "daily_quota": 100000,
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": "2099-01-01T00:00:00Z",
    }


QUERY = "SELECT district, COUNT(*) AS n FROM enterprise_registry GROUP BY district"
TRAIN = {
    "scope": "sc-1",
    "product": "enterprise_registry",
    "epsilon": 0.5,
    "spec": {
        "kind": "scorecard",
        "target": "abnormal_list",
        "features": ["district", "registered_capital"],
    },
}
SYNTHETIC = {"scope": "sc-1", "epsilon": 0.5, "columns": ["district", "abnormal_list"], "rows": 20}
MODEL = {
    "id": "risk",
    "product": "enterprise_registry",
    "key": ["uscc"],
    "model": {
        "kind": "scorecard",
        "base_points": 600,
        "features": [
            {
                "column": "abnormal_list",
                "bins": [{"value": True, "points": -50}],
                "missing_points": 0,
            }
        ],
    },
    "output": {"bands": [{"label": "A", "min_score": 600}, {"label": "B", "min_score": 0}]},
}


def model_version() -> str:
    from products.manifest import parse_manifest
    from products.parsing import parse
    from sandbox.models.products import ModelProductSchema, definition_from

    manifest = parse_manifest(manifest_data()["enterprise_registry"])
    loaded = parse(ModelProductSchema, MODEL, "model product")
    return definition_from(loaded, manifest, loaded["model"]).version


def calls(w: World) -> list[tuple[str, Caller, str, str, Any, int]]:
    """(name, caller, method, path, body, expected status): every audited endpoint,
    allowed and refused."""
    key = generate_keypair()[1].decode()
    verify = {"scope": "sc-1", "subject": {"uscc": w.subject}}
    v = model_version()
    return [
        ("health is unaudited", w.enterprise, "GET", "/v1/health", None, 200),
        ("product list", w.enterprise, "GET", "/v1/products", None, 200),
        ("product read", w.enterprise, "GET", "/v1/products/enterprise_registry", None, 200),
        ("product read 404", w.enterprise, "GET", "/v1/products/nope", None, 404),
        ("sample", w.enterprise, "GET", "/v1/products/enterprise_registry/sample?n=3", None, 200),
        ("register 403", w.enterprise, "POST", "/v1/products", {"id": "x"}, 403),
        ("register 400", w.operator, "POST", "/v1/products", {"id": "x"}, 400),
        (
            "register 409",
            w.operator,
            "POST",
            "/v1/products",
            manifest_data()["enterprise_registry"],
            409,
        ),
        (
            "upload",
            w.operator,
            "PUT",
            "/v1/products/enterprise_registry/data",
            w.files["enterprise_registry"].read_bytes(),
            200,
        ),
        (
            "upload 400",
            w.operator,
            "PUT",
            "/v1/products/enterprise_registry/data",
            b"a,b\n1,2\n",
            400,
        ),
        (
            "principal register",
            w.operator,
            "POST",
            "/v1/principals",
            {"id": "ent-b", "role": "enterprise", "name": "B", "keys": [{"public_key": key}]},
            201,
        ),
        ("principal read", w.enterprise, "GET", "/v1/principals/ent-acme", None, 200),
        ("key add", w.operator, "POST", "/v1/principals/ent-b/keys", {"public_key": key}, 409),
        ("vp list", w.enterprise, "GET", "/v1/verification-products", None, 200),
        (
            "vp read",
            w.enterprise,
            "GET",
            "/v1/verification-products/enterprise-good-standing",
            None,
            200,
        ),
        (
            "vp define 409",
            w.operator,
            "POST",
            "/v1/verification-products",
            verification_data()["enterprise-good-standing"],
            409,
        ),
        ("scope grant", w.operator, "POST", "/v1/scopes", scope("sc-2"), 201),
        ("scope list", w.enterprise, "GET", "/v1/scopes", None, 200),
        ("scope read", w.enterprise, "GET", "/v1/scopes/sc-1", None, 200),
        ("scope suspend", w.operator, "POST", "/v1/scopes/sc-2/suspend", {}, 200),
        ("scope resume", w.operator, "POST", "/v1/scopes/sc-2/resume", {}, 200),
        ("scope resume 409", w.operator, "POST", "/v1/scopes/sc-2/resume", {}, 409),
        ("scope revoke", w.operator, "POST", "/v1/scopes/sc-2/revoke", {}, 200),
        ("charges", w.regulator, "GET", "/v1/scopes/sc-1/charges", None, 200),
        (
            "preview",
            w.enterprise,
            "POST",
            "/v1/queries/preview",
            {"scope": "sc-1", "sql": QUERY, "epsilon": 0.5},
            200,
        ),
        (
            "query",
            w.enterprise,
            "POST",
            "/v1/queries",
            {"scope": "sc-1", "sql": QUERY, "epsilon": 0.5},
            200,
        ),
        (
            "query reused",
            w.enterprise,
            "POST",
            "/v1/queries",
            {"scope": "sc-1", "sql": QUERY, "epsilon": 0.5},
            200,
        ),
        (
            "query 400",
            w.enterprise,
            "POST",
            "/v1/queries",
            {"scope": "sc-1", "sql": "SELECT x", "epsilon": 0.5},
            400,
        ),
        (
            "query over the per-query epsilon cap",
            w.enterprise,
            "POST",
            "/v1/queries",
            {"scope": "sc-1", "sql": QUERY, "epsilon": 2},
            400,
        ),
        (
            "verify",
            w.enterprise,
            "POST",
            "/v1/verifications/enterprise-good-standing",
            verify,
            200,
        ),
        (
            "verify batch",
            w.enterprise,
            "POST",
            "/v1/verifications/enterprise-good-standing/batch",
            {"scope": "sc-1", "items": [{"subject": {"uscc": w.subject}}] * 3},
            200,
        ),
        ("verify 404", w.enterprise, "POST", "/v1/verifications/nope", verify, 404),
        ("train preview", w.enterprise, "POST", "/v1/models/train/preview", TRAIN, 200),
        ("train", w.enterprise, "POST", "/v1/models/train", TRAIN, 200),
        ("train reused", w.enterprise, "POST", "/v1/models/train", TRAIN, 200),
        (
            "train 400",
            w.enterprise,
            "POST",
            "/v1/models/train",
            {**TRAIN, "spec": {**TRAIN["spec"], "target": "district"}},
            400,
        ),
        (
            "synthetic preview",
            w.enterprise,
            "POST",
            "/v1/products/enterprise_registry/synthetic/preview",
            SYNTHETIC,
            200,
        ),
        (
            "synthetic",
            w.enterprise,
            "POST",
            "/v1/products/enterprise_registry/synthetic",
            SYNTHETIC,
            200,
        ),
        ("model define", w.operator, "POST", "/v1/model-products", MODEL, 201),
        ("model define again", w.operator, "POST", "/v1/model-products", MODEL, 200),
        ("model define 400", w.operator, "POST", "/v1/model-products", {"id": "x"}, 400),
        ("model score 403", w.enterprise, "POST", "/v1/model-products/risk/score", verify, 403),
        ("model list", w.enterprise, "GET", "/v1/model-products", None, 200),
        ("model read", w.regulator, "GET", "/v1/model-products/risk", None, 200),
        ("model file", w.regulator, "POST", f"/v1/model-products/risk/versions/{v}/file", {}, 200),
        (
            "model file 409",
            w.regulator,
            "POST",
            f"/v1/model-products/risk/versions/{v}/file",
            {},
            409,
        ),
        ("scope score", w.operator, "POST", "/v1/scopes", scope("sc-3", score=["risk"]), 201),
        (
            "model score",
            w.enterprise,
            "POST",
            "/v1/model-products/risk/score",
            {**verify, "scope": "sc-3"},
            200,
        ),
        (
            "model score batch",
            w.enterprise,
            "POST",
            "/v1/model-products/risk/score/batch",
            {"scope": "sc-3", "items": [{"subject": {"uscc": w.subject}}] * 3},
            200,
        ),
        (
            "model withdraw",
            w.operator,
            "POST",
            f"/v1/model-products/risk/versions/{v}/withdraw",
            {"note": "retired"},
            200,
        ),
        ("entries", w.regulator, "GET", "/v1/audit/entries?limit=5", None, 200),
        ("checkpoint", w.enterprise, "GET", "/v1/audit/checkpoint", None, 200),
        ("inclusion", w.enterprise, "GET", "/v1/audit/proofs/inclusion?index=1", None, 200),
        ("consistency", w.enterprise, "GET", "/v1/audit/proofs/consistency?first=1", None, 200),
        ("export", w.regulator, "GET", "/v1/audit/export?start=0&end=3", None, 200),
        ("export 403", w.enterprise, "GET", "/v1/audit/export", None, 403),
        ("cosign 400", w.regulator, "POST", "/v1/audit/cosignatures", {"note": "x"}, 400),
        ("unknown path", w.enterprise, "GET", "/v1/nothing", None, 404),
        ("method", w.enterprise, "DELETE", "/v1/products", None, 405),
        ("bad json", w.enterprise, "POST", "/v1/queries", b"{", 400),
    ]


def send(caller: Caller, method: str, path: str, body: Any) -> Any:
    if isinstance(body, bytes):
        kind = "text/csv" if path.endswith("/data") else "application/json"
        return caller.call(method, path, body=body, content_type=kind)
    # Synthetic data and training can outlast the default 60 s token on a loaded
    # machine: their tokens get the longest lifetime DESIGN §6 allows.
    slow = "/synthetic" in path or "/models/train" in path
    return caller.call(method, path, json_body=body, lifetime_s=300 if slow else 60)


def test_every_audited_call_writes_in_exactly_one_transaction(world: World) -> None:
    for name, caller, method, path, body, status in calls(world):
        before = world.rt.audit.size()
        with WriteTransactions() as writes:
            resp = send(caller, method, path, body)
            resp.close()
        assert resp.status_code == status, (name, resp.get_data(as_text=True)[:300])
        audited = path != "/v1/health"
        assert writes.count == (1 if audited else 0), name
        assert world.rt.audit.size() == before + (1 if audited else 0), name
    forged = world.enterprise.call("GET", "/v1/products", sign_path="/v1/scopes")
    assert forged.status_code == 401


def snapshot(rt: Runtime) -> dict[str, Any]:
    """Every control-plane row but the audit log's, and the files of the data dir."""
    out: dict[str, Any] = {}
    with rt.engine.connect() as conn:
        names = sa.inspect(conn).get_table_names()
        for name in sorted(n for n in names if not n.startswith("audit_")):
            rows = conn.execute(sa.text(f'SELECT * FROM "{name}"')).all()
            out[name] = sorted(json.dumps([str(v) for v in r]) for r in rows)
    # Derived caches (verification answer indexes, built in the background from the
    # current data file) are not state.
    files = rt.settings.data_dir
    out["files"] = sorted(
        str(p.relative_to(files))
        for p in files.rglob("*")
        if p.is_file()
        and "sqlite3" not in p.name
        and ".uploads" not in p.parts
        and not any(part.endswith(".answers") for part in p.parts)
    )
    return out


@pytest.fixture
def sqlite_world(world: World) -> World:
    if world.rt.engine.dialect.name != "sqlite":
        pytest.skip("the refusing store is a SQLite trigger")
    return world


def test_a_store_that_refuses_the_entry_leaves_no_state_change(sqlite_world: World) -> None:
    w = sqlite_world
    for name, caller, method, path, body, status in calls(w):
        if path == "/v1/health" or (status >= 400 and name != "query 400"):
            continue
        before = snapshot(w.rt)
        with store_refuses_entries(w.rt, None):
            resp = send(caller, method, path, body)
            resp.close()
        assert resp.status_code == 503, name
        assert resp.headers.get("Retry-After"), name
        assert "receipt" not in resp.get_data(as_text=True), name
        assert snapshot(w.rt) == before, name


def test_a_local_command_whose_entry_is_refused_changes_nothing(
    sqlite_world: World, tmp_path: Path
) -> None:
    w = sqlite_world
    data_dir = str(w.rt.settings.data_dir)
    pub = tmp_path / "k.pub"
    pub.write_bytes(generate_keypair()[1])
    manifest = dict(manifest_data()["enterprise_registry"], id="registry_two")
    mpath = tmp_path / "m.json"
    mpath.write_text(json.dumps(manifest))
    rows = tmp_path / "rows.csv"
    rows.write_text(w.files["enterprise_registry"].read_text())
    commands = [
        ["principals", "add", "--id", "op-two", "--role", "operator", "--public-key", str(pub)],
        ["products", "register", str(mpath), "--data", str(rows), "--quiet"],
        ["keys", "rotate"],
        ["audit", "export", "--out", str(tmp_path / "b.jsonl")],
    ]
    for args in commands:
        before = snapshot(w.rt)
        with store_refuses_entries(w.rt, None):
            result = CliRunner().invoke(main, ["--data-dir", data_dir, *args])
        assert result.exit_code != 0, args
        assert "Traceback" not in result.output
        assert snapshot(w.rt) == before, args
    assert not (tmp_path / "b.jsonl").exists()
    # And with a store that records them, each command works.
    for args in commands[:2]:
        result = CliRunner().invoke(main, ["--data-dir", data_dir, *args])
        assert result.exit_code == 0, result.output


def test_every_console_call_writes_in_exactly_one_transaction(world: World) -> None:
    """The console's calls (sign-in, pages, forms, sign-out) are audited calls too: one
    write transaction each, the one of their entry; a page refused for want of a
    session writes nothing."""
    from tests.sandbox.console.conftest import csrf_of, token_for

    client = world.operator.client.application.test_client()
    challenge = client.get("/console/challenge").get_json()["challenge"]
    token = token_for(world.operator, challenge)
    page = client.get("/console/sign-in", query_string={"challenge": challenge, "token": token})
    sign_in = {"csrf_token": csrf_of(page), "challenge": challenge, "token": token}
    steps: list[tuple[str, str, dict[str, Any] | None, int, int]] = [
        ("page without a session", "/console/scopes", None, 302, 0),
        ("sign-in", "/console/sign-in", sign_in, 303, 1),
        ("scopes page", "/console/scopes", None, 200, 1),
        ("scope page", "/console/scopes/sc-1", None, 200, 1),
        ("products page", "/console/products", None, 200, 1),
        ("usage page", "/console/usage", None, 200, 1),
        ("report page", "/console/report", None, 200, 1),
        ("grant form", "/console/scopes/new", None, 200, 0),
    ]
    for name, path, form, status, writes_expected in steps:
        before = world.rt.audit.size()
        with WriteTransactions() as writes:
            resp = client.post(path, data=form) if form else client.get(path)
            resp.close()
        assert resp.status_code == status, (name, resp.get_data(as_text=True)[:300])
        assert writes.count == writes_expected, name
        assert world.rt.audit.size() == before + writes_expected, name
    csrf = csrf_of(client.get("/console/scopes/sc-1"))
    grant = {
        "csrf_token": csrf,
        "id": "sc-console",
        "enterprise": "ent-acme",
        "product": "enterprise_registry",
        "purpose": "console",
        "columns": ["district"],
        "epsilon": "1",
        "rate_per_minute": "10",
        "daily_quota": "10",
        "valid_from": "2026-01-01T00:00",
        "valid_until": "2099-01-01T00:00",
    }
    for name, path, form, status in [
        ("grant", "/console/scopes", grant, 303),
        ("grant refused", "/console/scopes", {**grant, "epsilon": "x"}, 400),
        ("grant conflict", "/console/scopes", grant, 409),
        ("suspend", "/console/scopes/sc-console/suspend", {"csrf_token": csrf}, 303),
        ("resume refused", "/console/scopes/sc-1/resume", {"csrf_token": csrf}, 409),
        ("no csrf", "/console/scopes/sc-1/suspend", {}, 403),
        ("sign-out", "/console/sign-out", {"csrf_token": csrf}, 303),
        ("after sign-out", "/console/scopes/sc-1/suspend", {"csrf_token": csrf}, 401),
    ]:
        before = world.rt.audit.size()
        with WriteTransactions() as writes:
            resp = client.post(path, data=form)
            resp.close()
        assert resp.status_code == status, (name, resp.get_data(as_text=True)[:300])
        assert writes.count == 1, name
        assert world.rt.audit.size() == before + 1, name


def test_the_consoles_model_calls_write_in_exactly_one_transaction(world: World) -> None:
    """Model filing and synthetic-data previews on the console: one write transaction
    each, the one of their entry, allowed or refused."""
    from tests.sandbox.console.conftest import browser_session, csrf_of

    assert world.operator.post("/v1/model-products", MODEL).status_code == 201
    v = model_version()
    app = world.operator.client.application
    reg, op, ent = (
        browser_session(app, c) for c in (world.regulator, world.operator, world.enterprise)
    )
    page = f"/console/models/risk/versions/{v}"
    synthetic = {
        "scope": "sc-1",
        "columns": ["district"],
        "rows": "10",
        "epsilon": "0.5",
        "do": "preview",
    }
    for name, client, path, form, status in [
        ("models page", reg, "/console/models", None, 200),
        ("version page", reg, page, None, 200),
        ("version page 404", reg, "/console/models/risk/versions/x", None, 404),
        ("file refused to an operator", op, f"{page}/file", {}, 403),
        ("file", reg, f"{page}/file", {"note": "n"}, 303),
        ("file again", reg, f"{page}/file", {}, 409),
        ("withdraw", op, f"{page}/withdraw", {}, 303),
        ("synthetic page", ent, "/console/synthetic", None, 200),
        ("synthetic preview", ent, "/console/synthetic", synthetic, 200),
        ("synthetic refused", ent, "/console/synthetic", {**synthetic, "rows": "x"}, 400),
        ("products page", op, "/console/products", None, 200),
    ]:
        if form is not None:
            form = {**form, "csrf_token": csrf_of(client.get("/console/scopes"))}
        before = world.rt.audit.size()
        with WriteTransactions() as writes:
            resp = client.post(path, data=form) if form is not None else client.get(path)
            resp.close()
        assert resp.status_code == status, (name, resp.get_data(as_text=True)[:300])
        assert writes.count == 1, name
        assert world.rt.audit.size() == before + 1, name


def test_a_console_call_whose_entry_is_refused_changes_nothing(sqlite_world: World) -> None:
    from tests.sandbox.console.conftest import csrf_of, sign_in

    w = sqlite_world
    client = w.operator.client.application.test_client()
    before = snapshot(w.rt)
    with store_refuses_entries(w.rt, None):
        resp = sign_in(client, w.operator)
    assert resp.status_code == 503 and "pds_console=" not in resp.headers.get("Set-Cookie", "")
    assert snapshot(w.rt) == before
    assert sign_in(client, w.operator).status_code == 303
    csrf = csrf_of(client.get("/console/scopes/sc-1"))
    for path, form in [
        ("/console/scopes/sc-1/suspend", {"csrf_token": csrf}),
        ("/console/sign-out", {"csrf_token": csrf}),
    ]:
        before = snapshot(w.rt)
        with store_refuses_entries(w.rt, None):
            resp = client.post(path, data=form)
        assert resp.status_code == 503, path
        assert snapshot(w.rt) == before, path
    with store_refuses_entries(w.rt, None):
        page = client.get("/console/audit")
    assert page.status_code == 503 and "<table" not in page.get_data(as_text=True)
