"""The console in a real browser (Debian's chromium through Playwright, never a
downloaded browser) against a real server: sign-in per role with the link ``sandbox
console login`` prints, each role's main pages in both languages, filtering the audit
trail, an inclusion proof checked by the page's own WebCrypto code, filing a model
version, granting and revoking a scope through the form, CSRF and expired-session
refusals, an enterprise kept out of another's pages, an integrity alarm after the store
is tampered with, and accessibility basics (labels, headings, keyboard reachability) on
every page seen."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from policies.principals import Role
from sandbox.app import create_app
from sandbox.cli import main
from sandbox.client import Client
from sandbox.runtime import Runtime
from sandbox.settings import Settings
from tests.sandbox.conftest import REGISTRY_MANIFEST, REGISTRY_ROWS, make_caller
from tests.sandbox.console.conftest import RISK_MODEL, grant_body
from tests.sandbox.servers import Server, running

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# In the page: every form control has a label, there is one h1 and no heading level is
# skipped, and every link and control can be reached with the Tab key.
A11Y = """() => {
  const problems = [];
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label')) {
      problems.push('unlabelled ' + el.outerHTML.slice(0, 80));
    }
  }
  const hs = [...document.querySelectorAll('h1, h2, h3, h4')].map(h => +h.tagName[1]);
  if (hs.filter(h => h === 1).length !== 1) problems.push('h1 count ' + hs.join(','));
  for (let i = 1; i < hs.length; i++) {
    if (hs[i] > hs[i - 1] + 1) problems.push('heading skip ' + hs.join(','));
  }
  const controls = 'a[href], button, input:not([type=hidden]), select, textarea';
  for (const el of document.querySelectorAll(controls)) {
    if (el.tabIndex < 0 || el.disabled) problems.push('unfocusable ' + el.outerHTML.slice(0, 80));
  }
  return problems;
}"""


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[Server, Path, dict[str, bytes]]]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    data = tmp_path / "var"
    rt = Runtime.open(Settings(data_dir=data, checkpoint_interval_s=0))
    app = create_app(runtime=rt)
    callers = {
        "op-city": make_caller(app, rt, "op-city", Role.OPERATOR),
        "ent-acme": make_caller(app, rt, "ent-acme", Role.ENTERPRISE),
        "ent-other": make_caller(app, rt, "ent-other", Role.ENTERPRISE),
        "reg-bureau": make_caller(app, rt, "reg-bureau", Role.REGULATOR),
    }
    op = callers["op-city"]
    assert op.post("/v1/products", REGISTRY_MANIFEST).status_code == 201
    up = op.call(
        "PUT",
        "/v1/products/enterprise_registry/data",
        body=REGISTRY_ROWS.encode(),
        content_type="text/csv",
    )
    assert up.status_code == 200
    assert op.post("/v1/scopes", grant_body("sc-acme")).status_code == 201
    assert op.post("/v1/scopes", grant_body("sc-other", "ent-other")).status_code == 201
    assert op.post("/v1/model-products", RISK_MODEL).status_code == 201  # a draft
    ent = callers["ent-acme"]
    sql = "SELECT district, COUNT(*) AS n FROM enterprise_registry GROUP BY district"
    assert ent.post("/v1/queries", {"scope": "sc-acme", "sql": sql, "epsilon": 0.5}).status_code
    ent.post("/v1/queries", {"scope": "sc-acme", "sql": "SELECT nope", "epsilon": 0.5})
    rt.close()
    keys = {pid: c.private_pem for pid, c in callers.items()}
    with running(data, None, workers=1) as server:
        yield server, data, keys


def sign_in(page: Any, server: Server, pid: str, keys: dict[str, bytes], tmp: Path) -> None:
    if pid.startswith("reg-"):  # the command itself
        key = tmp / f"{pid}.key"
        key.write_bytes(keys[pid])
        result = CliRunner().invoke(
            main, ["console", "login", "--url", server.url, "--id", pid, "--key", str(key)]
        )
        assert result.exit_code == 0, result.output
        link = result.output.strip()
    else:
        with Client(server.url, pid, keys[pid]) as client:
            link = client.console_link()  # what `sandbox console login` prints
    assert link.startswith(f"{server.url}/console/sign-in?challenge=")
    page.goto(link)
    page.click("#confirm")
    page.wait_for_url("**/console/**")
    assert pid in page.inner_text("header")


def visit(page: Any, url: str, *, heading: str | None = None) -> None:
    resp = page.goto(url)
    assert resp.status == 200, (url, resp.status)
    if heading is not None:
        assert heading in page.inner_text("h1"), (url, page.inner_text("h1"))
    problems = page.evaluate(A11Y)
    assert problems == [], (url, problems)


def tab_reaches(page: Any, selector: str, limit: int = 80) -> bool:
    """Whether pressing Tab from the top of the page focuses ``selector``."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    target = page.query_selector(selector)
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(t) => document.activeElement === t", target):
            return True
    return False


