"""Identifier check characters (GB 32100-2015, GB 11643-1999): the loader's SQL rules
agree with python-stdnum, and a load with one bad code is refused naming row and column."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.cn import ric, uscc

from products.check_characters import check_character_rules
from products.errors import InvalidRequest
from products.loader import DataFormat, load_file
from products.manifest import DataProduct, KeyFormat, parse_manifest

DIGITS = "0123456789"
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # GB 32100-2015: no I, O, S, V, Z
# Divisions python-stdnum's place table knows for any birth year since 1900, so that
# stdnum.cn.ric.is_valid holds for the codes generated below.
DIVISIONS = ("110105", "310104")


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    yield c
    c.close()


def sql_rule(con: duckdb.DuckDBPyConnection, fmt: KeyFormat, code: str) -> str | None:
    """The first rule ``code`` breaks under the loader's SQL, or None when it is valid."""
    rules = check_character_rules(fmt, "v")
    whens = " ".join(f"WHEN {cond} THEN '{rule}'" for cond, rule in rules)
    row = con.execute(f"SELECT CASE {whens} END FROM (SELECT ?::VARCHAR AS v)", [code]).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def stdnum_valid(fmt: KeyFormat, code: str) -> bool:
    """stdnum's verdict on the code as stored: valid, and already in canonical form
    (stdnum upper-cases first; stored values must not need it, see the module)."""
    module = uscc if fmt is KeyFormat.USCC else ric
    return bool(module.is_valid(code)) and module.compact(code) == code


@st.composite
def valid_usccs(draw: st.DrawFn) -> str:
    # Authority, entity type and division are digits in real codes (stdnum requires it).
    body = draw(st.text(DIGITS, min_size=8, max_size=8))
    body += draw(st.text(USCC_ALPHABET, min_size=9, max_size=9))
    return body + uscc.calc_check_digit(body)


@st.composite
def valid_prc_ids(draw: st.DrawFn) -> str:
    division = draw(st.sampled_from(DIVISIONS))
    born = draw(st.dates(dt.date(1900, 1, 1), dt.date(2020, 12, 31)))
    body = f"{division}{born:%Y%m%d}{draw(st.integers(0, 999)):03d}"
    return body + ric.calc_check_digit(body + "0")


VALID = {KeyFormat.USCC: valid_usccs(), KeyFormat.PRC_ID: valid_prc_ids()}
ANY_CHARACTER = st.characters(exclude_categories=["Cs"])


@pytest.mark.parametrize("fmt", [KeyFormat.USCC, KeyFormat.PRC_ID])
@given(data=st.data())
def test_sql_accepts_valid_codes_as_stdnum_does(
    con: duckdb.DuckDBPyConnection, fmt: KeyFormat, data: st.DataObject
) -> None:
    code = data.draw(VALID[fmt])
    assert stdnum_valid(fmt, code)
    assert sql_rule(con, fmt, code) is None


@pytest.mark.parametrize("fmt", [KeyFormat.USCC, KeyFormat.PRC_ID])
@given(data=st.data())
def test_sql_agrees_with_stdnum_on_codes_with_one_character_changed(
    con: duckdb.DuckDBPyConnection, fmt: KeyFormat, data: st.DataObject
) -> None:
    code = data.draw(VALID[fmt])
    i = data.draw(st.integers(0, len(code) - 1))
    new = data.draw(st.one_of(st.sampled_from(USCC_ALPHABET + "x"), ANY_CHARACTER))
    changed = code[:i] + new + code[i + 1 :]
    assert (sql_rule(con, fmt, changed) is None) == stdnum_valid(fmt, changed)


@given(st.text(USCC_ALPHABET + "IOSVZa-", min_size=17, max_size=19))
def test_sql_uscc_rule_is_stdnums_check_character(
    con: duckdb.DuckDBPyConnection, code: str
) -> None:
    # Any position may hold a letter here (stdnum.is_valid also wants digits at 1-8,
    # which the loader does not require), so the reference is stdnum's check character.
    expected = (
        len(code) == 18
        and set(code) <= set(USCC_ALPHABET)
        and uscc.calc_check_digit(code[:17]) == code[17]
    )
    assert (sql_rule(con, KeyFormat.USCC, code) is None) == expected


@given(st.text(DIGITS + "Xx ١", min_size=17, max_size=19))
def test_sql_prc_id_rule_is_stdnums_check_character(
    con: duckdb.DuckDBPyConnection, code: str
) -> None:
    expected = (
        len(code) == 18 and set(code[:17]) <= set(DIGITS) and ric.calc_check_digit(code) == code[17]
    )
    assert (sql_rule(con, KeyFormat.PRC_ID, code) is None) == expected


@pytest.mark.parametrize(
    ("fmt", "code", "rule"),
    [
        (KeyFormat.USCC, "91350100M000100Y4", "must be 18 characters (GB 32100-2015)"),
        (KeyFormat.USCC, "91350100M000100Y4O", "must use digits"),
        (KeyFormat.USCC, "91350100m000100Y43", "must use digits"),
        (KeyFormat.USCC, "91350100M000100Y44", "check character does not match (GB 32100"),
        (KeyFormat.PRC_ID, "11010519491231002", "must be 18 characters (GB 11643-1999)"),
        (KeyFormat.PRC_ID, "11010519491231002x", "upper-case X"),
        (KeyFormat.PRC_ID, "110105194912310021", "check character does not match (GB 11643"),
    ],
)
def test_each_rule_is_named(
    con: duckdb.DuckDBPyConnection, fmt: KeyFormat, code: str, rule: str
) -> None:
    broken = sql_rule(con, fmt, code)
    assert broken is not None and rule in broken


