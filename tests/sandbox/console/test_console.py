"""The console through Flask's test client: sign-in by a signed challenge, sessions,
CSRF, the role table, both languages, forms through the API's own actions, and one
audit entry per call."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from audit.receipts import check_receipt
from sandbox.runtime import Runtime
from tests.sandbox.console.conftest import (
    World,
    browser,
    csrf_of,
    grant_body,
    sign_in,
    token_for,
)

REGULATOR_PAGES = (
    "/console/audit",
    "/console/audit/3",
    "/console/integrity",
    "/console/budgets",
    "/console/oversight",
    "/console/models",
    "/console/report",
    "/console/usage",
)
OPERATOR_PAGES = (
    "/console/scopes",
    "/console/scopes/sc-acme",
    "/console/scopes/new",
    "/console/products",
    "/console/principals",
    "/console/usage",
    "/console/budgets",
    "/console/models",
    "/console/report",
)
ENTERPRISE_PAGES = (
    "/console/scopes",
    "/console/scopes/sc-acme",
    "/console/query",
    "/console/synthetic",
    "/console/audit",
    "/console/budgets",
    "/console/usage",
)


def last_entry(rt: Runtime) -> dict[str, Any]:
    page = rt.audit.entries(cursor=rt.audit.size() - 1, limit=1, descending=True)
    return page.entries[0].entry


def text(resp: TestResponse) -> str:
    return resp.get_data(as_text=True)


# ----------------------------------------------------------------- sign-in


def test_sign_in_opens_a_strict_httponly_session_recorded_in_the_log(world: World) -> None:
    client = world.app.test_client()
    before = world.rt.audit.size()
    resp = sign_in(client, world.regulator)
    assert resp.status_code == 303
    cookie = resp.headers["Set-Cookie"]
    assert "pds_console=" in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    # The challenge and the confirmation page are unaudited; the sign-in is one entry.
    assert world.rt.audit.size() == before + 1
    e = last_entry(world.rt)
    assert (e["action"], e["decision"], e["actor"]) == ("console.sign_in", "allow", "reg-bureau")
    assert e["jti"] and len(e["console_session"]) == 16
    secret = re.search(r"pds_console=([^;]+)", cookie).group(1)  # type: ignore[union-attr]
    assert secret not in json.dumps(e)
    assert client.get("/console/audit").status_code == 200


def test_a_challenge_and_a_token_open_one_session_only(world: World) -> None:
    client = world.app.test_client()
    challenge = client.get("/console/challenge").get_json()["challenge"]
    token = token_for(world.operator, challenge)
    page = client.get("/console/sign-in", query_string={"challenge": challenge, "token": token})
    assert "op-city" in text(page)  # "sign in as op-city?"
    form = {"csrf_token": csrf_of(page), "challenge": challenge, "token": token}
    assert client.post("/console/sign-in", data=form).status_code == 303
    # The pre-session cookie went with the sign-in: a replay needs a fresh form.
    assert client.post("/console/sign-in", data=form).status_code == 403
    form["csrf_token"] = csrf_of(client.get("/console/sign-in"))
    again = client.post("/console/sign-in", data=form)  # the same token (its jti)
    assert again.status_code == 401 and "replayed" in text(again)
    other = dict(form, token=token_for(world.operator, challenge))  # same challenge
    again = client.post("/console/sign-in", data=other)
    assert again.status_code == 401 and "replayed" in text(again)
    assert last_entry(world.rt)["action"] == "auth.refused"


def test_bad_sign_ins_are_refused_and_recorded(world: World) -> None:
    # The expired challenge last: it moves the clock.
    for case in ("tampered_challenge", "other_body", "unknown_principal", "expired_challenge"):
        client = world.app.test_client()
        challenge = client.get("/console/challenge").get_json()["challenge"]
        token = token_for(world.regulator, challenge)
        page = client.get("/console/sign-in")
        form = {"csrf_token": csrf_of(page), "challenge": challenge, "token": token}
        expected = "bad_signature"
        if case == "tampered_challenge":
            form["challenge"] = "A" + challenge[1:] if challenge[0] != "A" else "B" + challenge[1:]
        elif case == "other_body":
            form["token"] = token_for(world.regulator, challenge + "x")
        elif case == "expired_challenge":
            world.clock.advance(world.rt.settings.console_challenge_s + 1)
            form["token"] = token_for(world.regulator, challenge, now=world.clock.now)
            expected = "token_expired"
        else:
            forged = dataclasses.replace(world.regulator, id="reg-ghost")
            form["token"] = token_for(forged, challenge)
            expected = "unauthenticated"
        before = world.rt.audit.size()
        resp = client.post("/console/sign-in", data=form)
        assert resp.status_code == 401, (case, text(resp)[:300])
        assert expected in text(resp), case
        assert "pds_console" not in resp.headers.get("Set-Cookie", "")
        assert world.rt.audit.size() == before + 1
        e = last_entry(world.rt)
        assert (e["action"], e["decision"], e["actor"]) == ("auth.refused", "deny", "anonymous")


def test_the_sign_in_form_needs_its_pre_session_csrf_token(world: World) -> None:
    client = world.app.test_client()
    challenge = client.get("/console/challenge").get_json()["challenge"]
    token = token_for(world.regulator, challenge)
    resp = client.post("/console/sign-in", data={"challenge": challenge, "token": token})
    assert resp.status_code == 403 and "forbidden" in text(resp)
    # The token was not used: a proper sign-in with it still works.
    page = client.get("/console/sign-in")
    form = {"csrf_token": csrf_of(page), "challenge": challenge, "token": token}
    assert client.post("/console/sign-in", data=form).status_code == 303


def test_sign_in_link_from_the_client(world: World) -> None:
    from sandbox.client import Client

    # The link's path and query, as Client.console_link builds them, work in a browser.
    challenge = world.app.test_client().get("/console/challenge").get_json()["challenge"]
    c = Client("http://127.0.0.1:1", world.enterprise.id, world.enterprise.private_pem)
    token = c.console_token(challenge)
    client = world.app.test_client()
    page = client.get("/console/sign-in", query_string={"challenge": challenge, "token": token})
    form = {"csrf_token": csrf_of(page), "challenge": challenge, "token": token}
    assert client.post("/console/sign-in", data=form).status_code == 303


# ----------------------------------------------------------------- sessions, CSRF


def test_an_expired_session_is_refused(world: World) -> None:
    client = browser(world, world.operator)
    scope_page = client.get("/console/scopes/sc-acme")
    csrf = csrf_of(scope_page)
    world.clock.advance(world.rt.settings.console_session_s + 1)
    before = world.rt.audit.size()
    page = client.get("/console/scopes")
    assert page.status_code == 302 and "reason=expired" in page.headers["Location"]
    assert world.rt.audit.size() == before  # reached nothing: no entry
    resp = client.post(
        "/console/scopes/sc-acme/suspend", data={"csrf_token": csrf, "reason": "late"}
    )
    assert resp.status_code == 401 and "token_expired" in text(resp)
    assert world.rt.scopes.get("sc-acme").status.value == "active"
    e = last_entry(world.rt)
    assert (e["action"], e["decision"]) == ("auth.refused", "deny")


def test_a_post_without_the_csrf_token_changes_nothing(world: World) -> None:
    client = browser(world, world.operator)
    for data in ({}, {"csrf_token": "x" * 43}):
        resp = client.post("/console/scopes/sc-acme/suspend", data=data)
        assert resp.status_code == 403 and "forbidden" in text(resp)
        assert world.rt.scopes.get("sc-acme").status.value == "active"
        e = last_entry(world.rt)
        assert (e["actor"], e["claimed_actor"], e["decision"]) == ("anonymous", "op-city", "deny")
    # Another session's token is not this session's.
    other = browser(world, world.operator)
    stolen = csrf_of(other.get("/console/scopes/sc-acme"))
    mine = csrf_of(client.get("/console/scopes/sc-acme"))
    assert stolen != mine
    resp = client.post("/console/scopes/sc-acme/suspend", data={"csrf_token": stolen})
    assert resp.status_code == 403


def test_sign_out_ends_the_session(world: World) -> None:
    client = browser(world, world.regulator)
    csrf = csrf_of(client.get("/console/audit"))
    resp = client.post("/console/sign-out", data={"csrf_token": csrf})
    assert resp.status_code == 303
    e = last_entry(world.rt)
    assert (e["action"], e["decision"], e["actor"]) == ("console.sign_out", "allow", "reg-bureau")
    assert client.get("/console/audit").status_code == 302


def test_a_session_cookie_replayed_after_sign_out_is_dead(world: World) -> None:
    client = browser(world, world.regulator)
    jar = {c.key: c.value for c in client._cookies.values()}  # type: ignore[attr-defined]
    csrf = csrf_of(client.get("/console/audit"))
    client.post("/console/sign-out", data={"csrf_token": csrf})
    thief = world.app.test_client()
    thief.set_cookie("pds_console", jar["pds_console"], path="/console")
    assert thief.get("/console/audit").status_code == 302


# ----------------------------------------------------------------- roles and pages


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_every_page_renders_for_its_roles_and_is_recorded_once(world: World, lang: str) -> None:
    version = world.rt.models.get("registry-risk").versions[0].version
    review = f"/console/models/registry-risk/versions/{version}"
    for caller, pages in (
        (world.regulator, (*REGULATOR_PAGES, review)),
        (world.operator, (*OPERATOR_PAGES, review)),
        (world.enterprise, ENTERPRISE_PAGES),
    ):
        client = browser(world, caller, lang)
        for path in pages:
            before = world.rt.audit.size()
            resp = client.get(path)
            assert resp.status_code == 200, (caller.id, path, text(resp)[:500])
            body = text(resp)
            wanted = 'lang="zh-CN"' if lang == "zh-CN" else 'lang="en"'
            assert wanted in body
            if lang == "zh-CN":
                assert "监管与运营控制台" in body
            recorded = 0 if path.endswith("/new") else 1
            assert world.rt.audit.size() == before + recorded, path
            if recorded:
                e = last_entry(world.rt)
                assert e["actor"] == caller.id and e["console_session"], path
                assert resp.headers["X-Audit-Index"] == str(world.rt.audit.size() - 1)
            assert "default-src 'self'" in resp.headers["Content-Security-Policy"]


def test_the_language_switch_is_kept(world: World) -> None:
    client = browser(world, world.regulator, "en")
    assert "审计日志" in text(client.get("/console/audit?lang=zh_CN"))
    assert "审计日志" in text(client.get("/console/audit"))  # the cookie keeps it
    assert "Audit trail" in text(client.get("/console/audit?lang=en"))


def test_an_enterprise_cannot_reach_another_enterprises_pages(world: World) -> None:
    other = browser(world, world.other)
    other_index = world.rt.audit.size() - 1  # its sign-in
    client = browser(world, world.enterprise)
    assert client.get("/console/scopes/sc-other").status_code == 404
    assert client.get(f"/console/audit/{other_index}").status_code == 404
    assert client.get(f"/console/audit/{other_index}/receipt").status_code == 404
    for path in (
        "/console/integrity",
        "/console/products",
        "/console/principals",
        "/console/oversight",
        "/console/report",
        "/console/models",
        "/console/scopes/new",
    ):
        resp = client.get(path)
        assert resp.status_code == 403, path
        assert last_entry(world.rt)["decision"] == "deny"
    listing = text(client.get("/console/scopes"))
    assert "sc-acme" in listing and "sc-other" not in listing
    trail = text(client.get("/console/audit"))
    assert "ent-other" not in trail
    budgets = text(client.get("/console/budgets"))
    assert "sc-other" not in budgets
    del other


def test_operators_and_enterprises_cannot_use_regulator_pages(world: World) -> None:
    client = browser(world, world.operator)
    assert client.get("/console/integrity").status_code == 403
    assert client.get("/console/query").status_code == 403
    assert client.get("/console/nope").status_code == 404


# ----------------------------------------------------------------- the audit trail


def filtered(client: FlaskClient, **query: str) -> list[int]:
    body = text(client.get("/console/audit", query_string=query))
    assert "<table" in body, body[:500]
    return [int(i) for i in re.findall(r'href="/console/audit/(\d+)"', body)]


def test_the_trail_filters_and_pages(world: World) -> None:
    world.enterprise.post("/v1/queries", {"scope": "sc-acme", "sql": "SELECT x", "epsilon": 1})
    client = browser(world, world.regulator)
    everything = world.rt.audit.size()
    denies = filtered(client, decision="deny")
    assert denies and all(
        world.rt.audit.entries(cursor=i, limit=1).entries[0].entry["decision"] == "deny"
        for i in denies
    )
    assert filtered(client, actor="op-city") and all(
        world.rt.audit.entries(cursor=i, limit=1).entries[0].entry["actor"] == "op-city"
        for i in filtered(client, actor="op-city")
    )
    grants = filtered(client, action="scope.grant")
    assert len(grants) == 3  # sc-acme, sc-other, sc-acme-dev (the template)
    assert filtered(client, role="enterprise")
    assert filtered(client, scope="sc-other") and filtered(client, product="enterprise_registry")
    assert filtered(client, text="invalid_sql") == [
        i
        for i in denies
        if "invalid_sql"
        in (world.rt.audit.entries(cursor=i, limit=1).entries[0].entry["reason"] or "")
    ]
    assert filtered(client, **{"from": "2000-01-01", "to": "2000-01-02"}) == []
    # Paging: newest first, every entry once.
    seen: list[int] = []
    cursor: str | None = None
    while True:
        q = {"cursor": cursor} if cursor else {}
        body = text(client.get("/console/audit", query_string=q))
        seen += [int(i) for i in re.findall(r'href="/console/audit/(\d+)"', body)]
        m = re.search(r'id="older" href="[^"]*cursor=(\d+)', body)
        if not m:
            break
        cursor = m.group(1)
    assert seen == sorted(seen, reverse=True)
    assert set(range(everything)) <= set(seen)
    bad = client.get("/console/audit?from=yesterday")
    assert bad.status_code == 400 and "invalid_request" in text(bad)
    assert client.get("/console/audit?decision=maybe").status_code == 400


def test_the_entry_page_carries_what_the_browser_checks(world: World) -> None:
    from audit.merkle import leaf_hash, verify_inclusion

    client = browser(world, world.regulator)
    body = text(client.get("/console/audit/4"))
    data = json.loads(
        re.search(
            r'<script type="application/json" id="proof-data">(.*?)</script>', body, re.S
        ).group(1)  # type: ignore[union-attr]
    )
    import base64

    leaf = base64.b64decode(data["leaf"])
    assert leaf_hash(leaf) == base64.b64decode(data["leaf_hash"])
    verify_inclusion(
        4,
        data["tree_size"],
        leaf_hash(leaf),
        [base64.b64decode(p) for p in data["proof"]],
        base64.b64decode(data["root_hash"]),
    )
    assert data["note"].split("\n")[2] == data["root_hash"]


def test_integrity_alarm_after_tampering(world: World) -> None:
    client = browser(world, world.regulator)
    ok = text(client.get("/console/integrity"))
    assert 'data-ok="true"' in ok
    with world.rt.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE audit_entries SET leaf = :leaf WHERE idx = :i"),
            {"leaf": world.rt.audit.leaf(5).replace(b'"allow"', b'"deny!"'), "i": 5},
        )
    alarm = text(client.get("/console/integrity"))
    assert 'data-ok="false"' in alarm and "FAILED" in alarm


def test_receipts_of_ones_own_calls(world: World) -> None:
    answer = world.enterprise.post(
        "/v1/queries",
        {"scope": "sc-acme", "sql": "SELECT COUNT(*) AS n FROM enterprise_registry", "epsilon": 1},
    )
    index = int(answer.headers["X-Audit-Index"])
    client = browser(world, world.enterprise)
    resp = client.get(f"/console/audit/{index}/receipt")
    assert resp.status_code == 200
    assert "attachment" in resp.headers["Content-Disposition"]
    doc = resp.get_json()
    claims = check_receipt(
        doc["receipt"],
        world.rt.keys.jwks(),
        leaf=world.rt.audit.leaf(index),
        response=answer.get_json(),
    )
    assert claims["audit_index"] == index
    original = check_receipt(answer.get_json()["receipt"], world.rt.keys.jwks())
    for k in ("leaf_hash", "request_hash", "result_hash"):
        assert claims[k] == original[k]


# ----------------------------------------------------------------- forms


def grant_form(**overrides: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "id": "sc-form",
        "enterprise": "ent-acme",
        "product": "enterprise_registry",
        "purpose": "granted through the console",
        "columns": ["district", "registered_capital"],
        "epsilon": "5",
        "max_epsilon_per_query": "1",
        "rate_per_minute": "1000",
        "daily_quota": "100000",
        "valid_from": "2026-01-01T00:00",
        "valid_until": "2099-01-01T00:00",
    }
    form.update(overrides)
    return form


def test_granting_through_the_form_is_the_apis_grant(world: World) -> None:
    client = browser(world, world.operator)
    csrf = csrf_of(client.get("/console/scopes/new"))
    resp = client.post("/console/scopes", data={**grant_form(), "csrf_token": csrf})
    assert resp.status_code == 303, text(resp)[:800]
    assert resp.headers["Location"].startswith("/console/scopes/sc-form")
    form_scope = world.rt.scopes.get("sc-form")
    e = last_entry(world.rt)
    assert (e["action"], e["decision"], e["actor"]) == ("scope.grant", "allow", "op-city")
    assert e["purpose"] == "granted through the console" and e["console_session"]
    body = dict(grant_body("sc-api"), purpose="granted through the console")
    assert world.operator.post("/v1/scopes", body).status_code == 201
    api_scope = world.rt.scopes.get("sc-api")
    for attr in (
        "purpose",
        "aggregate_columns",
        "epsilon_nano",
        "max_epsilon_per_query_nano",
        "rate_per_minute",
        "daily_quota",
        "valid_from",
        "valid_until",
    ):
        assert getattr(form_scope, attr) == getattr(api_scope, attr), attr


BAD_GRANTS: list[tuple[dict[str, Any], str]] = [
    ({"epsilon": "abc"}, "epsilon"),
    ({"epsilon": "-1"}, "epsilon"),
    ({"rate_per_minute": "fast"}, "rate_per_minute"),
    ({"purpose": "   "}, "purpose"),
    ({"valid_until": "2020-01-01T00:00"}, "valid_until"),
    ({"max_epsilon_per_query": "9"}, "max_epsilon_per_query"),
    ({"columns": [], "verify": []}, "operations"),
    ({"id": "bad id!"}, "id"),
    ({"columns": ["no_such_column"]}, "operations"),
    ({"enterprise": "ent-nobody"}, "enterprise"),
]


def test_a_bad_grant_form_is_refused_like_the_api(world: World) -> None:
    client = browser(world, world.operator)
    for overrides, field in BAD_GRANTS:
        csrf = csrf_of(client.get("/console/scopes/new"))
        data = {**grant_form(**overrides), "csrf_token": csrf}
        resp = client.post("/console/scopes", data=data)
        assert resp.status_code == 400, (overrides, text(resp)[:500])
        assert 'id="form-errors"' in text(resp) and field in text(resp), overrides
        e = last_entry(world.rt)
        assert (e["action"], e["decision"]) == ("scope.grant", "deny")
        assert e["reason"].startswith("invalid_request")
        with pytest.raises(Exception, match="no scope"):
            world.rt.scopes.get("sc-form")


def test_a_taken_scope_id_is_a_conflict(world: World) -> None:
    client = browser(world, world.operator)
    csrf = csrf_of(client.get("/console/scopes/new"))
    resp = client.post("/console/scopes", data={**grant_form(id="sc-acme"), "csrf_token": csrf})
    assert resp.status_code == 409 and "conflict" in text(resp)


def test_suspend_resume_revoke_through_the_form(world: World) -> None:
    client = browser(world, world.operator)
    for step, status in (("suspend", "suspended"), ("resume", "active"), ("revoke", "revoked")):
        csrf = csrf_of(client.get("/console/scopes/sc-acme"))
        resp = client.post(
            f"/console/scopes/sc-acme/{step}", data={"csrf_token": csrf, "reason": f"test {step}"}
        )
        assert resp.status_code == 303, text(resp)[:300]
        assert world.rt.scopes.get("sc-acme").status.value == status
        assert last_entry(world.rt)["action"] == f"scope.{step}"
    csrf = csrf_of(client.get("/console/audit"))
    again = client.post("/console/scopes/sc-acme/resume", data={"csrf_token": csrf})
    assert again.status_code == 409
    assert (
        client.post("/console/scopes/sc-acme/delete", data={"csrf_token": csrf}).status_code == 404
    )
    assert (
        client.post("/console/scopes/sc-none/suspend", data={"csrf_token": csrf}).status_code == 404
    )
    # An enterprise may not change a scope, even its own.
    ent = browser(world, world.enterprise)
    csrf = csrf_of(ent.get("/console/scopes/sc-acme"))
    assert ent.post("/console/scopes/sc-acme/suspend", data={"csrf_token": csrf}).status_code == 403


def test_the_query_page_previews_then_runs(world: World) -> None:
    client = browser(world, world.enterprise)
    csrf = csrf_of(client.get("/console/query"))
    sql = "SELECT district, COUNT(*) AS n FROM enterprise_registry GROUP BY district"
    form = {"csrf_token": csrf, "scope": "sc-acme", "sql": sql, "epsilon": "0.5"}
    preview = client.post("/console/query", data={**form, "do": "preview"})
    assert preview.status_code == 200 and 'id="preview-result"' in text(preview)
    assert "±" in text(preview)
    assert world.rt.scopes.get("sc-acme").budget.spent == 0
    assert last_entry(world.rt)["action"] == "query.preview"
    run = client.post("/console/query", data={**form, "do": "run"})
    assert run.status_code == 200 and 'id="answer"' in text(run)
    assert text(run).count('class="ci"') >= 3  # a half-width beside each count
    assert str(world.rt.scopes.get("sc-acme").budget.spent) == "0.5"
    e = last_entry(world.rt)
    assert (e["action"], e["epsilon"], e["actor"]) == ("query.aggregate", "0.5", "ent-acme")
    bad = client.post("/console/query", data={**form, "sql": "DROP TABLE x", "do": "run"})
    assert bad.status_code == 400 and 'id="query-error"' in text(bad)
    other = client.post("/console/query", data={**form, "scope": "sc-other", "do": "run"})
    assert other.status_code == 404
    assert world.rt.scopes.get("sc-other").budget.spent == 0


def test_an_oversized_form_is_refused_and_recorded(world: World) -> None:
    client = browser(world, world.operator)
    csrf = csrf_of(client.get("/console/scopes/sc-acme"))
    before = world.rt.audit.size()
    resp = client.post(
        "/console/scopes/sc-acme/suspend", data={"csrf_token": csrf, "reason": "x" * 300_000}
    )
    assert resp.status_code == 413 and "too_large" in text(resp)
    assert world.rt.audit.size() == before + 1
    assert world.rt.scopes.get("sc-acme").status.value == "active"
    nul = client.post(
        "/console/scopes/sc-acme/suspend", data={"csrf_token": csrf, "reason": "\x00"}
    )
    assert nul.status_code == 400
    assert world.rt.scopes.get("sc-acme").status.value == "active"
    assert client.get("/console/audit?actor=%00").status_code == 400


def test_a_token_pasted_from_sandbox_console_sign(world: World, tmp_path: Any) -> None:
    from click.testing import CliRunner

    from sandbox.cli import main

    key = tmp_path / "reg.key"
    key.write_bytes(world.regulator.private_pem)
    client = world.app.test_client()
    page = client.get("/console/sign-in")
    challenge = re.search(r'name="challenge" value="([^"]+)"', text(page))
    assert challenge, text(page)[:500]
    result = CliRunner().invoke(
        main,
        [
            "console",
            "sign",
            "--id",
            "reg-bureau",
            "--key",
            str(key),
            "--challenge",
            challenge.group(1),
        ],
    )
    assert result.exit_code == 0, result.output
    form = {
        "csrf_token": csrf_of(page),
        "challenge": challenge.group(1),
        "token": result.output.strip(),
    }
    assert client.post("/console/sign-in", data=form).status_code == 303
    assert client.get("/console/integrity").status_code == 200


def test_out_of_range_indexes_and_dates_are_clear_refusals(world: World) -> None:
    """Numbers beyond what the log or a date can hold are 4xx pages, never a 500."""
    client = browser(world, world.regulator)
    for path, code in (
        ("/console/audit/99999999999999999999", 404),
        ("/console/audit/99999999999999999999/receipt", 404),
        (f"/console/audit/{2**53 - 1}", 404),
        ("/console/audit?to=9999-12-31", 400),
        ("/console/audit?from=0001-01-01", 400),
        ("/console/audit?cursor=999999999999999999", 200),
    ):
        resp = client.get(path)
        assert resp.status_code == code, (path, resp.get_data(as_text=True)[:300])
