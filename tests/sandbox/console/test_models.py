"""Model products and synthetic data on the console (DESIGN §11, §12): filing and
withdrawing through the API's own action with the API's roles, refusals and entries;
the review page; the operator's products page; the enterprise's synthetic-data preview,
release and CSV; bad input as clear error pages."""

from __future__ import annotations

import csv
import html
import io
import re
from typing import Any

import pytest
from flask.testing import FlaskClient

from sandbox.models.products import version_of
from tests.sandbox.conftest import REGISTRY_ROWS
from tests.sandbox.console.conftest import RISK_MODEL, World, browser, csrf_of
from tests.sandbox.console.test_console import last_entry, text

MP = "registry-risk"


def version(w: World, seq: int = 1) -> str:
    return w.rt.models.get(MP).versions[seq - 1].version


def status(w: World, v: str) -> str:
    return w.rt.models.get(MP).version(v).status.value


def entry_at(w: World, index: int) -> dict[str, Any]:
    page = w.rt.audit.entries(cursor=index, limit=1, descending=True)
    return page.entries[0].entry


def version_page(v: str) -> str:
    return f"/console/models/{MP}/versions/{v}"


def post(client: FlaskClient, path: str, **form: str) -> Any:
    csrf = csrf_of(client.get("/console/models"))
    return client.post(path, data={"csrf_token": csrf, **form})


def second_version(w: World) -> str:
    """A second draft (a changed definition) defined through the API."""
    resp = w.operator.post("/v1/model-products", {**RISK_MODEL, "description": "version two"})
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["version"])


# ----------------------------------------------------------------- filing


def test_a_regulator_reviews_files_and_withdraws_like_the_api(world: World) -> None:
    w = world
    v1, v2 = version(w), second_version(w)
    client = browser(w, w.regulator)
    listing = client.get("/console/models")
    assert listing.status_code == 200
    body = text(listing)
    assert f'data-version="{v1}" data-status="draft"' in body
    assert f'data-version="{v2}" data-status="draft"' in body
    assert last_entry(w.rt)["action"] == "model_product.list"

    # Review: the exact definition, its hash recomputed, the forms the role allows.
    review = client.get(version_page(v1))
    assert review.status_code == 200
    page = html.unescape(text(review))
    assert "经营风险等级 (console tests)" in page and '"registered_capital"' in page
    assert v1 in page and 'id="hash-check" data-ok="true"' in page
    assert 'id="file"' in page and 'id="withdraw"' in page
    e = last_entry(w.rt)
    assert (e["action"], e["target"], e["model_version"]) == (
        "model_product.read",
        {"model_product": MP, "product": "enterprise_registry"},
        v1,
    )
    assert version_of(w.rt.models.get(MP).version(v1).definition) == v1

    # File from the console, and the other version through the API: the same entries.
    resp = post(client, f"{version_page(v1)}/file", note="备案 console")
    assert resp.status_code == 303 and resp.headers["Location"].endswith("done=file")
    assert status(w, v1) == "filed"
    by_console = last_entry(w.rt)
    api = w.regulator.post(f"/v1/model-products/{MP}/versions/{v2}/file", {"note": "备案 api"})
    assert api.status_code == 200, api.get_json()
    by_api = last_entry(w.rt)
    for e, v, note in ((by_console, v1, "备案 console"), (by_api, v2, "备案 api")):
        assert (e["action"], e["decision"], e["actor"], e["role"]) == (
            "model_product.file",
            "allow",
            "reg-bureau",
            "regulator",
        )
        assert e["target"] == {"model_product": MP, "product": "enterprise_registry"}
        assert (e["model_version"], e["note"], e["status"]) == (v, note, 200)
    assert by_console["console_session"] and "console_session" not in by_api
    assert set(by_console) - {"console_session"} == set(by_api)

    # The trail shows both filings.
    trail = text(client.get("/console/audit", query_string={"action": "model_product.file"}))
    assert len(re.findall(r'href="/console/audit/\d+"', trail)) == 2

    after = text(client.get(version_page(v1)))
    assert 'data-status="filed"' in after and 'id="file"' not in after
    assert "备案 console" in after and 'id="withdraw"' in after

    # Withdraw from the console; the API's current version is then v2.
    resp = post(client, f"{version_page(v1)}/withdraw", note="撤回")
    assert resp.status_code == 303 and status(w, v1) == "withdrawn"
    e = last_entry(w.rt)
    assert (e["action"], e["decision"], e["model_version"], e["note"]) == (
        "model_product.withdraw",
        "allow",
        v1,
        "撤回",
    )
    assert w.rt.models.get(MP).current is not None
    assert w.rt.models.get(MP).current.version == v2  # type: ignore[union-attr]
    history = text(client.get(version_page(v1)))
    assert 'data-status="withdrawn"' in history and 'id="withdraw"' not in history
    # Final: filing or withdrawing it again is a conflict, refused and recorded.
    for event in ("file", "withdraw"):
        again = post(client, f"{version_page(v1)}/{event}")
        assert again.status_code == 409 and "conflict" in text(again)
        e = last_entry(w.rt)
        assert (e["action"], e["decision"]) == (f"model_product.{event}", "deny")
    assert status(w, v1) == "withdrawn"


