"""The command line (DESIGN §7a): every command works, every error is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sandbox.cli import main
from sandbox.demo import generate, manifest_data
from sandbox.runtime import Runtime
from sandbox.settings import Settings


def run(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), *args])


def one_line_error(result: Result) -> str:
    """The error of a failed command: exactly one line, no traceback."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output, result.output
    errors = [x for x in result.output.splitlines() if x.startswith(("error:", "Error:"))]
    assert len(errors) == 1, result.output
    return errors[0]


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = run(tmp_path, "--help")
    assert result.exit_code == 0
    for command in (
        "init",
        "keys",
        "principals",
        "products",
        "serve",
        "demo",
        "audit",
        "call",
        "scopes",
    ):
        assert command in result.output


def test_init_is_idempotent(tmp_path: Path) -> None:
    first = run(tmp_path, "init")
    second = run(tmp_path, "init")
    assert first.exit_code == second.exit_code == 0
    assert first.output.splitlines()[-1] == second.output.splitlines()[-1]  # same key
    key = next((tmp_path / "keys").glob("platform-*.key"))
    assert key.stat().st_mode & 0o777 == 0o600


def test_init_suite_sm2_is_chosen_once(tmp_path: Path) -> None:
    # DESIGN §13: the suite is chosen at init and fixed for the deployment's life.
    first = run(tmp_path, "init", "--suite", "sm2-sm3")
    assert first.exit_code == 0 and "suite        sm2-sm3" in first.output, first.output
    assert (tmp_path / "keys" / "suite").read_text().strip() == "sm2-sm3"
    assert run(tmp_path, "init").exit_code == 0  # no --suite: the stored one
    other = run(tmp_path, "init", "--suite", "ed25519-sha256")
    assert "never changes suite" in one_line_error(other)
    assert "is not one of" in run(tmp_path, "init", "--suite", "rsa").output
    # An SM2 operator key, registered and used for a local command; an Ed25519 key is
    # refused in this deployment.
    sm2, ed = tmp_path / "op", tmp_path / "ed"
    assert run(tmp_path, "keys", "generate", "--alg", "sm2", "--out", str(sm2)).exit_code == 0
    assert run(tmp_path, "keys", "generate", "--out", str(ed)).exit_code == 0
    add = ["principals", "add", "--role", "operator", "--public-key"]
    ok = run(tmp_path, *add, str(sm2.with_suffix(".pub")), "--id", "op-gm")
    assert ok.exit_code == 0, ok.output
    refused = run(tmp_path, *add, str(ed.with_suffix(".pub")), "--id", "op-ed")
    assert "SM2" in one_line_error(refused)
    rt = Runtime.open(Settings(data_dir=tmp_path))
    try:
        assert rt.suite.name == "sm2-sm3" and rt.keys.jwks()["keys"][0]["alg"] == "SM2SM3"
        assert rt.principals.get("op-gm").keys[0].alg.value == "SM2SM3"
    finally:
        rt.close()
    bundle = tmp_path / "b.jsonl"
    assert run(tmp_path, "audit", "export", "--out", str(bundle)).exit_code == 0
    verified = run(tmp_path, "audit", "verify", str(bundle))
    assert verified.exit_code == 0 and "(sm2-sm3)" in verified.output, verified.output


def test_keys_and_principals(tmp_path: Path) -> None:
    out = tmp_path / "op"
    assert run(tmp_path, "keys", "generate", "--out", str(out)).exit_code == 0
    assert (out.with_suffix(".key")).stat().st_mode & 0o777 == 0o600
    again = run(tmp_path, "keys", "generate", "--out", str(out))
    assert "exists" in one_line_error(again)
    ok = run(
        tmp_path,
        "principals",
        "add",
        "--id",
        "op-1",
        "--role",
        "operator",
        "--public-key",
        str(out.with_suffix(".pub")),
    )
    assert ok.exit_code == 0 and "audit index" in ok.output
    dup = run(
        tmp_path,
        "principals",
        "add",
        "--id",
        "op-1",
        "--role",
        "operator",
        "--public-key",
        str(out.with_suffix(".pub")),
    )
    assert one_line_error(dup).startswith("error: conflict")
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key")
    bad = run(
        tmp_path,
        "principals",
        "add",
        "--id",
        "op-2",
        "--role",
        "operator",
        "--public-key",
        str(junk),
    )
    assert one_line_error(bad).startswith("error: invalid_request")
    es = tmp_path / "es"
    assert run(tmp_path, "keys", "generate", "--out", str(es), "--alg", "es256").exit_code == 0


