"""The console through Flask's test client: sign-in, sessions, CSRF, roles, pages in
both languages, forms through the API's actions, one audit entry per call."""

from __future__ import annotations

from tests.sandbox.console.conftest import World, browser


def test_smoke(world: World) -> None:
    c = browser(world, world.regulator)
    for path in ("/console/audit", "/console/integrity", "/console/budgets", "/console/oversight",
                 "/console/models", "/console/report", "/console/audit/3", "/console/usage"):
        r = c.get(path)
        assert r.status_code == 200, (path, r.get_data(as_text=True)[:2000])
    c = browser(world, world.operator, "zh-CN")
    for path in ("/console/scopes", "/console/products", "/console/principals", "/console/scopes/new",
                 "/console/scopes/sc-acme", "/console/usage"):
        r = c.get(path)
        assert r.status_code == 200, (path, r.get_data(as_text=True)[:2000])
    c = browser(world, world.enterprise)
    for path in ("/console/scopes", "/console/query", "/console/audit", "/console/budgets"):
        r = c.get(path)
        assert r.status_code == 200, (path, r.get_data(as_text=True)[:2000])
