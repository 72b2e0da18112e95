"""Answer indexes (sandbox/verification/index.py): what they hold, when they are used,
and that they never answer differently from the DuckDB point lookup."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from products.manifest import parse_manifest
from products.verification import parse_verification_product
from sandbox.verification.index import (
    MAX_VARIANTS,
    AnswerIndex,
    Layout,
    index_path,
    indexable,
    key_halves,
    key_text,
)
from sandbox.verification.lookup import VerificationLimits, VerificationRunner
from sandbox.verification.request import parse_item

if TYPE_CHECKING:
    from conftest import DemoStore

_KEY_VALUES = st.lists(
    st.one_of(
        st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(_KEY_VALUES)
def test_python_key_hash_equals_duckdbs_over_the_same_columns(values: list[Any]) -> None:
    # The index is built by DuckDB and probed by Python: both must derive the same
    # 128 bits from the same key, for any text and any 64-bit integer.
    con = duckdb.connect()
    cols = ", ".join(
        f"CAST(${i + 1} AS {'BIGINT' if isinstance(v, int) else 'VARCHAR'}) AS c{i}"
        for i, v in enumerate(values)
    )
    text = " || ".join(
        f"CAST(strlen(CAST(c{i} AS VARCHAR)) AS VARCHAR) || ':' || CAST(c{i} AS VARCHAR)"
        for i in range(len(values))
    )
    got = con.execute(
        f"SELECT md5_number_upper(k), md5_number_lower(k) FROM (SELECT {text} AS k "
        f"FROM (SELECT {cols}))",
        values,
    ).fetchone()
    assert got == key_halves(values)


def test_key_text_is_injective_across_column_boundaries() -> None:
    assert key_text(["ab", "c"]) != key_text(["a", "bc"])
    assert key_text(["1:a"]) != key_text(["1", "a"])
    assert key_text([12]) == key_text(["12"])  # an integer key is matched as its decimal text
    with pytest.raises(TypeError):
        key_text([1.5])  # type: ignore[list-item]


def test_an_index_holds_one_entry_per_distinct_key_and_its_variant_bits(
    store: DemoStore, tmp_path: Path
) -> None:
    vp = store.vps["enterprise-capital-band"]
    product = store.products["enterprise_registry"]
    runner = VerificationRunner(VerificationLimits(build_in_background=False))
    index = runner.prepare(vp, product, store.files["enterprise_registry"])
    assert index is not None
    rows = store.rows["enterprise_registry"]
    assert len(index) == len({r["uscc"] for r in rows})
    check = vp.checks[0]
    assert check.allowed_params is not None
    for row in random.Random(5).sample(rows, 50):
        bits = index.lookup((row["uscc"],))
        assert bits is not None
        capital = float(row["registered_capital"]) if row["registered_capital"] else None
        for offset, threshold in enumerate(check.allowed_params):
            expected = capital is not None and capital >= threshold  # type: ignore[operator]
            assert bool(bits >> offset & 1) == expected
    assert bits < 1 << len(check.allowed_params)  # no bit beyond the variants
    runner.close()


def test_calls_are_answered_from_the_index_once_built(
    store: DemoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    vp = store.vps["enterprise-good-standing"]
    product = store.products["enterprise_registry"]
    path = store.files["enterprise_registry"]
    runner = VerificationRunner(VerificationLimits(build_in_background=False))
    row = store.rows["enterprise_registry"][0]
    first = runner.verify(vp, product, path, {"uscc": row["uscc"]})
    # Close every DuckDB instance and make opening one fail: the answer must now come
    # from the memory-mapped index alone.
    runner.close()
    monkeypatch.setattr("sandbox.verification.lookup.duckdb.connect", _refuse)
    assert runner.verify(vp, product, path, {"uscc": row["uscc"]}) == first


def _refuse(path: str) -> duckdb.DuckDBPyConnection:
    raise duckdb.IOException("no DuckDB in this test")


def test_background_build_answers_by_point_lookups_meanwhile(store: DemoStore) -> None:
    vp = store.vps["enterprise-established-before"]
    product = store.products["enterprise_registry"]
    path = store.files["enterprise_registry"]
    index_path(vp, product, path).unlink(missing_ok=True)
    runner = VerificationRunner()  # background builds
    row = store.rows["enterprise_registry"][1]
    body = {"uscc": row["uscc"]}
    answers = {
        str(runner.verify(vp, product, path, body, {"established_by": "2020-12-31"}))
        for _ in range(200)
    }
    assert len(answers) == 1  # the same answer before, during and after the build
    runner.close()


def test_a_corrupt_index_file_is_rebuilt(store: DemoStore) -> None:
    vp = store.vps["enterprise-good-standing"]
    product = store.products["enterprise_registry"]
    path = store.files["enterprise_registry"]
    target = index_path(vp, product, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"\x93NUMPY garbage")
    runner = VerificationRunner(VerificationLimits(build_in_background=False))
    row = store.rows["enterprise_registry"][2]
    expected = VerificationRunner(VerificationLimits(answer_indexes=False)).verify(
        vp, product, path, {"uscc": row["uscc"]}
    )
    assert runner.verify(vp, product, path, {"uscc": row["uscc"]}) == expected
    assert len(AnswerIndex(target, indexable(vp, product))) > 0  # type: ignore[arg-type]
    runner.close()


def test_duplicate_keys_answer_not_found_as_point_lookups_do(tmp_path: Path) -> None:
    # A product whose declared unique key is broken by the data: both ways of
    # answering must say "not found" for the duplicated key and answer the others.
    manifest = parse_manifest(
        {
            "id": "plates",
            "title": "Plates",
            "privacy_unit": "owner",
            "max_rows_per_unit": 5,
            "unique": [["plate"]],
            "columns": [
                {"name": "owner", "type": "string", "classification": "identifier"},
                {"name": "plate", "type": "string", "classification": "identifier"},
                {
                    "name": "year",
                    "type": "integer",
                    "classification": "attribute",
                    "bounds": [1900, 2100],
                },
            ],
        }
    )
    # The loader refuses such data; the file is written directly, as a damaged or
    # hand-made product file would be.
    data = tmp_path / "plates.duckdb"
    with duckdb.connect(str(data)) as con:
        con.execute("CREATE TABLE plates (owner VARCHAR, plate VARCHAR, year BIGINT)")
        con.execute(
            "INSERT INTO plates VALUES ('a', '粤A1', 2020), ('b', '粤A2', 2021), "
            "('c', '粤A2', 2019), ('d', '粤A3', NULL), ('e', NULL, 2022)"
        )
    vp = parse_verification_product(
        {
            "id": "plate-year",
            "product": "plates",
            "key": ["plate"],
            "checks": [{"name": "recent", "column": "year", "op": "ge", "param": 2020}],
        },
        manifest,
    )
    point = VerificationRunner(VerificationLimits(answer_indexes=False))
    indexed = VerificationRunner(VerificationLimits(build_in_background=False))
    found = {}
    for plate in ("粤A1", "粤A2", "粤A3", "粤A9"):
        item = parse_item(vp, manifest, {"subject": {"plate": plate}})
        outcome = indexed.run(vp, manifest, data, [item])
        assert outcome == point.run(vp, manifest, data, [item])
        found[plate] = (outcome[0].found, outcome[0].answer["match"])
    assert found == {
        "粤A1": (True, True),
        "粤A2": (False, False),
        "粤A3": (True, False),
        "粤A9": (False, False),
    }
    assert indexed.indexes  # the index was used, not the point lookup


def test_products_with_too_many_variants_are_not_indexed(store: DemoStore) -> None:
    product = store.products["enterprise_registry"]
    thresholds = list(range(1000, 1000 * (MAX_VARIANTS + 2), 1000))
    vp = parse_verification_product(
        {
            "id": "many-bands",
            "product": "enterprise_registry",
            "key": ["uscc"],
            "checks": [
                {"name": name, "column": "registered_capital", "op": "ge", "allowed_params": t}
                for name, t in (("a", thresholds[:50]), ("b", thresholds[50:]))
            ],
        },
        product,
    )
    assert Layout.of(vp) is None
    assert indexable(vp, product) is None
    runner = VerificationRunner(VerificationLimits(build_in_background=False))
    assert runner.prepare(vp, product, store.files["enterprise_registry"]) is None
    row = store.rows["enterprise_registry"][3]
    answer = runner.verify(
        vp,
        product,
        store.files["enterprise_registry"],
        {"uscc": row["uscc"]},
        {"a": 1000, "b": thresholds[50]},
    )
    assert set(answer) == {"match"}