def test_products_register_with_data_and_errors(tmp_path: Path) -> None:
    manifest = tmp_path / "registry.json"
    manifest.write_text(json.dumps(manifest_data()["enterprise_registry"]))
    rows = generate("enterprise_registry", 50, tmp_path / "rows.csv")
    ok = run(tmp_path, "products", "register", str(manifest), "--data", str(rows), "--quiet")
    assert ok.exit_code == 0, ok.output
    assert "loaded 50 rows" in ok.output
    again = run(tmp_path, "products", "register", str(manifest))
    assert one_line_error(again).startswith("error: conflict")

    broken = tmp_path / "broken.yaml"
    broken.write_text("id: BAD\ntitle: x\n")
    assert one_line_error(run(tmp_path, "products", "register", str(broken))).startswith(
        "error: invalid_request"
    )
    not_yaml = tmp_path / "x.yaml"
    not_yaml.write_text("id: [unclosed")
    assert "not valid YAML" in one_line_error(run(tmp_path, "products", "register", str(not_yaml)))
    bad_rows = tmp_path / "bad.csv"
    bad_rows.write_text(rows.read_text().replace(",active,", ",closed,", 1))
    other = dict(manifest_data()["enterprise_registry"], id="registry_two")
    manifest.write_text(json.dumps(other))
    failed = run(
        tmp_path, "products", "register", str(manifest), "--data", str(bad_rows), "--quiet"
    )
    line = one_line_error(failed)
    assert "line 2 status" in line and "closed" not in line
    rt = Runtime.open(Settings(data_dir=tmp_path))
    try:
        assert rt.catalogue.get("registry_two").current is None  # nothing half-loaded
        actions = [e.entry["action"] for e in rt.audit.entries(limit=100).entries]
        assert actions.count("product.register") >= 2 and "product.data" in actions
    finally:
        rt.close()


def test_demo_export_verify_and_tamper(tmp_path: Path) -> None:
    first = run(tmp_path, "demo", "--rows", "50", "--quiet")
    assert first.exit_code == 0, first.output
    assert "sandbox call POST /v1/queries" in first.output
    second = run(tmp_path, "demo", "--rows", "50", "--quiet")
    assert second.exit_code == 0
    bundle = tmp_path / "bundle.jsonl"
    assert run(tmp_path, "audit", "export", "--out", str(bundle)).exit_code == 0
    verified = run(tmp_path, "audit", "verify", str(bundle))
    assert verified.exit_code == 0 and verified.output.startswith("OK")
    lines = bundle.read_text().splitlines()
    lines[3], lines[4] = lines[4], lines[3]  # reorder two entries
    bundle.write_text("\n".join(lines) + "\n")
    tampered = run(tmp_path, "audit", "verify", str(bundle))
    assert tampered.exit_code != 0
    partial = run(
        tmp_path, "audit", "export", "--out", str(tmp_path / "b2"), "--start", "5", "--end", "2"
    )
    assert partial.exit_code != 0 and not (tmp_path / "b2").exists()


def test_call_needs_identity(tmp_path: Path) -> None:
    result = run(tmp_path, "call", "GET", "/v1/products")
    assert "--id and --key" in one_line_error(result)


@pytest.mark.parametrize(
    "args", [["audit", "verify", "/nonexistent"], ["products", "register", "/nonexistent.yaml"]]
)
def test_missing_files(tmp_path: Path, args: list[str]) -> None:
    assert run(tmp_path, *args).exit_code != 0


