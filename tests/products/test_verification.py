"""Verification-product definitions (DESIGN §4, §5, §9): what parses, what is refused
and where the error points, and how a call's parameters are bound."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from products.errors import InvalidRequest
from products.manifest import DataProduct, parse_manifest
from products.verification import (
    AnswerShape,
    Check,
    KeyFormat,
    Op,
    VerificationProduct,
    bind_params,
    parse_verification_product,
)

MANIFEST: dict[str, Any] = {
    "id": "registry",
    "title": "Registry",
    "privacy_unit": "uscc",
    "max_rows_per_unit": 1,
    "unique": [["code", "branch"]],
    "columns": [
        {"name": "uscc", "type": "string", "classification": "identifier"},
        {"name": "name", "type": "string", "classification": "identifier"},
        {"name": "code", "type": "integer", "classification": "identifier"},
        {"name": "branch", "type": "string", "classification": "attribute"},
        {"name": "status", "type": "string", "classification": "attribute"},
        {"name": "capital", "type": "float", "classification": "sensitive", "bounds": [0, 1e8]},
        {"name": "staff", "type": "integer", "classification": "sensitive", "bounds": [0, 1000]},
        {"name": "listed", "type": "boolean", "classification": "attribute"},
        {"name": "founded", "type": "date", "classification": "attribute"},
        {"name": "ratio", "type": "float", "classification": "attribute", "aggregate": False},
    ],
}
PRODUCT: DataProduct = parse_manifest(MANIFEST)

VALID: dict[str, Any] = {
    "id": "enterprise-check",
    "product": "registry",
    "key": ["uscc", "name"],
    "checks": [
        {"name": "active", "column": "status", "op": "eq", "param": "active"},
        {
            "name": "capital_at_least",
            "column": "capital",
            "op": "ge",
            "allowed_params": [1000000, 10000000, 50000000],
        },
    ],
    "answer": "each",
}


def _with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    for k, v in changes.items():
        if v is ...:
            data.pop(k)
        else:
            data[k] = v
    return data


def _check(**fields: Any) -> dict[str, Any]:
    return _with(checks=[{"name": "c", **fields}])


def _refused(data: Any) -> dict[str, Any]:
    with pytest.raises(InvalidRequest) as err:
        parse_verification_product(data, PRODUCT)
    assert err.value.code == "invalid_request"
    fields: dict[str, Any] = err.value.details["fields"]
    return fields


def test_the_design_example_parses() -> None:
    vp = parse_verification_product(VALID, PRODUCT)
    assert vp == VerificationProduct(
        id="enterprise-check",
        product="registry",
        key=("uscc", "name"),
        checks=(
            Check("active", "status", Op.EQ, param="active"),
            Check(
                "capital_at_least",
                "capital",
                Op.GE,
                allowed_params=(1_000_000.0, 10_000_000.0, 50_000_000.0),
            ),
        ),
        answer=AnswerShape.EACH,
    )
    assert vp.check("active") is not None and vp.check("nope") is None
    assert not vp.checks[0].caller_supplied and vp.checks[1].caller_supplied
    assert parse_verification_product(vp.to_dict(), PRODUCT) == vp


def test_defaults_answer_all_and_not_natural_person() -> None:
    vp = parse_verification_product(_with(answer=...), PRODUCT)
    assert vp.answer is AnswerShape.ALL and vp.natural_person is False


@pytest.mark.parametrize(
    ("check", "typed"),
    [
        ({"column": "status", "op": "eq", "param": "active"}, "active"),
        ({"column": "status", "op": "ne", "param": "cancelled"}, "cancelled"),
        ({"column": "staff", "op": "lt", "param": 10}, 10),
        ({"column": "staff", "op": "le", "param": 10.0}, 10),
        ({"column": "capital", "op": "gt", "param": 5}, 5.0),
        ({"column": "founded", "op": "ge", "param": "2020-01-01"}, "2020-01-01"),
        ({"column": "status", "op": "in", "param": ["a", "b"]}, ("a", "b")),
        ({"column": "staff", "op": "between", "param": [1, 9]}, (1, 9)),
        (
            {"column": "founded", "op": "between", "param": ["2020-01-01", "2020-12-31"]},
            ("2020-01-01", "2020-12-31"),
        ),
        ({"column": "listed", "op": "eq", "param": True}, True),
        ({"column": "status", "op": "exists"}, None),
        ({"column": "uscc", "op": "exists"}, None),
    ],
)
def test_every_op_with_a_type_correct_param(check: dict[str, Any], typed: Any) -> None:
    vp = parse_verification_product(_check(**check), PRODUCT)
    assert vp.checks[0].param == typed


def test_allowed_params_of_in_and_between_are_lists_of_lists() -> None:
    vp = parse_verification_product(
        _with(
            checks=[
                {
                    "name": "a",
                    "column": "status",
                    "op": "in",
                    "allowed_params": [["x"], ["x", "y"]],
                },
                {
                    "name": "b",
                    "column": "staff",
                    "op": "between",
                    "allowed_params": [[1, 5], [5, 9]],
                },
            ]
        ),
        PRODUCT,
    )
    assert vp.checks[0].allowed_params == (("x",), ("x", "y"))
    assert vp.checks[1].allowed_params == ((1, 5), (5, 9))


def test_a_declared_unique_combination_is_a_key() -> None:
    vp = parse_verification_product(_with(key=["code", "branch"]), PRODUCT)
    assert vp.key == ("code", "branch")


def test_key_formats_and_natural_person() -> None:
    vp = parse_verification_product(
        _with(key_formats={"uscc": "uscc", "name": "person_name"}, natural_person=True), PRODUCT
    )
    assert vp.key_formats == {"uscc": KeyFormat.USCC, "name": KeyFormat.PERSON_NAME}
    assert vp.to_dict()["key_formats"] == {"uscc": "uscc", "name": "person_name"}


# Each refused definition and the error path that names the problem.
REFUSED: list[tuple[str, Any, list[Any]]] = [
    ("not an object", ["x"], []),
    ("unknown field", _with(extra=1), ["extra"]),
    ("id pattern", _with(id="Enterprise Check"), ["id"]),
    ("id too long", _with(id="a" * 65), ["id"]),
    ("missing id", _with(id=...), ["id"]),
    ("missing key", _with(key=...), ["key"]),
    ("empty key", _with(key=[]), ["key"]),
    ("missing checks", _with(checks=...), ["checks"]),
    ("no checks", _with(checks=[]), ["checks"]),
    ("answer shape", _with(answer="some"), ["answer"]),
    ("other product", _with(product="population"), ["product"]),
    ("unknown key column", _with(key=["uscc", "nope"]), ["key", 1]),
    ("duplicate key column", _with(key=["uscc", "uscc"]), ["key", 1]),
    ("float key column", _with(key=["uscc", "ratio"]), ["key", 1]),
    ("not a unique key", _with(key=["name"]), ["key"]),
    ("part of a unique combination", _with(key=["code"]), ["key"]),
    ("unknown check column", _check(column="nope", op="exists"), ["checks", 0, "column"]),
    ("unknown op", _check(column="status", op="like", param="a%"), ["checks", 0, "op"]),
    ("ordered op on a string", _check(column="status", op="lt", param="m"), ["checks", 0, "op"]),
    (
        "between on a boolean",
        _check(column="listed", op="between", param=[False, True]),
        ["checks", 0, "op"],
    ),
    ("check on an identifier", _check(column="name", op="eq", param="x"), ["checks", 0, "op"]),
    ("neither param nor allowed", _check(column="status", op="eq"), ["checks", 0, "param"]),
    (
        "both param and allowed",
        _check(column="staff", op="ge", param=1, allowed_params=[1, 2]),
        ["checks", 0, "param"],
    ),
    (
        "exists with a param",
        _check(column="status", op="exists", param="x"),
        ["checks", 0, "param"],
    ),
    (
        "param of the wrong type",
        _check(column="staff", op="ge", param="12"),
        ["checks", 0, "param"],
    ),
    ("fractional integer", _check(column="staff", op="ge", param=1.5), ["checks", 0, "param"]),
    ("boolean as integer", _check(column="staff", op="ge", param=True), ["checks", 0, "param"]),
    (
        "integer beyond 64 bits",
        _check(column="staff", op="ge", param=2**63),
        ["checks", 0, "param"],
    ),
    (
        "not an ISO date",
        _check(column="founded", op="ge", param="01/02/2020"),
        ["checks", 0, "param"],
    ),
    ("in with a scalar", _check(column="status", op="in", param="a"), ["checks", 0, "param"]),
    ("in with nothing", _check(column="status", op="in", param=[]), ["checks", 0, "param"]),
    ("in with repeats", _check(column="status", op="in", param=["a", "a"]), ["checks", 0, "param"]),
    (
        "between with one bound",
        _check(column="staff", op="between", param=[1]),
        ["checks", 0, "param"],
    ),
    (
        "between reversed",
        _check(column="staff", op="between", param=[9, 1]),
        ["checks", 0, "param"],
    ),
    ("scalar op with a list", _check(column="staff", op="eq", param=[1]), ["checks", 0, "param"]),
    ("null param", _check(column="staff", op="eq", param=None), ["checks", 0, "param"]),
    (
        "empty allowed_params",
        _check(column="staff", op="ge", allowed_params=[]),
        ["checks", 0, "allowed_params"],
    ),
    (
        "too many allowed_params",
        _check(column="staff", op="ge", allowed_params=list(range(101))),
        ["checks", 0, "allowed_params"],
    ),
    (
        "allowed value of the wrong type",
        _check(column="staff", op="ge", allowed_params=[3, "6"]),
        ["checks", 0, "allowed_params"],
    ),
    (
        "repeated allowed values",
        _check(column="capital", op="ge", allowed_params=[1, 1.0]),
        ["checks", 0, "allowed_params"],
    ),
    (
        "repeated allowed sets",
        _check(column="status", op="in", allowed_params=[["a", "b"], ["b", "a"]]),
        ["checks", 0, "allowed_params"],
    ),
    (
        "check name pattern",
        _with(checks=[{"name": "Active", "column": "status", "op": "exists"}]),
        ["checks", 0, "name"],
    ),
    (
        "duplicate check names",
        _with(
            checks=[
                {"name": "a", "column": "status", "op": "exists"},
                {"name": "a", "column": "staff", "op": "exists"},
            ]
        ),
        ["checks", 1, "name"],
    ),
    ("unknown key format", _with(key_formats={"uscc": "iban"}), ["key_formats"]),
    ("format on a non-key", _with(key_formats={"status": "uscc"}), ["key_formats", "status"]),
    (
        "format on an integer key",
        _with(key=["code", "branch"], key_formats={"code": "uscc"}),
        ["key_formats", "code"],
    ),
    (
        "personal key without natural_person",
        _with(key_formats={"name": "prc_id"}),
        ["natural_person"],
    ),
]


@pytest.mark.parametrize(
    ("data", "path"), [(d, p) for _, d, p in REFUSED], ids=[name for name, _, _ in REFUSED]
)
def test_refused_definitions_name_the_field(data: Any, path: list[Any]) -> None:
    if not isinstance(data, dict):
        with pytest.raises(InvalidRequest):
            parse_verification_product(data, PRODUCT)
        return
    node: Any = _refused(data)
    for step in path:
        assert step in node, (path, node)
        node = node[step]
    assert node


# -- binding a call's params ----------------------------------------------------------

CALLS = parse_verification_product(
    _with(
        checks=[
            {"name": "active", "column": "status", "op": "eq", "param": "active"},
            {"name": "staff_at_least", "column": "staff", "op": "ge", "allowed_params": [3, 6, 12]},
            {
                "name": "capital_at_least",
                "column": "capital",
                "op": "ge",
                "allowed_params": [1e6, 5e6],
            },
            {
                "name": "sector",
                "column": "status",
                "op": "in",
                "allowed_params": [["a", "b"], ["c"]],
            },
            {"name": "staff_range", "column": "staff", "op": "between", "allowed_params": [[1, 9]]},
            {"name": "since", "column": "founded", "op": "le", "allowed_params": ["2020-12-31"]},
            {"name": "known", "column": "status", "op": "exists"},
        ]
    ),
    PRODUCT,
)
GOOD_PARAMS = {
    "staff_at_least": 12,
    "capital_at_least": 1000000,
    "sector": ["b", "a"],
    "staff_range": [1, 9],
    "since": "2020-12-31",
}


def test_params_bind_type_correctly_to_the_allowed_values() -> None:
    bound = bind_params(CALLS, PRODUCT, GOOD_PARAMS)
    assert bound == {
        "active": "active",
        "staff_at_least": 12,
        "capital_at_least": 1e6,  # 1000000 (integer JSON) is the allowed 1e6 of a float column
        "sector": ("a", "b"),  # `in` sets compare as sets; the allowed value is used
        "staff_range": (1, 9),
        "since": "2020-12-31",
        "known": None,
    }
    assert (
        bind_params(CALLS, PRODUCT, {**GOOD_PARAMS, "staff_at_least": 12.0})["staff_at_least"] == 12
    )


@pytest.mark.parametrize(
    ("change", "check"),
    [
        ({"staff_at_least": "12"}, "staff_at_least"),  # a string is not the integer 12
        ({"staff_at_least": 13}, "staff_at_least"),  # not an allowed value: no free threshold
        ({"staff_at_least": True}, "staff_at_least"),
        ({"staff_at_least": None}, "staff_at_least"),
        ({"capital_at_least": "1000000"}, "capital_at_least"),
        ({"sector": ["a"]}, "sector"),
        ({"sector": "a"}, "sector"),
        ({"staff_range": [1, 8]}, "staff_range"),
        ({"since": "2020-12-30"}, "since"),
        ({"since": "31/12/2020"}, "since"),
        ({"active": "active"}, "active"),  # fixed by the product
        ({"known": 1}, "known"),
        ({"nope": 1}, "nope"),
    ],
)
def test_bad_params_name_the_check(change: dict[str, Any], check: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        bind_params(CALLS, PRODUCT, {**GOOD_PARAMS, **change})
    assert check in err.value.details["fields"]["params"]


def test_missing_params_are_required_and_params_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest) as err:
        bind_params(CALLS, PRODUCT, None)
    assert set(err.value.details["fields"]["params"]) == set(GOOD_PARAMS)
    with pytest.raises(InvalidRequest):
        bind_params(CALLS, PRODUCT, [1, 2])
    fixed_only = parse_verification_product(_with(checks=VALID["checks"][:1]), PRODUCT)
    assert bind_params(fixed_only, PRODUCT, None) == {"active": "active"}


# -- any input: a product or InvalidRequest, never another exception (DESIGN §2.7) -----

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.sampled_from(["status", "staff", "capital", "founded", "uscc", "eq", "in", "between"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
check_bodies = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["a", "b", "Bad"]),
        "column": st.sampled_from(["status", "staff", "capital", "founded", "listed", "uscc"]),
        "op": st.sampled_from([o.value for o in Op] + ["like"]),
    },
    optional={"param": json_values, "allowed_params": json_values},
)


@given(
    st.fixed_dictionaries(
        {"id": st.just("x"), "product": st.just("registry"), "key": st.just(["uscc"])},
        optional={"checks": st.lists(check_bodies, max_size=3), "answer": json_values},
    )
    | json_values
)
@settings(max_examples=300, deadline=None)
def test_any_definition_parses_or_is_refused_cleanly(data: Any) -> None:
    try:
        vp = parse_verification_product(data, PRODUCT)
    except InvalidRequest as exc:
        assert exc.details.get("fields") is not None or not isinstance(data, dict)
    else:
        assert parse_verification_product(vp.to_dict(), PRODUCT) == vp


@given(json_values | st.dictionaries(st.sampled_from([c.name for c in CALLS.checks]), json_values))
@settings(max_examples=300, deadline=None)
def test_any_params_bind_or_are_refused_cleanly(params: Any) -> None:
    with contextlib.suppress(InvalidRequest):
        bound = bind_params(CALLS, PRODUCT, params)
        assert set(bound) == {c.name for c in CALLS.checks}
