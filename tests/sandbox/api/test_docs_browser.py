"""The API docs page renders in a real browser (Debian's chromium, driven by Playwright;
never a downloaded browser)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.sandbox.servers import running

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_docs_page_lists_the_api(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with running(tmp_path / "var", None, workers=1) as server, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page()
            page.goto(server.url + "/v1/docs")
            page.wait_for_selector(".op", timeout=15_000)
            text = page.inner_text("#ops")
            for path in (
                "/v1/queries",
                "/v1/verifications/{vp_id}",
                "/v1/audit/checkpoint",
                "/v1/scopes",
                "/v1/products/{product_id}/data",
            ):
                assert path in text, path
            assert "Public-data authorised-operation sandbox" in page.inner_text("#title")
        finally:
            browser.close()