def test_an_operator_cannot_file_but_may_withdraw(world: World) -> None:
    w = world
    v1 = version(w)
    client = browser(w, w.operator)
    page = text(client.get(version_page(v1)))
    assert 'id="file"' not in page and 'id="withdraw"' in page
    refused = post(client, f"{version_page(v1)}/file")
    assert refused.status_code == 403 and "forbidden" in text(refused)
    assert status(w, v1) == "draft"
    by_console = last_entry(w.rt)
    api = w.operator.post(f"/v1/model-products/{MP}/versions/{v1}/file", {})
    assert api.status_code == 403
    by_api = last_entry(w.rt)
    for e in (by_console, by_api):
        assert (e["action"], e["decision"], e["actor"]) == ("model_product.file", "deny", "op-city")
        assert e["reason"].startswith("forbidden:")
    ok = post(client, f"{version_page(v1)}/withdraw", note="superseded")
    assert ok.status_code == 303 and status(w, v1) == "withdrawn"
    e = last_entry(w.rt)
    assert (e["action"], e["decision"], e["actor"]) == (
        "model_product.withdraw",
        "allow",
        "op-city",
    )
    # Enterprises see neither the pages nor the forms.
    ent = browser(w, w.enterprise)
    assert ent.get("/console/models").status_code == 403
    assert ent.get(version_page(v1)).status_code == 403
    csrf = csrf_of(ent.get("/console/scopes"))
    assert ent.post(f"{version_page(v1)}/withdraw", data={"csrf_token": csrf}).status_code == 403
    assert last_entry(w.rt)["action"] == "model_product.withdraw"


def test_filing_without_the_csrf_token_is_refused(world: World) -> None:
    w = world
    v1 = version(w)
    client = browser(w, w.regulator)
    for form in ({}, {"csrf_token": "forged"}):
        resp = client.post(f"{version_page(v1)}/file", data=form)
        assert resp.status_code == 403 and "forbidden" in text(resp)
        e = last_entry(w.rt)
        assert (e["action"], e["decision"], e["actor"], e["claimed_actor"]) == (
            "model_product.file",
            "deny",
            "anonymous",
            "reg-bureau",
        )
    assert status(w, v1) == "draft"


def test_bad_model_requests_are_clear_error_pages(world: World) -> None:
    w = world
    v1 = version(w)
    client = browser(w, w.regulator)
    for path, code in (
        (f"/console/models/nope/versions/{v1}", 404),
        (version_page("0" * 64), 404),
        # A NUL in the path is refused at the edge, as by the API, before any store
        # sees it (PostgreSQL cannot hold one).
        (version_page("%E2%80%AE%00"), 400),
        ("/console/models/%00/versions/x", 400),
    ):
        resp = client.get(path)
        assert resp.status_code == code, (path, text(resp)[:300])
        assert 'role="alert"' in text(resp)
        assert last_entry(w.rt)["decision"] == "deny"
    for path, form, code in (
        (f"{version_page('0' * 64)}/file", {}, 404),
        (f"/console/models/nope/versions/{v1}/withdraw", {}, 404),
        (f"{version_page(v1)}/file", {"note": "x" * 2001}, 400),
        (f"{version_page(v1)}/file", {"note": "\x00"}, 400),
        (f"/console/models/%00/versions/{v1}/withdraw", {}, 400),
    ):
        resp = post(client, path, **form)
        assert resp.status_code == code, (path, text(resp)[:300])
        assert 'role="alert"' in text(resp)
        assert last_entry(w.rt)["decision"] == "deny"
    unknown = post(client, f"{version_page(v1)}/publish")  # no such console path
    assert unknown.status_code == 404 and 'role="alert"' in text(unknown)
    assert status(w, v1) == "draft"


def test_the_operators_products_page_lists_model_products(world: World) -> None:
    w = world
    v1 = version(w)
    client = browser(w, w.operator)
    body = text(client.get("/console/products"))
    assert MP in body and f'href="{version_page(v1)}"' in body
    assert '<li data-status="draft">' in body
    assert last_entry(w.rt)["action"] == "product.list"


# ----------------------------------------------------------------- synthetic data


def synthetic_form(csrf: str, **overrides: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "csrf_token": csrf,
        "scope": "sc-acme-dev",
        "columns": ["district", "status"],
        "rows": "50",
        "epsilon": "0.5",
        "method": "mst",
    }
    form.update(overrides)
    return form


def spent(w: World, scope: str = "sc-acme-dev") -> str:
    return str(w.rt.scopes.get(scope).budget.spent)


