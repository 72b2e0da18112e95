"""The demo's manifests and verification products: valid, exemplary, consistent."""

from __future__ import annotations

from products.manifest import Classification, parse_manifest
from products.verification import KeyFormat, Op, parse_verification_product
from sandbox.demo import (
    PRODUCTS,
    header,
    manifest_data,
    manifests,
    verification_data,
    verification_products,
)


def test_manifests_parse_and_round_trip() -> None:
    products = manifests()
    assert set(products) == set(PRODUCTS)
    for pid, product in products.items():
        assert parse_manifest(product.to_dict()) == product
        assert product.column_names == header(pid)
        assert product.title and product.description
        assert all(c.description for c in product.columns)
        assert product.is_unique_key([product.privacy_unit]) or product.unique


def test_manifests_use_every_classification_and_declare_unique_keys() -> None:
    products = manifests()
    used = {c.classification for p in products.values() for c in p.columns}
    assert used == set(Classification)
    assert products["enterprise_registry"].unique == (("uscc",),)
    assert products["social_insurance"].unique == (("person_id", "employer_uscc"),)
    assert products["social_insurance"].max_rows_per_unit == 4
    for product in products.values():
        unit = product.column(product.privacy_unit)
        assert unit is not None and unit.classification is Classification.IDENTIFIER


def test_manifest_numbers_are_numbers_in_yaml() -> None:
    # YAML 1.1 reads 1.0e8 as a string; the demo files write plain integers.
    for data in manifest_data().values():
        for col in data["columns"]:
            for key in ("bounds", "bins"):
                assert all(isinstance(v, int | float) for v in col.get(key, []))


def test_at_least_five_verification_products_parse_against_the_demo_manifests() -> None:
    vps = verification_products()
    assert len(vps) >= 5
    products = manifests()
    for vid, vp in vps.items():
        assert vp.id == vid
        assert vp.description
        product = products[vp.product]
        assert parse_verification_product(vp.to_dict(), product) == vp
        assert parse_verification_product(verification_data()[vid], product) == vp


def test_demo_verification_products_model_what_exchanges_sell() -> None:
    vps = verification_products()
    four = vps["enterprise-four-elements"]
    assert four.key == ("uscc", "name", "legal_rep_name", "legal_rep_id")
    assert [c.op for c in four.checks] == [Op.EXISTS]
    assert four.natural_person
    assert four.key_formats["legal_rep_id"] is KeyFormat.PRC_ID
    months = vps["social-insurance-months"].check("months_at_least")
    assert months is not None and months.allowed_params == (3, 6, 12, 24)
    assert vps["social-insurance-months"].natural_person
    assert vps["employment-check"].key == ("person_id", "employer_uscc")
    standing = vps["enterprise-good-standing"]
    assert {c.name: c.param for c in standing.checks} == {"active": "active", "not_abnormal": False}
    capital = vps["enterprise-capital-band"].checks[0]
    assert capital.op is Op.GE and capital.allowed_params
    used_ops = {c.op for vp in vps.values() for c in vp.checks}
    assert used_ops >= {Op.EQ, Op.NE, Op.LT, Op.LE, Op.GE, Op.IN, Op.BETWEEN, Op.EXISTS}
    for vp in vps.values():  # no caller-chosen parameter is free
        for check in vp.checks:
            assert check.param is not None or check.allowed_params or check.op is Op.EXISTS
