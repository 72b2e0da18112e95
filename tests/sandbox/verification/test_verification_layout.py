"""The product-file layout proposed for the loader (docs/verification.md,
"Performance"): rows written in privacy-unit order, so that a keyed lookup reads one
row group. Built here from loaded demo files with the proposed statement; the
answers must not change, only the speed (measured by bench/verification_lookup.py)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pytest

from products.loader import DUCKDB_TYPES
from sandbox.verification.lookup import VerificationRunner

if TYPE_CHECKING:
    from conftest import DemoStore


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def proposed_layout(source: Path, dest: Path, table: str, unit: str, columns: list[str]) -> None:
    """The proposed ``_write_table`` statement, with the loaded table standing in for
    the loader's ``staged`` table (whose typed columns it already has)."""
    con = duckdb.connect(str(dest))
    try:
        con.execute("ATTACH ? AS src (READ_ONLY)", [str(source)])
        select = ", ".join(_quote(c) for c in columns)
        con.execute(
            f"CREATE TABLE {_quote(table)} AS SELECT {select}, "
            f"(row_number() OVER (PARTITION BY {_quote(unit)} ORDER BY _draw))::INTEGER "
            "AS _unit_rank "
            f"FROM (SELECT *, random() AS _draw FROM src.{_quote(table)}) "
            f"ORDER BY {_quote(unit)}"
        )
    finally:
        con.close()


@pytest.mark.parametrize(
    ("pid", "vp_id"),
    [
        ("enterprise_registry", "enterprise-good-standing"),
        ("social_insurance", "social-insurance-months"),
    ],
)
def test_unit_ordered_layout_gives_the_same_answers(
    store: DemoStore, runner: VerificationRunner, tmp_path: Path, pid: str, vp_id: str
) -> None:
    product = store.products[pid]
    sorted_file = tmp_path / f"{pid}.duckdb"
    proposed_layout(
        store.files[pid], sorted_file, pid, product.privacy_unit, list(product.column_names)
    )
    con = duckdb.connect(str(sorted_file), read_only=True)
    unit = _quote(product.privacy_unit)
    ordered, ranks_ok, count = con.execute(
        f"SELECT bool_and(prev IS NULL OR prev <= u), "
        f"bool_and(_unit_rank BETWEEN 1 AND n), count(*) FROM ("
        f"SELECT {unit} AS u, lag({unit}) OVER (ORDER BY rowid) AS prev, _unit_rank, "
        f"count(*) OVER (PARTITION BY {unit}) AS n FROM {_quote(pid)})"
    ).fetchone() or (None, None, None)
    types = [r[1] for r in con.execute(f"DESCRIBE {_quote(pid)}").fetchall()]
    con.close()
    assert ordered and ranks_ok and count == len(store.rows[pid])
    assert types[:-1] == [DUCKDB_TYPES[c.type] for c in product.columns]

    vp = store.vps[vp_id]
    rng = random.Random(7)
    items = []
    for row in rng.sample(store.rows[pid], 100):
        item: dict[str, object] = {"subject": {k: row[k] for k in vp.key}, "consent_ref": "c"}
        item["params"] = {
            c.name: rng.choice(c.allowed_params) for c in vp.checks if c.allowed_params
        }
        items.append(item)
    before = runner.verify_batch(vp, product, store.files[pid], items)
    after = runner.verify_batch(vp, product, sorted_file, items)
    assert before == after
    assert any(a["match"] for a in after) and not all(a["match"] for a in after)