def test_the_console_in_a_browser(
    deployment: tuple[Server, Path, dict[str, bytes]], tmp_path: Path
) -> None:
    server, data, keys = deployment
    sync_api = pytest.importorskip("playwright.sync_api")
    url = server.url
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            # ---------------------------------------------------------- regulator
            reg = browser.new_context(locale="zh-CN").new_page()
            sign_in(reg, server, "reg-bureau", keys, tmp_path)
            visit(reg, f"{url}/console/audit", heading="审计日志")  # Accept-Language zh-CN
            visit(reg, f"{url}/console/audit?lang=en", heading="Audit trail")
            for path, zh, en in (
                ("/console/integrity", "日志完整性", "Log integrity"),
                ("/console/budgets", "隐私预算消耗", "Budget consumption"),
                ("/console/oversight", "拒绝记录", "Refusals"),
                ("/console/report", "公开披露报告", "disclosure report"),
                ("/console/models", "模型备案", "Model filing"),
            ):
                visit(reg, f"{url}{path}?lang=zh_CN", heading=zh)
                visit(reg, f"{url}{path}?lang=en", heading=en)
            # Filing the draft model version through the review page's form.
            reg.click("#mp-registry-risk a[aria-label]")
            reg.wait_for_selector("#version-status[data-status=draft]")
            assert reg.get_attribute("#hash-check", "data-ok") == "true"
            assert reg.evaluate(A11Y) == []
            assert tab_reaches(reg, "#file", limit=120)
            reg.fill("#note", "filed in a browser test")
            reg.click("#file")
            reg.wait_for_url("**done=file**")
            assert reg.get_attribute("#version-status", "data-status") == "filed"
            assert "filed in a browser test" in reg.inner_text("#history")
            visit(reg, f"{url}/console/budgets")
            assert reg.query_selector("svg.chart")
            assert tab_reaches(reg, "nav.main-nav a >> nth=-1")
            # Filtering the trail through its form.
            visit(reg, f"{url}/console/audit")
            assert tab_reaches(reg, "#apply-filters")
            reg.select_option("#f-decision", "deny")
            reg.fill("#f-text", "FROM is missing")
            reg.click("#apply-filters")
            reg.wait_for_url("**decision=deny**")
            rows = reg.query_selector_all("table.data tbody tr")
            assert len(rows) == 1 and "FROM is missing" in rows[0].inner_text()
            # An inclusion proof checked by the page itself.
            visit(reg, f"{url}/console/audit/4")
            status = reg.wait_for_selector("#proof-status[data-ok]")
            assert status.get_attribute("data-ok") == "true", reg.inner_text("#proof-steps")
            assert status.get_attribute("data-signature") == "browser"
            assert len(reg.query_selector_all("#proof-steps li.ok")) == 4

            # ---------------------------------------------------------- enterprise
            ent = browser.new_context(locale="en").new_page()
            sign_in(ent, server, "ent-acme", keys, tmp_path)
            visit(ent, f"{url}/console/scopes", heading="My scopes")
            visit(ent, f"{url}/console/scopes?lang=zh_CN", heading="我的授权范围")
            visit(ent, f"{url}/console/audit?lang=en", heading="My calls")
            assert ent.query_selector("a[download]")  # receipts of its own calls
            visit(ent, f"{url}/console/synthetic?lang=zh_CN")
            visit(ent, f"{url}/console/synthetic?lang=en", heading="Synthetic data")
            visit(ent, f"{url}/console/query", heading="differential privacy")
            ent.fill(
                "#q-sql",
                "SELECT district, COUNT(*) AS n FROM enterprise_registry GROUP BY district",
            )
            ent.click("#preview")
            ent.wait_for_selector("#preview-result")
            assert "±" in ent.inner_text("#preview-result")
            other = ent.goto(f"{url}/console/scopes/sc-other")
            assert other.status == 404
            assert ent.goto(f"{url}/console/integrity").status == 403

            # ---------------------------------------------------------- operator
            op = browser.new_context(locale="en").new_page()
            sign_in(op, server, "op-city", keys, tmp_path)
            visit(op, f"{url}/console/scopes", heading="Authorisation scopes")
            for path in ("/console/products", "/console/principals", "/console/usage"):
                visit(op, f"{url}{path}?lang=zh_CN")
                visit(op, f"{url}{path}?lang=en")
            visit(op, f"{url}/console/scopes/new", heading="Grant a scope")
            assert tab_reaches(op, "#grant-submit", limit=120)
            op.fill("#g-id", "sc-browser")
            op.select_option("#g-enterprise", "ent-acme")
            op.select_option("#g-product", "enterprise_registry")
            op.fill("#g-purpose", "granted in a browser test")
            op.check("input[name=columns][value=district]")
            op.fill("#g-epsilon", "abc")  # refused like the API: the form comes back
            op.click("#grant-submit")
            assert op.wait_for_selector("#form-errors")
            assert "epsilon" in op.inner_text("#form-errors")
            op.fill("#g-epsilon", "2")
            op.click("#grant-submit")
            op.wait_for_url("**/console/scopes/sc-browser**")
            assert op.get_attribute("#scope-status", "data-status") == "active"
            op.fill("#reason", "end of the test")
            op.click("#revoke")
            op.wait_for_url("**done=revoke**")
            assert op.get_attribute("#scope-status", "data-status") == "revoked"
            # A form post with a forged CSRF token is refused.
            forged = op.request.post(
                f"{url}/console/scopes/sc-acme/suspend", form={"csrf_token": "forged"}
            )
            assert forged.status == 403 and "forbidden" in forged.text()
            # An expired session: pages send the browser back to sign in.
            engine = sa.create_engine(f"sqlite:///{data / 'control.sqlite3'}")
            with engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "UPDATE console_sessions SET expires_at = '2000-01-01 00:00:00' "
                        "WHERE principal = 'op-city'"
                    )
                )
            op.goto(f"{url}/console/scopes")
            assert "/console/sign-in" in op.url and "reason=expired" in op.url
            assert op.query_selector(".notice")
            expired = op.request.post(
                f"{url}/console/scopes/sc-acme/suspend", form={"csrf_token": "x"}
            )
            assert expired.status == 401 and "token_expired" in expired.text()

            # ---------------------------------------------------------- tampering
            with engine.begin() as conn:
                leaf = conn.execute(
                    sa.text("SELECT leaf FROM audit_entries WHERE idx = 4")
                ).scalar_one()
                conn.execute(
                    sa.text("UPDATE audit_entries SET leaf = :leaf WHERE idx = 4"),
                    {"leaf": bytes(leaf).replace(b'"allow"', b'"deny!"')},
                )
            engine.dispose()
            reg.goto(f"{url}/console/integrity?lang=en")
            assert reg.get_attribute("#integrity-status", "data-ok") == "false"
            assert "Integrity alarm" in reg.inner_text("#integrity-status")
            reg.goto(f"{url}/console/audit/4")
            status = reg.wait_for_selector("#proof-status[data-ok]")
            assert status.get_attribute("data-ok") == "false"
        finally:
            browser.close()