def test_the_standards_examples_are_valid(con: duckdb.DuckDBPyConnection) -> None:
    assert sql_rule(con, KeyFormat.USCC, "91350100M000100Y43") is None  # stdnum's example
    assert sql_rule(con, KeyFormat.PRC_ID, "11010519491231002X") is None  # GB 11643's
    assert sql_rule(con, KeyFormat.PRC_ID, "440524188001010014") is None


def test_formats_without_a_check_character_have_no_rules() -> None:
    with pytest.raises(ValueError, match="no check character"):
        check_character_rules(KeyFormat.PERSON_NAME, "v")


# --- loading -------------------------------------------------------------------------


def registry(max_rows_per_unit: int = 1) -> DataProduct:
    """A registry keyed by credit code; one row per unit (no bucketing) by default."""
    return parse_manifest(
        {
            "id": "registry",
            "title": "Registry",
            "privacy_unit": "uscc",
            "max_rows_per_unit": max_rows_per_unit,
            "unique": [["uscc"]] if max_rows_per_unit == 1 else [],
            "columns": [
                {
                    "name": "uscc",
                    "type": "string",
                    "classification": "identifier",
                    "format": "uscc",
                },
                {
                    "name": "rep_id",
                    "type": "string",
                    "classification": "identifier",
                    "format": "prc_id",
                },
                {"name": "note", "type": "string", "classification": "attribute"},
            ],
        }
    )


GOOD = [
    ("91350100M000100Y43", "11010519491231002X", "a"),
    ("91440101MA5CJQ4N59", "", "b"),  # NULL: nullable, and NULL has no check character
    ("91110000600037341L", "440524188001010014", "c"),
]


def _csv(tmp_path: Path, *rows: tuple[str, str, str]) -> Path:
    src = tmp_path / "rows.csv"
    src.write_text("uscc,rep_id,note\n" + "".join(",".join(r) + "\n" for r in rows), "utf-8")
    return src


@pytest.mark.parametrize("max_rows_per_unit", [1, 2])
def test_a_load_of_valid_codes_passes(tmp_path: Path, max_rows_per_unit: int) -> None:
    src = _csv(tmp_path, *GOOD)
    result = load_file(registry(max_rows_per_unit), src, DataFormat.CSV, tmp_path / "v1.duckdb")
    assert result.row_count == 3


@pytest.mark.parametrize("max_rows_per_unit", [1, 2])
@pytest.mark.parametrize(
    ("bad", "column", "rule"),
    [
        (("91350100M000100Y44", "", "d"), "uscc", "check character does not match"),
        (("91350100M000100Y4", "", "d"), "uscc", "must be 18 characters"),
        (("91350100M000100YI3", "", "d"), "uscc", "must use digits"),
        (("91350100M000100Y43X", "", "d"), "uscc", "must be 18 characters"),
        (("", "11010519491231002X", "d"), "uscc", "missing value"),
    ],
)
def test_one_bad_uscc_among_good_ones_refuses_the_load(
    tmp_path: Path, max_rows_per_unit: int, bad: tuple[str, str, str], column: str, rule: str
) -> None:
    src = _csv(tmp_path, GOOD[0], GOOD[1], bad, GOOD[2])
    dest = tmp_path / "v1.duckdb"
    with pytest.raises(InvalidRequest) as exc:
        load_file(registry(max_rows_per_unit), src, DataFormat.CSV, dest)
    details: dict[str, Any] = exc.value.details
    assert details["rejected"] == 1
    (rejection,) = details["first_rejections"]
    assert (rejection["line"], rejection["column"]) == (4, column)  # header is line 1
    assert rule in rejection["rule"]
    if bad[0]:
        assert bad[0] not in str(exc.value.message) + str(details), "values are never echoed"
    assert not dest.exists(), "nothing may be written when any row is bad"
    assert list(tmp_path.iterdir()) == [src]


def test_a_row_breaking_two_columns_is_one_rejection_reported_for_each(
    tmp_path: Path,
) -> None:
    bad = ("91350100M000100Y44", "11010519491231002x", "d")  # lower-case x is not stored form
    src = _csv(tmp_path, *GOOD, bad, ("91350100M000100Y4", "", "e"))
    with pytest.raises(InvalidRequest) as exc:
        load_file(registry(2), src, DataFormat.CSV, tmp_path / "v1.duckdb")
    assert exc.value.details["rejected"] == 2
    rejections = exc.value.details["first_rejections"]
    assert [(r["line"], r["column"]) for r in rejections] == [
        (5, "uscc"),
        (5, "rep_id"),
        (6, "uscc"),
    ]
    assert "upper-case X" in rejections[1]["rule"]


def test_parquet_string_codes_are_checked_too(tmp_path: Path) -> None:
    csv = _csv(tmp_path, *GOOD, ("91350100M000100Y44", "", "d"))
    pq = tmp_path / "rows.parquet"
    duckdb.execute(f"COPY (SELECT * FROM read_csv('{csv}', all_varchar = true)) TO '{pq}'")
    with pytest.raises(InvalidRequest) as exc:
        load_file(registry(), pq, DataFormat.PARQUET, tmp_path / "v1.duckdb")
    assert exc.value.details["first_rejections"] == [
        {"line": 5, "column": "uscc", "rule": "check character does not match (GB 32100-2015)"}
    ]
