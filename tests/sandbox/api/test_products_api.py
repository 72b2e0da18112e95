"""The catalogue over HTTP: register, upload, read metadata — never rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sandbox.runtime import Runtime
from tests.sandbox.conftest import (
    REGISTRY_MANIFEST,
    REGISTRY_ROWS,
    Caller,
    error_code,
    store_refuses_entries,
)


def register(operator: Caller, manifest: dict[str, Any] | None = None) -> Any:
    return operator.post("/v1/products", manifest or REGISTRY_MANIFEST)


def upload(operator: Caller, rows: str, product: str = "enterprise_registry") -> Any:
    return operator.call(
        "PUT", f"/v1/products/{product}/data", body=rows.encode(), content_type="text/csv"
    )


def test_register_upload_and_read(operator: Caller, enterprise: Caller, rt: Runtime) -> None:
    created = register(operator)
    assert created.status_code == 201 and created.get_json()["version"] is None
    loaded = upload(operator, REGISTRY_ROWS)
    assert loaded.status_code == 200, loaded.get_json()
    body = loaded.get_json()
    assert body["version"] == 1 and body["row_count"] == 300 and len(body["content_hash"]) == 64
    again = upload(operator, REGISTRY_ROWS)
    assert again.get_json()["version"] == 2

    seen = enterprise.get("/v1/products/enterprise_registry").get_json()
    assert seen["version"] == 2 and "row_count" not in seen  # exact counts: operators only
    listing = enterprise.get("/v1/products").get_json()["products"]
    assert [p["id"] for p in listing] == ["enterprise_registry"]
    text = str(listing)
    assert "U0001" not in text and "Firm 1" not in text


def test_bad_manifest_names_fields_and_writes_nothing(operator: Caller, rt: Runtime) -> None:
    resp = register(operator, dict(REGISTRY_MANIFEST, privacy_unit="ghost", id="BAD"))
    assert resp.status_code == 400 and error_code(resp) == "invalid_request"
    assert set(resp.get_json()["error"]["details"]["fields"]) == {"id", "privacy_unit"}
    assert rt.catalogue.products() == []


def test_duplicate_product_is_conflict(operator: Caller) -> None:
    register(operator)
    resp = register(operator)
    assert resp.status_code == 409 and error_code(resp) == "conflict"


def test_bad_rows_report_lines_and_keep_the_current_version(operator: Caller) -> None:
    register(operator)
    upload(operator, REGISTRY_ROWS)
    bad = REGISTRY_ROWS + "U9999,Secret Firm,Z,active,5\n"
    resp = upload(operator, bad)
    assert resp.status_code == 400
    details = resp.get_json()["error"]["details"]
    assert details["rejected"] == 1
    assert details["first_rejections"] == [
        {"line": 302, "column": "district", "rule": "not one of public_values"}
    ]
    assert "Secret" not in resp.get_data(as_text=True)
    assert operator.get("/v1/products/enterprise_registry").get_json()["version"] == 1


def test_upload_errors(operator: Caller, enterprise: Caller) -> None:
    missing = upload(operator, REGISTRY_ROWS, product="nope")
    assert missing.status_code == 404 and error_code(missing) == "not_found"
    register(operator)
    wrong_type = operator.call(
        "PUT", "/v1/products/enterprise_registry/data", body=b"x", content_type="application/json"
    )
    assert wrong_type.status_code == 400 and error_code(wrong_type) == "invalid_request"
    empty = operator.call(
        "PUT", "/v1/products/enterprise_registry/data", body=b"", content_type="text/csv"
    )
    assert empty.status_code == 400
    not_operator = upload(enterprise, REGISTRY_ROWS)
    assert not_operator.status_code == 403 and error_code(not_operator) == "forbidden"


def test_only_operators_register(enterprise: Caller, regulator: Caller) -> None:
    for caller in (enterprise, regulator):
        resp = register(caller)
        assert resp.status_code == 403 and error_code(resp) == "forbidden"


def test_unknown_product(enterprise: Caller) -> None:
    resp = enterprise.get("/v1/products/nope")
    assert resp.status_code == 404 and error_code(resp) == "not_found"


def test_definitions_are_stored_only_with_their_entries(rt: Runtime, operator: Caller) -> None:
    with store_refuses_entries(rt, "product.register"):
        assert operator.post("/v1/products", REGISTRY_MANIFEST).status_code == 503
    assert operator.get("/v1/products/enterprise_registry").status_code == 404
    created = operator.post("/v1/products", REGISTRY_MANIFEST)
    assert created.status_code == 201
    again = operator.post("/v1/products", REGISTRY_MANIFEST)
    assert again.status_code == 409 and error_code(again) == "conflict"

    check = {
        "id": "registry-active",
        "product": "enterprise_registry",
        "key": ["uscc"],
        "checks": [{"name": "active", "column": "status", "op": "eq", "param": "active"}],
        "answer": "all",
    }
    with store_refuses_entries(rt, "verification_product.register"):
        assert operator.post("/v1/verification-products", check).status_code == 503
    assert operator.get("/v1/verification-products/registry-active").status_code == 404
    defined = operator.post("/v1/verification-products", check)
    assert defined.status_code == 201, defined.get_json()
    assert (
        defined.get_json() == operator.get("/v1/verification-products/registry-active").get_json()
    )
    taken = operator.post("/v1/verification-products", check)
    assert taken.status_code == 409 and error_code(taken) == "conflict"


def test_a_data_version_becomes_current_only_with_its_entry(rt: Runtime, operator: Caller) -> None:
    assert operator.post("/v1/products", REGISTRY_MANIFEST).status_code == 201

    def upload() -> Any:
        return operator.call(
            "PUT",
            "/v1/products/enterprise_registry/data",
            body=REGISTRY_ROWS.encode(),
            content_type="text/csv",
        )

    with store_refuses_entries(rt, "product.data"):
        failed = upload()
    assert failed.status_code == 503
    # The file was loaded, but no call reads it: the product still has no data.
    assert operator.get("/v1/products/enterprise_registry").get_json()["version"] is None
    done = upload()
    assert done.status_code == 200
    body = done.get_json()
    load = body.pop("load")  # the upload's own report: units and out-of-bounds counts
    assert load == {"units": 300, "clipped": {"registered_capital": {"below": 0, "above": 0}}}
    assert body == operator.get("/v1/products/enterprise_registry").get_json()
    # The failed call left no version behind (nor its file): this is version 1.
    assert body["version"] == 1
    assert [p.name for p in (rt.settings.products_dir / "enterprise_registry").iterdir()] == [
        Path(rt.catalogue.data_path(rt.catalogue.get("enterprise_registry"))).name
    ]


def test_numbers_beyond_the_column_range_are_refused(operator: Caller) -> None:
    manifest = json.loads(json.dumps(REGISTRY_MANIFEST))
    capital = manifest["columns"][-1]
    for change in (
        {"bins": [0, 10**400]},  # float: beyond a double
        {"bounds": [0, 10**400]},
        {"bounds": [0, 1.7976931348623157e308]},  # finite, but noise scales overflow
        {"bounds": [0, 5e-324]},
    ):
        manifest["columns"][-1] = {**capital, **change}
        resp = operator.post("/v1/products", manifest)
        assert resp.status_code == 400 and error_code(resp) == "invalid_request", change
    manifest["columns"][-1] = {**capital, "type": "integer", "bounds": [0, 10**400]}
    resp = operator.post("/v1/products", manifest)
    assert resp.status_code == 400, resp.get_json()
    # The refused manifest left nothing behind: the catalogue still answers.
    listed = operator.get("/v1/products")
    assert listed.status_code == 200 and listed.get_json()["products"] == []
    manifest["columns"][-1] = {**capital, "bounds": [-1e100, 1e100]}
    assert operator.post("/v1/products", manifest).status_code == 201


def test_a_manifest_stored_under_earlier_rules_stays_readable(
    operator: Caller, enterprise: Caller, rt: Runtime
) -> None:
    # Registration rules may tighten; a product registered before must still be listed
    # and described (the catalogue re-reads stored manifests), not fail the catalogue.
    assert operator.post("/v1/products", REGISTRY_MANIFEST).status_code == 201
    old = json.loads(json.dumps(REGISTRY_MANIFEST))
    old["columns"][-1]["bounds"] = [0, 1e200]  # refused for new products now
    old["columns"].append({"name": "_draw", "type": "string", "classification": "attribute"})
    with rt.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE products SET manifest = ? WHERE id = 'enterprise_registry'",
            (json.dumps(old),),
        )
    assert operator.post("/v1/products", {**old, "id": "again"}).status_code == 400
    for path in ("/v1/products", "/v1/products/enterprise_registry"):
        resp = enterprise.get(path)
        assert resp.status_code == 200, resp.get_json()


def test_reserved_and_newline_terminated_names_are_refused(operator: Caller) -> None:
    resp = operator.post("/v1/products", {**REGISTRY_MANIFEST, "id": "registry\n"})
    assert resp.status_code == 400
    for name in ("_unit_rank", "_unit_key", "_draw", "capital\n"):
        manifest = json.loads(json.dumps(REGISTRY_MANIFEST))
        manifest["columns"].append(
            {"name": name, "type": "integer", "classification": "attribute", "bounds": [0, 9]}
        )
        resp = operator.post("/v1/products", manifest)
        assert resp.status_code == 400 and error_code(resp) == "invalid_request", name
    manifest = json.loads(json.dumps(REGISTRY_MANIFEST))
    manifest["columns"].append({"name": "_source", "type": "string", "classification": "attribute"})
    assert operator.post("/v1/products", manifest).status_code == 201


def test_row_counts_and_content_hashes_are_shown_to_operators_and_regulators_only(
    operator: Caller, enterprise: Caller, regulator: Caller
) -> None:
    # Both are exact functions of the data: knowing the rest of the file, the SHA-256 of
    # the upload gave one household's income away.
    assert operator.post("/v1/products", REGISTRY_MANIFEST).status_code == 201
    operator.call(
        "PUT",
        "/v1/products/enterprise_registry/data",
        body=REGISTRY_ROWS.encode(),
        content_type="text/csv",
    )
    for who, shown in ((operator, True), (regulator, True), (enterprise, False)):
        for path in ("/v1/products/enterprise_registry", "/v1/products"):
            body = who.get(path).get_json()
            product = body["products"][0] if "products" in body else body
            assert ("content_hash" in product) is shown and ("row_count" in product) is shown


def test_a_load_whose_process_died_before_its_commit_leaves_no_file(
    rt: Runtime, operator: Caller
) -> None:
    """A staged file that no version records (its process was killed between its load
    and its commit) is removed by the next load once it is older than any commit could
    wait; a younger one may still be committing elsewhere and is kept."""
    import os
    import time

    assert register(operator).status_code == 201
    assert upload(operator, REGISTRY_ROWS).status_code == 200
    directory = rt.settings.products_dir / "enterprise_registry"
    current = {p.name for p in directory.iterdir()}
    dead = directory / "load-0000dead.duckdb"
    young = directory / "load-0000young.duckdb"
    for orphan in (dead, young):
        orphan.write_bytes(b"a finished load that never committed")
    hour_ago = time.time() - 3700
    os.utime(dead, (hour_ago, hour_ago))
    for recorded in current:  # recorded versions are never touched, however old
        os.utime(directory / recorded, (hour_ago, hour_ago))
    assert upload(operator, REGISTRY_ROWS).get_json()["version"] == 2
    left = {p.name for p in directory.iterdir()}
    assert not dead.exists() and young.exists() and current <= left
    assert len(left) == len(current) + 2  # version 2 and the young file
