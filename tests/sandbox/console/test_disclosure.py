"""The annual disclosure report (DESIGN §12): computed from the audit log alone, naming
its checkpoint, and recomputed to the same JSON from an exported bundle."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from click.testing import CliRunner

from sandbox.cli import main
from tests.sandbox.console.conftest import World, browser


def run(world: World, *args: str) -> str:
    result = CliRunner().invoke(main, ["--data-dir", str(world.rt.settings.data_dir), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_report_is_recomputed_from_an_exported_bundle(world: World, tmp_path: Path) -> None:
    ent, op = world.enterprise, world.operator
    sql = "SELECT district, COUNT(*) AS n FROM enterprise_registry GROUP BY district"
    assert ent.post("/v1/queries", {"scope": "sc-acme", "sql": sql, "epsilon": 0.5}).status_code
    ent.post("/v1/queries", {"scope": "sc-acme", "sql": "SELECT nope", "epsilon": 0.5})
    op.post("/v1/scopes/sc-other/suspend", {"reason": "review"})
    year = world.clock.now.year
    report = json.loads(run(world, "report", "--year", str(year)))
    size = report["checkpoint"]["size"]
    assert size == world.rt.audit.size() - 1  # every entry before the report's own
    assert report["scopes"]["granted"] == 3  # the template grants three scopes
    assert report["scopes"]["by_purpose"] == {"console tests": 3}
    assert report["scopes"]["suspended_by_operator"] == 1
    assert report["products"]["enterprise_registry"]["versions"][0]["version"] == 1
    calls = report["calls"]["by_product"]["enterprise_registry"]["query.aggregate"]
    assert calls == {"allow": 1, "deny": 1}
    assert report["calls"]["refusals_by_code"] == {"unsupported_query": 1}
    assert report["budget"]["epsilon_spent_total"] == "0.5"
    assert report["calls"]["enterprises"] == 1
    entry = world.rt.audit.entries(cursor=size, limit=1).entries[0].entry
    assert (entry["action"], entry["year"]) == ("report.compute", year)

    bundle = tmp_path / "log.jsonl"
    run(world, "audit", "export", "--out", str(bundle), "--end", str(size))
    run(world, "audit", "verify", str(bundle))
    again = json.loads(run(world, "report", "--year", str(year), "--bundle", str(bundle)))
    assert again == report

    html = run(world, "report", "--year", str(year), "--bundle", str(bundle), "--format", "html")
    assert "年度公开披露报告" in html and report["checkpoint"]["root"] in html
    empty = json.loads(run(world, "report", "--year", "2001", "--bundle", str(bundle)))
    assert empty["entries"] == 0 and empty["checkpoint"] == report["checkpoint"]


def test_the_console_report_names_its_checkpoint(world: World) -> None:
    client = browser(world, world.operator)
    year = world.clock.now.year
    resp = client.get(f"/console/report?year={year}&format=json")
    assert resp.status_code == 200 and "attachment" in resp.headers["Content-Disposition"]
    report = resp.get_json()
    cp = world.rt.audit.checkpoint_at(report["checkpoint"]["size"])
    assert cp is not None
    assert base64.b64encode(cp.root).decode() == report["checkpoint"]["root"]
    assert report["scopes"]["granted"] == 3  # the template grants three scopes
    page = client.get(f"/console/report?year={year}").get_data(as_text=True)
    latest = world.rt.audit.latest_checkpoint()
    assert latest is not None and base64.b64encode(latest.root).decode() in page
    assert client.get("/console/report?year=1999").status_code == 400
    assert client.get("/console/report?year=abc").status_code == 400