# --- found by fuzzing the CLI (2026-12-02): each printed a traceback ------------------


@pytest.mark.parametrize(
    "url", ["mysql://u@h/x", "sqlite://", "sqlite:///:memory:", "postgresql+psycopg2://u@h/x"]
)
def test_unusable_database_urls_are_one_line(tmp_path: Path, url: str) -> None:
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "--database-url", url, "init"])
    assert "database URL" in one_line_error(result)


def test_unreadable_manifests_and_bad_ports_are_one_line(tmp_path: Path) -> None:
    huge = tmp_path / "huge.json"
    huge.write_text('{"id": ' + "9" * 5000 + "}")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 5000 + "]" * 5000)
    assert "YAML/JSON" in one_line_error(run(tmp_path, "products", "register", str(huge)))
    assert "nests too deeply" in one_line_error(run(tmp_path, "products", "register", str(deep)))
    bad_port = run(tmp_path, "serve", "--port", "70000")
    assert bad_port.exit_code == 2 and "70000" in bad_port.output


def test_a_corrupt_witness_state_is_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    key = tmp_path / "w.key"
    assert run(tmp_path, "keys", "generate", "--out", str(tmp_path / "w")).exit_code == 0
    for text in ("{bad", "", "[]", '{"size": "x"}'):
        state.write_text(text)
        result = run(
            tmp_path,
            "audit",
            "witness",
            "--url",
            "http://127.0.0.1:9",
            "--id",
            "reg",
            "--key",
            str(key),
            "--state",
            str(state),
        )
        assert one_line_error(result), text


def test_an_unknown_data_format_is_refused_before_registering(tmp_path: Path) -> None:
    manifest = tmp_path / "registry.json"
    manifest.write_text(json.dumps(manifest_data()["enterprise_registry"]))
    rows = tmp_path / "rows.txt"
    rows.write_text("uscc\n")
    result = run(tmp_path, "products", "register", str(manifest), "--data", str(rows))
    assert "data format" in one_line_error(result)
    rt = Runtime.open(Settings(data_dir=tmp_path))
    try:
        assert rt.catalogue.products() == []  # not registered without its data
    finally:
        rt.close()
    # The extension decides, not a word in the name.
    named = generate("enterprise_registry", 20, tmp_path / "from_parquet_export.csv")
    ok = run(tmp_path, "products", "register", str(manifest), "--data", str(named), "--quiet")
    assert ok.exit_code == 0, ok.output


def test_a_dp_answer_prints_as_a_table_with_its_intervals() -> None:
    from sandbox.cli.remote import answer_table

    answer = {
        "columns": ["district", "n", "avg_capital"],
        "rows": [["A", 120, 5_012_345.6], ["B", 80, 4_100_000.0]],
        "accuracy": [
            {"column": "n", "ci95": 6.0},
            {"column": "avg_capital", "ci95": None, "ci95_rows": [310_000.4, 450_000.1]},
        ],
        "epsilon_spent": 0.5,
        "budget": {"epsilon": 10.0, "remaining": 9.5},
    }
    lines = answer_table(answer).splitlines()
    assert lines[0] == "district=A  n=120 ± 6  avg_capital=5,012,346 ± 310,000"
    assert lines[1].endswith("avg_capital=4,100,000 ± 450,000")
    assert "95% half-width" in lines[-1]


def test_specs_and_model_files_are_read_as_yaml_1_2_like_manifests(tmp_path: Path) -> None:
    """``sandbox train --spec`` and ``sandbox models publish`` read files as manifests
    are read: ``1e-3`` is a number (YAML 1.1 made it a string, refused by the server)."""
    from sandbox.cli.admin import read_document

    spec = tmp_path / "model.yaml"
    spec.write_text("features:\n  - coefficient: 1e-3\n    min_score: 7.0e2\n", encoding="utf-8")
    assert read_document(spec) == {"features": [{"coefficient": 0.001, "min_score": 700.0}]}
