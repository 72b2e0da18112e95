"""Manifests (DESIGN §5): what operators may publish, and the errors for what they may not."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from products.errors import InvalidRequest
from products.manifest import Classification, ColumnType, KeyFormat, parse_manifest


def manifest(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "enterprise_registry",
        "title": "Enterprise registrations",
        "description": "Registered enterprises of one city",
        "privacy_unit": "uscc",
        "max_rows_per_unit": 1,
        "columns": [
            {"name": "uscc", "type": "string", "classification": "identifier"},
            {
                "name": "district",
                "type": "string",
                "classification": "attribute",
                "public_values": ["A", "B", "C"],
            },
            {
                "name": "registered_capital",
                "type": "float",
                "classification": "sensitive",
                "bounds": [0, 1.0e8],
            },
            {
                "name": "employees",
                "type": "integer",
                "classification": "sensitive",
                "bounds": [0, 5000],
            },
            {"name": "founded", "type": "date", "classification": "public"},
            {"name": "active", "type": "boolean", "classification": "attribute"},
        ],
    }
    base.update(overrides)
    return base


def fields_of(exc: pytest.ExceptionInfo[InvalidRequest]) -> Any:
    return exc.value.details["fields"]


def test_design_example_parses_into_typed_columns() -> None:
    m = parse_manifest(manifest())
    assert m.id == "enterprise_registry"
    uscc = m.column("uscc")
    assert uscc is not None and uscc.classification is Classification.IDENTIFIER
    assert (uscc.where, uscc.group_by, uscc.aggregate) == (False, False, False)
    district = m.column("district")
    assert district is not None and district.group_by and district.public_values == ("A", "B", "C")
    capital = m.column("registered_capital")
    assert capital is not None and capital.type is ColumnType.FLOAT
    assert capital.bounds == (0.0, 1.0e8) and not capital.group_by
    active = m.column("active")
    assert active is not None and active.public_values == (False, True)


def test_round_trip_through_to_dict() -> None:
    m = parse_manifest(manifest())
    assert parse_manifest(m.to_dict()) == m


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"id": "Bad-Id"}, "id"),
        ({"id": "x" * 65}, "id"),
        ({"privacy_unit": "nope"}, "privacy_unit"),
        ({"max_rows_per_unit": 0}, "max_rows_per_unit"),
        ({"max_rows_per_unit": "1"}, "max_rows_per_unit"),
        ({"columns": []}, "columns"),
        ({"title": ""}, "title"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_top_level_fields_are_named(override: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_manifest(manifest(**override))
    assert field in fields_of(exc)


@pytest.mark.parametrize(
    ("column", "field"),
    [
        ({"name": "x", "type": "decimal", "classification": "public"}, "type"),
        ({"name": "x", "type": "string", "classification": "secret"}, "classification"),
        ({"name": "X", "type": "string", "classification": "public"}, "name"),
        ({"name": "x", "type": "float", "classification": "sensitive"}, "bounds"),
        ({"name": "x", "type": "float", "classification": "sensitive", "bounds": [5, 1]}, "bounds"),
        (
            {"name": "x", "type": "integer", "classification": "sensitive", "bounds": [0, 1.5]},
            "bounds",
        ),
        ({"name": "x", "type": "string", "classification": "public", "bounds": [0, 1]}, "bounds"),
        (
            {
                "name": "x",
                "type": "string",
                "classification": "public",
                "public_values": ["a", "a"],
            },
            "public_values",
        ),
        (
            {
                "name": "x",
                "type": "integer",
                "classification": "public",
                "bounds": [0, 9],
                "public_values": ["one"],
            },
            "public_values",
        ),
        (
            {"name": "x", "type": "string", "classification": "identifier", "group_by": True},
            "group_by",
        ),
        (
            {
                "name": "x",
                "type": "float",
                "classification": "public",
                "bounds": [0, 1],
                "bins": [0, 0.5, 0.2],
            },
            "bins",
        ),
        (
            {
                "name": "x",
                "type": "integer",
                "classification": "identifier",
                "aggregate": False,
                "format": "uscc",
            },
            "format",
        ),
        (
            {"name": "x", "type": "string", "classification": "identifier", "format": "iban"},
            "format",
        ),
        (
            {
                "name": "x",
                "type": "string",
                "classification": "identifier",
                "format": "person_name",  # a key format of verification products, unchecked
            },
            "format",
        ),
        ({"name": "x", "type": "string", "classification": "identifier", "format": None}, "format"),
    ],
)
def test_bad_columns_are_named_by_index_and_field(column: dict[str, Any], field: str) -> None:
    m = manifest()
    m["columns"] = [*m["columns"], column]
    with pytest.raises(InvalidRequest) as exc:
        parse_manifest(m)
    errors = fields_of(exc)["columns"]
    assert field in errors[len(m["columns"]) - 1]


def test_format_declares_a_checked_identifier_and_round_trips() -> None:
    m = manifest()
    m["columns"][0]["format"] = "uscc"
    m["columns"].append(
        {"name": "rep_id", "type": "string", "classification": "identifier", "format": "prc_id"}
    )
    product = parse_manifest(m)
    assert product.column("uscc").format is KeyFormat.USCC  # type: ignore[union-attr]
    assert product.column("rep_id").format is KeyFormat.PRC_ID  # type: ignore[union-attr]
    assert product.column("district").format is None  # type: ignore[union-attr]
    assert product.to_dict()["columns"][0]["format"] == "uscc"
    assert "format" not in product.to_dict()["columns"][1]
    assert parse_manifest(product.to_dict()) == product
    assert parse_manifest(product.to_dict(), registering=False) == product


def test_format_errors_say_what_is_allowed() -> None:
    m = manifest()
    m["columns"][0]["format"] = "enterprise_name"
    m["columns"][3]["format"] = "uscc"  # employees: integer
    with pytest.raises(InvalidRequest) as exc:
        parse_manifest(m)
    errors = fields_of(exc)["columns"]
    assert errors[0]["format"] == [
        "must be one of uscc, prc_id: the identifier formats with a check character"
    ]
    assert errors[3]["format"] == ["format is only for string columns"]


def test_duplicate_column_and_unknown_unique_key() -> None:
    m = manifest(unique=[["nope"]])
    m["columns"].append({"name": "district", "type": "string", "classification": "public"})
    with pytest.raises(InvalidRequest) as exc:
        parse_manifest(m)
    assert "unique" in fields_of(exc) and "columns" in fields_of(exc)


def test_not_an_object() -> None:
    with pytest.raises(InvalidRequest):
        parse_manifest(["id"])


def test_unique_keys() -> None:
    m = parse_manifest(manifest(unique=[["district", "founded"]]))
    assert m.is_unique_key(["uscc"])  # privacy unit with one row per unit
    assert m.is_unique_key(["district", "founded", "active"])
    assert not m.is_unique_key(["district"])


def test_design_example_yaml_numbers_are_numbers() -> None:
    from products.yamlfile import load_yaml

    data = load_yaml("bounds: [0, 1.0e8]\nother: [1e3, -2.5E-3, 7, .5, '1.0e8']\n")
    assert data == {"bounds": [0, 1.0e8], "other": [1e3, -2.5e-3, 7, 0.5, "1.0e8"]}
    assert isinstance(data["bounds"][1], float)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=15,
)
_keys = st.sampled_from(
    [
        "id",
        "title",
        "privacy_unit",
        "max_rows_per_unit",
        "columns",
        "unique",
        "min_group_size",
        "name",
        "type",
        "classification",
        "bounds",
        "public_values",
        "bins",
        "group_by",
        "format",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _json, max_size=8) | _json)
def test_any_input_is_a_manifest_or_an_invalid_request(data: Any) -> None:
    with contextlib.suppress(InvalidRequest):
        parse_manifest(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(_keys, _json, max_size=6), max_size=4))
def test_any_columns_are_columns_or_an_invalid_request(columns: list[Any]) -> None:
    with contextlib.suppress(InvalidRequest):
        parse_manifest(manifest(columns=columns))
