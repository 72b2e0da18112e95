"""Answering verification calls from real product files (demo data loaded with the
production loader). Expected answers are computed in Python from the CSV rows, never
by asking DuckDB the same question."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest

from products.errors import InvalidRequest, TooLarge
from products.loader import DataFormat, load_file
from products.manifest import ColumnType, DataProduct, parse_manifest
from products.verification import (
    AnswerShape,
    Op,
    Param,
    VerificationProduct,
    parse_verification_product,
)
from sandbox.errors import Unavailable
from sandbox.settings import Settings
from sandbox.verification.codes import make_prc_id, make_uscc
from sandbox.verification.lookup import VerificationLimits, VerificationRunner
from sandbox.verification.request import parse_item

if TYPE_CHECKING:  # the fixture's type; conftest modules are not imported by tests
    from conftest import DemoStore

# One verification product per demo table, together covering every op with fixed and
# caller-chosen parameters, on strings, integers, floats, booleans and dates.
ENTERPRISE_OPS: dict[str, Any] = {
    "id": "enterprise-all-ops",
    "product": "enterprise_registry",
    "key": ["uscc"],
    "key_formats": {"uscc": "uscc"},
    "answer": "each",
    "checks": [
        {"name": "active", "column": "status", "op": "eq", "param": "active"},
        {"name": "not_cancelled", "column": "status", "op": "ne", "param": "cancelled"},
        {"name": "off_list", "column": "abnormal_list", "op": "eq", "param": False},
        {
            "name": "capital_below",
            "column": "registered_capital",
            "op": "lt",
            "allowed_params": [1000000, 5000000],
        },
        {
            "name": "founded_by",
            "column": "founded_on",
            "op": "le",
            "allowed_params": ["2015-12-31", "2020-12-31"],
        },
        {"name": "capital_over", "column": "registered_capital", "op": "gt", "param": 1000000},
        {
            "name": "capital_at_least",
            "column": "registered_capital",
            "op": "ge",
            "allowed_params": [500000, 10000000],
        },
        {
            "name": "sector",
            "column": "industry",
            "op": "in",
            "allowed_params": [["F", "L"], ["I", "M", "C"]],
        },
        {
            "name": "district_core",
            "column": "district",
            "op": "in",
            "param": ["天河区", "越秀区", "海珠区"],
        },
        {
            "name": "capital_mid",
            "column": "registered_capital",
            "op": "between",
            "param": [100000, 1000000],
        },
        {
            "name": "founded_in",
            "column": "founded_on",
            "op": "between",
            "allowed_params": [["2016-01-01", "2020-12-31"], ["2021-01-01", "2025-12-31"]],
        },
        {"name": "named", "column": "name", "op": "exists"},
    ],
}
INSURANCE_OPS: dict[str, Any] = {
    "id": "insurance-all-ops",
    "product": "social_insurance",
    "key": ["person_id", "employer_uscc"],
    "key_formats": {"person_id": "prc_id", "employer_uscc": "uscc"},
    "natural_person": True,
    "answer": "each",
    "checks": [
        {
            "name": "months_at_least",
            "column": "months_paid",
            "op": "ge",
            "allowed_params": [3, 6, 12, 24],
        },
        {"name": "months_under", "column": "months_paid", "op": "lt", "param": 12},
        {"name": "wage_over", "column": "base_wage", "op": "gt", "allowed_params": [5000, 10000]},
        {"name": "wage_at_most", "column": "base_wage", "op": "le", "param": 2300},
        {"name": "started_since", "column": "start_month", "op": "ge", "param": "2020-01-01"},
        {"name": "paying", "column": "status", "op": "eq", "param": "paying"},
    ],
}
POPULATION_OPS: dict[str, Any] = {
    "id": "population-all-ops",
    "product": "population",
    "key": ["household_id"],
    "natural_person": True,
    "answer": "all",
    "checks": [
        {
            "name": "low_income",
            "column": "income_band",
            "op": "in",
            "param": ["below_30k", "30k_60k", "60k_120k"],
        },
        {
            "name": "size_at_least",
            "column": "household_size",
            "op": "ge",
            "allowed_params": [1, 2, 3],
        },
        {"name": "head_age", "column": "head_age", "op": "between", "allowed_params": [[18, 60]]},
        {"name": "not_owned", "column": "housing", "op": "ne", "param": "owned"},
        {"name": "income_over", "column": "annual_income", "op": "gt", "param": 30000},
    ],
}
DEFINITIONS: dict[str, dict[str, Any]] = {
    d["product"]: d for d in (ENTERPRISE_OPS, INSURANCE_OPS, POPULATION_OPS)
}


def _cell(product: DataProduct, column: str, raw: str) -> Any:
    col = product.column(column)
    assert col is not None
    if raw == "":
        return None
    if col.type is ColumnType.FLOAT:
        return float(raw)
    if col.type is ColumnType.INTEGER:
        return int(raw)
    if col.type is ColumnType.BOOLEAN:
        return raw == "true"
    return raw  # strings, and ISO dates (which order as strings)


def _holds(op: Op, value: Any, param: Param | None) -> bool:
    if value is None:
        return False
    if op is Op.EXISTS:
        return True
    if op is Op.IN:
        assert isinstance(param, tuple)
        return value in param
    if op is Op.BETWEEN:
        assert isinstance(param, tuple)
        return bool(param[0] <= value <= param[1])
    compare: dict[Op, Callable[[Any, Any], bool]] = {
        Op.EQ: lambda a, b: a == b,
        Op.NE: lambda a, b: a != b,
        Op.LT: lambda a, b: a < b,
        Op.LE: lambda a, b: a <= b,
        Op.GT: lambda a, b: a > b,
        Op.GE: lambda a, b: a >= b,
    }
    return compare[op](value, param)


def _expected(
    vp: VerificationProduct,
    product: DataProduct,
    row: dict[str, str] | None,
    chosen: dict[str, Any],
) -> dict[str, Any]:
    results = {}
    for c in vp.checks:
        param = c.param
        if c.allowed_params is not None:
            param = next(p for p in c.allowed_params if _jsonable(p) == chosen[c.name])
        value = None if row is None else _cell(product, c.column, row[c.column])
        results[c.name] = _holds(c.op, value, param)
    match = all(results.values())
    return {"match": match} if vp.answer is AnswerShape.ALL else {"match": match, "checks": results}


def _jsonable(p: Param) -> Any:
    return list(p) if isinstance(p, tuple) else p


def _choices(vp: VerificationProduct, rng: random.Random) -> dict[str, Any]:
    return {
        c.name: _jsonable(rng.choice(c.allowed_params))
        for c in vp.checks
        if c.allowed_params is not None
    }


def _call(vp: VerificationProduct, row: dict[str, str], rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": {k: row[k] for k in vp.key},
        "params": _choices(vp, rng),
    }
    if vp.natural_person:
        body["consent_ref"] = "consent-2026-0001"
    return body


@pytest.fixture(scope="module", params=sorted(DEFINITIONS))
def case(
    request: pytest.FixtureRequest, store: DemoStore
) -> tuple[VerificationProduct, DataProduct, Path, list[dict[str, str]]]:
    pid: str = request.param
    product = store.products[pid]
    vp = parse_verification_product(DEFINITIONS[pid], product)
    return vp, product, store.files[pid], store.rows[pid]


def test_every_op_answers_true_and_false_subjects_correctly(
    case: tuple[VerificationProduct, DataProduct, Path, list[dict[str, str]]],
    runner: VerificationRunner,
) -> None:
    vp, product, path, rows = case
    rng = random.Random(1)
    seen: dict[str, set[bool]] = {c.name: set() for c in vp.checks}
    for row in rng.sample(rows, 150):
        body = _call(vp, row, rng)
        answer = runner.verify(
            vp, product, path, body["subject"], body["params"], consent_ref=body.get("consent_ref")
        )
        expected = _expected(vp, product, row, body["params"])
        assert answer == expected, (row, body["params"])
        for name, value in expected.get("checks", {"": expected["match"]}).items():
            seen.setdefault(name, set()).add(value)
    if vp.answer is AnswerShape.EACH:
        # The sample holds subjects for which each check is true and others where it is
        # false (`exists` is false only for unknown subjects and NULL cells: tested below).
        one_sided = {
            name: outcomes
            for name, outcomes in seen.items()
            if outcomes != {True, False} and vp.check(name).op is not Op.EXISTS  # type: ignore[union-attr]
        }
        assert not one_sided
    else:
        assert seen[""] == {True, False}


def test_batch_answers_equal_single_answers_in_item_order(
    case: tuple[VerificationProduct, DataProduct, Path, list[dict[str, str]]],
    runner: VerificationRunner,
) -> None:
    vp, product, path, rows = case
    rng = random.Random(2)
    items = [_call(vp, row, rng) for row in rng.sample(rows, 120)]
    items += [items[0], items[5]]  # repeats are answered again
    unknown = dict(items[1], subject=dict(items[1]["subject"]))
    first = vp.key[0]
    unknown["subject"][first] = _absent_key(vp, rows)
    items.insert(3, unknown)
    batch = runner.verify_batch(vp, product, path, items)
    singles = [
        runner.verify(
            vp, product, path, it["subject"], it["params"], consent_ref=it.get("consent_ref")
        )
        for it in items
    ]
    assert batch == singles
    assert not batch[3]["match"]


def _absent_key(vp: VerificationProduct, rows: list[dict[str, str]]) -> str:
    """A well-formed key value of the first key column that no row has."""
    first = vp.key[0]
    present = {r[first] for r in rows}
    fmt = vp.key_formats.get(first)
    for n in range(1000):
        if fmt is not None and fmt.value == "uscc":
            candidate = make_uscc("9", "1", "440106", f"{n:08d}")
        elif fmt is not None and fmt.value == "prc_id":
            candidate = make_prc_id("440106", dt.date(1990, 1, 1), n)
        else:
            candidate = f"4401069999{n:06d}"
        if candidate not in present:
            return candidate
    raise AssertionError("no absent key found")


def test_unknown_subject_answers_false_for_everything(
    case: tuple[VerificationProduct, DataProduct, Path, list[dict[str, str]]],
    runner: VerificationRunner,
) -> None:
    vp, product, path, rows = case
    body = _call(vp, rows[0], random.Random(3))
    body["subject"][vp.key[0]] = _absent_key(vp, rows)
    answer = runner.verify(
        vp, product, path, body["subject"], body["params"], consent_ref=body.get("consent_ref")
    )
    assert answer["match"] is False
    assert not any(answer.get("checks", {}).values())
    outcome = runner.run(vp, product, path, [_item(vp, product, body)])[0]
    assert outcome.found is False


def _item(vp: VerificationProduct, product: DataProduct, body: dict[str, Any]) -> Any:
    return parse_item(vp, product, body)


def test_no_record_value_appears_in_any_answer(
    case: tuple[VerificationProduct, DataProduct, Path, list[dict[str, str]]],
    runner: VerificationRunner,
) -> None:
    vp, product, path, rows = case
    rng = random.Random(4)
    sample = rng.sample(rows, 60)
    answers = runner.verify_batch(vp, product, path, [_call(vp, r, rng) for r in sample])
    names = {c.name for c in vp.checks}
    for row, answer in zip(sample, answers, strict=True):
        # Structure: booleans under the fixed DESIGN §5 keys, nothing else.
        assert set(answer) == ({"match"} if vp.answer is AnswerShape.ALL else {"match", "checks"})
        assert isinstance(answer["match"], bool)
        if "checks" in answer:
            assert set(answer["checks"]) == names
            assert all(isinstance(v, bool) for v in answer["checks"].values())
        # And literally: no cell of the record occurs in the serialised answer, except
        # where the definition's own words contain it (the status "active" is also the
        # name of a check; "cancelled" is part of "not_cancelled").
        text = json.dumps(answer, ensure_ascii=False)
        words = [*names, "match", "checks", "true", "false"]
        for column, value in row.items():
            if len(value) < 2 or any(value in w for w in words):
                continue
            assert value not in text, (column, value)


@pytest.fixture(scope="module")
def four(store: DemoStore) -> tuple[VerificationProduct, DataProduct, Path, list[dict[str, str]]]:
    return (
        store.vps["enterprise-four-elements"],
        store.products["enterprise_registry"],
        store.files["enterprise_registry"],
        store.rows["enterprise_registry"],
    )


def test_four_elements_match_only_as_a_whole(
    four: tuple[VerificationProduct, DataProduct, Path, list[dict[str, str]]],
    runner: VerificationRunner,
) -> None:
    vp, product, path, rows = four
    row, other = rows[10], rows[11]
    subject = {k: row[k] for k in vp.key}

    def verify(s: dict[str, str]) -> bool:
        answer = runner.verify(vp, product, path, s, consent_ref="c-1")
        assert set(answer) == {"match"}
        return bool(answer["match"])

    assert verify(subject)
    for k in ("name", "legal_rep_name", "legal_rep_id"):
        assert not verify({**subject, k: other[k]}), k
    assert not verify({**subject, "uscc": other["uscc"]})


def test_normalised_inputs_still_match(
    four: tuple[VerificationProduct, DataProduct, Path, list[dict[str, str]]],
    runner: VerificationRunner,
) -> None:
    vp, product, path, rows = four
    row = next(r for r in rows if r["legal_rep_id"].endswith("X"))
    full_width = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in row["uscc"])
    subject = {
        "uscc": f"\u3000{full_width} ",  # full-width digits and letters, ideographic space
        "name": f" {row['name']}",
        "legal_rep_name": row["legal_rep_name"],
        "legal_rep_id": row["legal_rep_id"].lower() + "\u3000",  # trailing lower-case x
    }
    assert runner.verify(vp, product, path, subject, consent_ref="c-1") == {"match": True}
    parens = next((r for r in rows if "（" in r["name"]), None)
    if parens is not None:
        ascii_name = parens["name"].replace("（", "(").replace("）", ")")
        subject = {k: parens[k] for k in vp.key} | {"name": ascii_name}
        assert runner.verify(vp, product, path, subject, consent_ref="c-1") == {"match": True}


def test_malformed_key_is_refused_before_any_lookup(
    four: tuple[VerificationProduct, DataProduct, Path, list[dict[str, str]]],
    runner: VerificationRunner,
    tmp_path: Path,
) -> None:
    vp, product, _, rows = four
    subject = {k: rows[0][k] for k in vp.key}
    bad = subject | {"uscc": subject["uscc"][:-1] + ("0" if subject["uscc"][-1] != "0" else "1")}
    missing_file = tmp_path / "no-such.duckdb"  # a lookup would fail with unavailable
    with pytest.raises(InvalidRequest) as err:
        runner.verify(vp, product, missing_file, bad, consent_ref="c-1")
    assert list(err.value.details["fields"]["subject"]) == ["uscc"]
    assert bad["uscc"] not in json.dumps(err.value.as_dict(), ensure_ascii=False)
    with pytest.raises(Unavailable):
        runner.verify(vp, product, missing_file, subject, consent_ref="c-1")


def test_natural_person_products_require_consent(
    four: tuple[VerificationProduct, DataProduct, Path, list[dict[str, str]]],
    runner: VerificationRunner,
) -> None:
    vp, product, path, rows = four
    subject = {k: rows[0][k] for k in vp.key}
    for consent in (None, "", "   ", 7, "ref\ud800", "x" * 257):
        with pytest.raises(InvalidRequest) as err:
            runner.verify(vp, product, path, subject, consent_ref=consent)  # type: ignore[arg-type]
        assert "consent_ref" in err.value.details["fields"]
    with pytest.raises(InvalidRequest) as err:
        runner.verify_batch(vp, product, path, [{"subject": subject}])
    assert "consent_ref" in err.value.details["fields"]["items"][0]


def test_params_outside_allowed_params_are_refused_naming_the_check(
    store: DemoStore, runner: VerificationRunner
) -> None:
    vp = store.vps["social-insurance-months"]
    product = store.products["social_insurance"]
    path = store.files["social_insurance"]
    row = store.rows["social_insurance"][0]
    subject = {"person_id": row["person_id"], "employer_uscc": row["employer_uscc"]}
    ok = runner.verify(vp, product, path, subject, {"months_at_least": 12}, consent_ref="c")
    assert set(ok["checks"]) == {"months_at_least", "paying_now"}
    for bad in ("12", 13, 12.5, None, [12], True):
        with pytest.raises(InvalidRequest) as err:
            runner.verify(vp, product, path, subject, {"months_at_least": bad}, consent_ref="c")
        assert list(err.value.details["fields"]["params"]) == ["months_at_least"]
    with pytest.raises(InvalidRequest) as err:
        runner.verify(vp, product, path, subject, {}, consent_ref="c")
    assert "months_at_least" in err.value.details["fields"]["params"]
    with pytest.raises(InvalidRequest) as err:
        runner.verify(
            vp, product, path, subject, {"months_at_least": 12, "paying_now": "x"}, consent_ref="c"
        )
    assert list(err.value.details["fields"]["params"]) == ["paying_now"]


def test_a_bad_item_refuses_the_whole_batch_naming_it(
    store: DemoStore, runner: VerificationRunner
) -> None:
    vp = store.vps["enterprise-good-standing"]
    product = store.products["enterprise_registry"]
    path = store.files["enterprise_registry"]
    items: list[Any] = [
        {"subject": {"uscc": r["uscc"]}} for r in store.rows["enterprise_registry"][:5]
    ]
    assert len(runner.verify_batch(vp, product, path, items)) == 5
    items[3] = {"subject": {"uscc": "not-a-code"}}
    items.append({"subject": {"uscc": items[0]["subject"]["uscc"]}, "extra": 1})
    with pytest.raises(InvalidRequest) as err:
        runner.verify_batch(vp, product, path, items)
    problems = err.value.details["fields"]["items"]
    assert set(problems) == {3, 5}
    assert list(problems[3]["subject"]) == ["uscc"]
    assert list(problems[5]) == ["extra"]
    empty: Any
    for empty in ([], None, "x", {"subject": {}}):
        with pytest.raises(InvalidRequest):
            runner.verify_batch(vp, product, path, empty)
    small = VerificationRunner(VerificationLimits.from_settings(Settings(max_batch_items=3)))
    with pytest.raises(TooLarge):
        small.verify_batch(vp, product, path, items[:4])
    small.close()


# -- NULL cells, duplicated keys, integer and date keys: a product built for them -----

NULLS_MANIFEST = {
    "id": "licences",
    "title": "Licences",
    "privacy_unit": "holder",
    "max_rows_per_unit": 1,
    "columns": [
        {"name": "holder", "type": "integer", "classification": "identifier"},
        {"name": "issued", "type": "date", "classification": "attribute"},
        {"name": "grade", "type": "string", "classification": "attribute"},
        {"name": "points", "type": "integer", "classification": "sensitive", "bounds": [0, 12]},
        {"name": "fee", "type": "float", "classification": "sensitive", "bounds": [0, 1000]},
        {"name": "valid", "type": "boolean", "classification": "attribute"},
    ],
}
NULLS_CSV = """holder,issued,grade,points,fee,valid
1,2020-05-01,A,3,100.5,true
2,2021-06-01,,,,
3,2022-07-01,B,12,0,false
3,2022-07-01,C,1,5,true
"""
NULLS_VP = {
    "id": "licence-check",
    "product": "licences",
    "key": ["holder"],
    "answer": "each",
    "checks": [
        {"name": "eq", "column": "grade", "op": "eq", "param": "A"},
        {"name": "ne", "column": "grade", "op": "ne", "param": "Z"},
        {"name": "lt", "column": "points", "op": "lt", "param": 10},
        {"name": "le", "column": "points", "op": "le", "param": 3},
        {"name": "gt", "column": "fee", "op": "gt", "param": 100},
        {"name": "ge", "column": "fee", "op": "ge", "allowed_params": [100.5]},
        {"name": "in", "column": "grade", "op": "in", "param": ["A", "B"]},
        {"name": "between", "column": "points", "op": "between", "param": [0, 12]},
        {"name": "exists", "column": "grade", "op": "exists"},
        {"name": "bool", "column": "valid", "op": "ne", "param": False},
    ],
}


@pytest.fixture(scope="module")
def licences(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[VerificationProduct, DataProduct, Path]:
    root = tmp_path_factory.mktemp("licences")
    product = parse_manifest(NULLS_MANIFEST)
    (root / "licences.csv").write_text(NULLS_CSV, encoding="utf-8")
    load_file(product, root / "licences.csv", DataFormat.CSV, root / "licences.duckdb")
    return parse_verification_product(NULLS_VP, product), product, root / "licences.duckdb"


def test_null_cells_fail_every_check_including_exists(
    licences: tuple[VerificationProduct, DataProduct, Path], runner: VerificationRunner
) -> None:
    vp, product, path = licences
    params = {"ge": 100.5}
    full = runner.verify(vp, product, path, {"holder": 1}, params)
    assert full == {"match": True, "checks": {c.name: True for c in vp.checks}}
    nulls = runner.verify(vp, product, path, {"holder": 2}, params)
    assert nulls == {"match": False, "checks": {c.name: False for c in vp.checks}}
    batch = runner.verify_batch(
        vp, product, path, [{"subject": {"holder": h}, "params": params} for h in (2, 1, 9)]
    )
    assert batch == [nulls, full, {"match": False, "checks": {c.name: False for c in vp.checks}}]


def test_a_key_matching_several_rows_answers_false(
    licences: tuple[VerificationProduct, DataProduct, Path], runner: VerificationRunner
) -> None:
    # The manifest promises one row per holder but the loader only enforces declared
    # `unique` keys; should data break the promise, no answer mixes two records.
    vp, product, path = licences
    single = runner.run(
        vp, product, path, [_item(vp, product, {"subject": {"holder": 3}, "params": {"ge": 100.5}})]
    )
    assert single[0].found is False and single[0].answer["match"] is False
    batch = runner.verify_batch(
        vp, product, path, [{"subject": {"holder": 3}, "params": {"ge": 100.5}}] * 2
    )
    assert all(not any(a["checks"].values()) for a in batch)


def test_date_and_integer_keys(tmp_path: Path, runner: VerificationRunner) -> None:
    manifest = dict(NULLS_MANIFEST, unique=[["holder", "issued"]], max_rows_per_unit=2)
    product = parse_manifest(manifest)
    csv_text = (
        "holder,issued,grade,points,fee,valid\n5,2020-01-01,A,1,1,true\n5,2021-01-01,B,2,2,false\n"
    )
    (tmp_path / "l.csv").write_text(csv_text, encoding="utf-8")
    load_file(product, tmp_path / "l.csv", DataFormat.CSV, tmp_path / "l.duckdb")
    vp = parse_verification_product(
        {
            "id": "by-date",
            "product": "licences",
            "key": ["holder", "issued"],
            "checks": [{"name": "grade_a", "column": "grade", "op": "eq", "param": "A"}],
        },
        product,
    )
    path = tmp_path / "l.duckdb"
    assert runner.verify(vp, product, path, {"holder": 5, "issued": "2020-01-01"}) == {
        "match": True
    }
    assert runner.verify(vp, product, path, {"holder": 5, "issued": "2021-01-01"}) == {
        "match": False
    }
    with pytest.raises(InvalidRequest):  # the key is unique only with the date: no partial key
        runner.verify(vp, product, path, {"holder": 5})


# -- isolation and the connection cache ---------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "SET memory_limit = '64GB'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "ATTACH '/tmp/other.duckdb' AS other",
        "COPY (SELECT 1) TO '/tmp/out.csv'",
        "INSTALL httpfs",
        "CREATE TABLE product.t (a INTEGER)",
        "DELETE FROM product.enterprise_registry",
    ],
)
def test_the_connection_is_read_only_locked_and_offline(
    store: DemoStore, runner: VerificationRunner, sql: str
) -> None:
    with runner.cursor(store.files["enterprise_registry"]) as cursor:
        with pytest.raises(duckdb.Error):
            cursor.execute(sql)
        settings = cursor.execute(
            "SELECT current_setting('enable_external_access'), "
            "current_setting('lock_configuration'), current_setting('threads')"
        ).fetchone()
        assert settings == (False, True, runner.limits.threads)


def test_cache_eviction_and_concurrent_calls(store: DemoStore) -> None:
    runner = VerificationRunner(VerificationLimits(max_open_files=1))
    standing = store.vps["enterprise-good-standing"]
    ent = store.products["enterprise_registry"]
    households = parse_verification_product(POPULATION_OPS, store.products["population"])
    pop = store.products["population"]

    def one(n: int) -> bool:
        if n % 2:
            row = store.rows["enterprise_registry"][n % 300]
            got = runner.verify(
                standing, ent, store.files["enterprise_registry"], {"uscc": row["uscc"]}
            )
            return got == _expected(standing, ent, row, {})
        row = store.rows["population"][n % 300]
        body = _call(households, row, random.Random(n))
        got = runner.verify(
            households,
            pop,
            store.files["population"],
            body["subject"],
            body["params"],
            consent_ref="c",
        )
        return got == _expected(households, pop, row, body["params"])

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, range(80)))
    runner.close()
    assert runner.open_files == 0


def test_a_vp_of_another_product_is_a_programming_error(
    store: DemoStore, runner: VerificationRunner
) -> None:
    with pytest.raises(ValueError):
        runner.run(
            store.vps["employment-check"],
            store.products["enterprise_registry"],
            store.files["enterprise_registry"],
            [],
        )


def test_large_batches_answer_like_small_ones(store: DemoStore, runner: VerificationRunner) -> None:
    # Past IN_PREFILTER_MAX distinct keys the batch is a plain join: same answers.
    vp = parse_verification_product(ENTERPRISE_OPS, store.products["enterprise_registry"])
    product = store.products["enterprise_registry"]
    path = store.files["enterprise_registry"]
    rng = random.Random(6)
    rows = store.rows["enterprise_registry"]
    items = [_call(vp, row, rng) for row in rows] + [_call(vp, rows[0], rng)]
    assert len({it["subject"]["uscc"] for it in items}) > 256
    big = runner.verify_batch(vp, product, path, items)
    small = [
        a
        for i in range(0, len(items), 50)
        for a in runner.verify_batch(vp, product, path, items[i : i + 50])
    ]
    assert big == small
    assert big == [
        _expected(vp, product, row, it["params"])
        for row, it in zip([*rows, rows[0]], items, strict=True)
    ]
