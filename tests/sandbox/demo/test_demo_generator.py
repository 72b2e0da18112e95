"""The demo generator: deterministic, valid codes, consistent references, loadable."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from products.errors import InvalidRequest
from products.loader import DataFormat, load_file
from sandbox.demo import (
    PRODUCTS,
    DemoSizes,
    generate,
    header,
    iter_rows,
    manifests,
    write_all,
)
from sandbox.demo.permutation import Permutation
from sandbox.demo.reference import BIRTH_DIVISIONS, DISTRICTS, INDUSTRIES
from sandbox.verification.codes import org_code_check_char, prc_id_problem, uscc_problem

SIZES = DemoSizes(enterprises=300, social_insurance=900, population=400)
DISTRICT_CODES = {d.name: d.code for d in DISTRICTS}


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_all(tmp_path_factory.mktemp("demo"), SIZES)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, demo: dict[str, Path]) -> None:
    again = write_all(tmp_path / "again", SIZES)
    other = write_all(tmp_path / "other", SIZES, seed=7)
    for pid in PRODUCTS:
        assert _sha(again[pid]) == _sha(demo[pid])
        assert _sha(other[pid]) != _sha(demo[pid])


def test_rows_do_not_depend_on_the_table_size() -> None:
    # Row i is drawn from its own generator: a bigger table starts with the smaller one.
    small = list(iter_rows("enterprise_registry", 50))
    big = list(iter_rows("enterprise_registry", 80))
    assert big[:50] == small
    assert list(iter_rows("population", 30)) == list(iter_rows("population", 60))[:30]


def test_exact_row_counts_and_headers(demo: dict[str, Path]) -> None:
    expected = {
        "enterprise_registry": SIZES.enterprises,
        "social_insurance": SIZES.social_insurance,
        "population": SIZES.population,
    }
    for pid, path in demo.items():
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        assert tuple(rows[0]) == header(pid)
        assert len(rows) - 1 == expected[pid]
        assert all(len(r) == len(rows[0]) for r in rows)


def test_enterprises_carry_valid_consistent_codes(demo: dict[str, Path]) -> None:
    rows = _read(demo["enterprise_registry"])
    usccs = [r["uscc"] for r in rows]
    assert len(set(usccs)) == len(usccs)
    sections = {i.section for i in INDUSTRIES}
    for r in rows:
        code = r["uscc"]
        assert uscc_problem(code) is None
        assert org_code_check_char(code[8:16]) == code[16]
        assert code[:2] == "91"  # market regulation, enterprise
        assert code[2:8] == DISTRICT_CODES[r["district"]]
        assert prc_id_problem(r["legal_rep_id"]) is None
        assert r["name"].startswith("广州") or "（广州）" in r["name"]
        assert r["name"].endswith("有限公司")
        assert r["industry"] in sections
        assert r["status"] in {"active", "revoked", "cancelled"}
        assert r["abnormal_list"] in {"true", "false"}
        founded = dt.date.fromisoformat(r["founded_on"])
        born = dt.date.fromisoformat(
            f"{r['legal_rep_id'][6:10]}-{r['legal_rep_id'][10:12]}-{r['legal_rep_id'][12:14]}"
        )
        assert 18 <= (founded - born).days / 365.25 <= 75
        assert 0 < float(r["registered_capital"]) <= 100_000_000
    statuses = Counter(r["status"] for r in rows)
    assert statuses["active"] > statuses["cancelled"] > 0
    assert len({r["district"] for r in rows}) == 11


def test_insurance_rows_reference_registered_employers(demo: dict[str, Path]) -> None:
    enterprises = {r["uscc"]: r for r in _read(demo["enterprise_registry"])}
    rows = _read(demo["social_insurance"])
    per_person = Counter(r["person_id"] for r in rows)
    assert max(per_person.values()) <= 4  # the manifest's max_rows_per_unit
    assert max(per_person.values()) > 1  # job changes happen
    assert len({(r["person_id"], r["employer_uscc"]) for r in rows}) == len(rows)
    for r in rows:
        assert prc_id_problem(r["person_id"]) is None
        employer = enterprises[r["employer_uscc"]]
        assert r["district"] == employer["district"]
        start = dt.date.fromisoformat(r["start_month"])
        last = dt.date.fromisoformat(r["last_paid_month"])
        months = (last.year - start.year) * 12 + last.month - start.month + 1
        assert months == int(r["months_paid"]) and 1 <= months <= 360
        assert start >= dt.date.fromisoformat(employer["founded_on"]).replace(day=1)
        assert 2300 <= float(r["base_wage"]) <= 36000
        if r["status"] == "paying":
            assert employer["status"] == "active"
            assert last == dt.date(2025, 12, 1)


def test_households_are_plausible(demo: dict[str, Path]) -> None:
    rows = _read(demo["population"])
    assert len({r["household_id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["household_id"][:6] == DISTRICT_CODES[r["district"]]
        size = int(r["household_size"])
        assert int(r["members_over_60"]) + int(r["children_under_18"]) <= size
        if int(r["head_age"]) >= 60:
            assert int(r["members_over_60"]) >= 1
    counts = Counter(r["district"] for r in rows)
    assert counts["白云区"] > counts["从化区"]  # weighted by census population


def test_every_demo_table_loads_against_its_manifest(tmp_path: Path, demo: dict[str, Path]) -> None:
    products = manifests()
    assert set(products) == set(PRODUCTS)
    for pid, path in demo.items():
        result = load_file(products[pid], path, DataFormat.CSV, tmp_path / f"{pid}.duckdb")
        assert result.row_count == len(_read(path))
    units = load_file(
        products["social_insurance"],
        demo["social_insurance"],
        DataFormat.CSV,
        tmp_path / "again.duckdb",
    ).units
    assert units == len({r["person_id"] for r in _read(demo["social_insurance"])})


def test_generation_streams_in_bounded_memory(tmp_path: Path) -> None:
    def peak(rows: int) -> int:
        tracemalloc.start()
        try:
            generate("social_insurance", rows, tmp_path / f"si{rows}.csv", enterprises=500)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(2_000), peak(20_000)
    # Ten times the rows, about the same memory (a bounded employer cache, no rows kept).
    assert large < small * 1.5 + 256 * 1024


def test_progress_is_reported_and_files_appear_whole(tmp_path: Path) -> None:
    seen: list[tuple[str, float]] = []
    out = generate("population", 500, tmp_path / "p.csv", progress=lambda s, f: seen.append((s, f)))
    assert out.is_file() and not (tmp_path / "p.csv.partial").exists()
    assert seen[-1] == ("population", 1.0)
    assert [f for _, f in seen] == sorted(f for _, f in seen)


@pytest.mark.parametrize(
    ("product", "rows", "kwargs"),
    [
        ("nope", 10, {}),
        ("population", 0, {}),
        ("population", 100_000_001, {}),
        ("social_insurance", 10, {"enterprises": 0}),
        ("population", 10, {"seed": -1}),
    ],
)
def test_bad_arguments_are_refused(
    tmp_path: Path, product: str, rows: int, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidRequest):
        generate(product, rows, tmp_path / "x.csv", **kwargs)
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("n", [1, 2, 3, 10, 99, 1000, 4097])
def test_permutations_are_bijections(n: int) -> None:
    perm = Permutation(n, "k")
    assert sorted(perm(i) for i in range(n)) == list(range(n))
    with pytest.raises(ValueError):
        perm(n)


def test_reference_codes_are_distinct() -> None:
    # Person identity numbers are a bijection onto (division, birth date, sequence):
    # a repeated division code would give two people one number.
    assert len(set(BIRTH_DIVISIONS)) == len(BIRTH_DIVISIONS)
    assert len({d.code for d in DISTRICTS}) == len({d.name for d in DISTRICTS}) == 11
    assert [i.section for i in INDUSTRIES] == [chr(c) for c in range(ord("A"), ord("T") + 1)]