def test_an_enterprise_previews_then_generates_synthetic_rows(world: World) -> None:
    w = world
    client = browser(w, w.enterprise)
    page = client.get("/console/synthetic")
    assert page.status_code == 200 and 'id="synthetic-form"' in text(page)
    assert 'value="registered_capital"' in text(page)
    assert last_entry(w.rt)["action"] == "scope.list"
    csrf = csrf_of(page)
    preview = client.post("/console/synthetic", data=synthetic_form(csrf, do="preview"))
    assert preview.status_code == 200 and 'id="preview-result"' in text(preview)
    assert "±" in text(preview) and "one_way_marginal_counts" in text(preview)
    assert spent(w) == "0"
    assert last_entry(w.rt)["action"] == "synthetic.preview"

    run = client.post("/console/synthetic", data=synthetic_form(csrf, do="run"))
    assert run.status_code == 200, text(run)[:500]
    body = text(run)
    assert 'id="synthetic-result"' in body and 'id="download-csv"' in body
    rows = re.search(r'<table class="data" id="rows">.*?</table>', body, re.S)
    assert rows is not None and rows.group(0).count("<tr>") == 51  # the header and 50 rows
    assert spent(w) == "0.5"
    # The form's scope line shows the budget after this release, as the result does.
    remaining = w.rt.scopes.get("sc-acme-dev").to_dict()["budget"]["remaining"]
    assert f"remaining {remaining}," in body
    e = last_entry(w.rt)
    assert (e["action"], e["epsilon"], e["actor"], e["decision"]) == (
        "synthetic",
        "0.5",
        "ent-acme",
        "allow",
    )
    assert e["target"]["scope"] == "sc-acme-dev" and e["console_session"]

    # The CSV download is the same release again: reused, nothing charged.
    got = client.post("/console/synthetic", data=synthetic_form(csrf, do="csv"))
    assert got.status_code == 200 and got.mimetype == "text/csv"
    assert got.headers["Content-Disposition"].startswith("attachment;")
    table = list(csv.reader(io.StringIO(got.get_data(as_text=True))))
    assert table[0] == ["district", "status"] and len(table) == 51
    assert {r[0] for r in table[1:]} <= {"A", "B", "C", ""}
    assert spent(w) == "0.5"
    e = last_entry(w.rt)
    assert (e["action"], e["epsilon"], e.get("reused")) == ("synthetic", "0", True)
    # Once a new data version is loaded, the stored release no longer answers this
    # request: the download is refused instead of fitting new rows and charging again.
    reload = w.operator.call(
        "PUT",
        "/v1/products/enterprise_registry/data",
        body=REGISTRY_ROWS.encode(),
        content_type="text/csv",
    )
    assert reload.status_code == 200, reload.get_json()
    gone = client.post("/console/synthetic", data=synthetic_form(csrf, do="csv"))
    assert gone.status_code == 409 and 'role="alert"' in text(gone)
    assert spent(w) == "0.5"
    e = last_entry(w.rt)
    assert (e["action"], e["decision"], e["epsilon"]) == ("synthetic", "deny", "0")


@pytest.mark.parametrize(
    ("overrides", "code", "status_code"),
    [
        ({"rows": "abc"}, "invalid_request", 400),
        ({"rows": "²"}, "invalid_request", 400),
        ({"rows": "0"}, "invalid_request", 400),
        ({"rows": "99999999999"}, "invalid_request", 400),
        ({"columns": []}, "invalid_request", 400),
        ({"columns": ["district", "district"]}, "invalid_request", 400),
        ({"epsilon": "lots"}, "invalid_request", 400),
        ({"epsilon": "5"}, "invalid_request", 400),  # over the scope's per-release cap
        ({"method": "gan"}, "invalid_request", 400),
        ({"columns": ["name"]}, "column_not_allowed", 400),
        ({"scope": "sc-acme"}, "operation_not_allowed", 403),  # no synthetic granted
        ({"scope": "sc-other"}, "not_found", 404),  # another enterprise's
        ({"scope": ""}, "invalid_request", 400),
    ],
)
def test_a_bad_synthetic_request_is_a_clear_refusal(
    world: World, overrides: dict[str, Any], code: str, status_code: int
) -> None:
    w = world
    client = browser(w, w.enterprise)
    csrf = csrf_of(client.get("/console/synthetic"))
    for do in ("preview", "run"):
        resp = client.post("/console/synthetic", data=synthetic_form(csrf, do=do, **overrides))
        assert resp.status_code == status_code, (do, text(resp)[:500])
        assert 'id="synthetic-error"' in text(resp) and code in text(resp)
        e = last_entry(w.rt)
        action = "synthetic" if do == "run" else "synthetic.preview"
        assert (e["action"], e["decision"], e["actor"]) == (action, "deny", "ent-acme")
    assert spent(w) == "0" and spent(w, "sc-other") == "0"


def test_synthetic_data_needs_a_scope_granting_it_and_the_csrf_token(world: World) -> None:
    w = world
    other = browser(w, w.other)
    assert 'id="no-synthetic"' in text(other.get("/console/synthetic"))
    client = browser(w, w.enterprise)
    resp = client.post("/console/synthetic", data=synthetic_form("forged", do="run"))
    assert resp.status_code == 403 and "forbidden" in text(resp)
    e = last_entry(w.rt)
    assert (e["action"], e["actor"], e["claimed_actor"]) == ("synthetic", "anonymous", "ent-acme")
    assert spent(w) == "0"
    operator = browser(w, w.operator)
    assert operator.get("/console/synthetic").status_code == 403
