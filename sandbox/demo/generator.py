"""Deterministic synthetic public data for the demo products (docs/demo-data.md).

Three tables shaped like what a city's big-data bureau holds:

- ``enterprise_registry``: one row per enterprise, keyed by a valid unified social
  credit code (GB 32100-2015, with a GB 11714 organisation code inside) and carrying a
  legal representative with a valid identity number (GB 11643-1999);
- ``social_insurance``: employment spells (one row per person and employer), whose
  employers are enterprises of the registry generated with the same seed;
- ``population``: one row per household.

Row ``i`` of a table draws only from its own ``random.Random`` seeded by (seed,
table, i), and identifiers come from keyed permutations of the row index, so:
the same seed gives the same bytes; any row can be recomputed alone (that is how an
insurance row finds its employer's credit code without holding the registry in
memory); identifiers never collide. Only ``Random.random`` and ``Random.randrange``
are used, whose outputs Python keeps stable across versions. Rows are streamed to
the CSV file one at a time, so ten million rows need no more memory than ten.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import math
import os
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Generic, TypeVar

from products.check_characters import USCC_ALPHABET
from products.errors import InvalidRequest
from sandbox.demo.permutation import Permutation
from sandbox.demo.reference import (
    BIRTH_DIVISIONS,
    BRAND_CHARS,
    CITY,
    DISTRICTS,
    DOTTED_NAMES_FEMALE,
    DOTTED_NAMES_MALE,
    GIVEN_ANY,
    GIVEN_FEMALE,
    GIVEN_MALE,
    INDUSTRIES,
    SURNAMES,
    District,
    Industry,
)
from sandbox.verification.codes import make_prc_id, make_uscc

Progress = Callable[[str, float], None]
T = TypeVar("T")

DEFAULT_SEED = 20260101
# Dates are fixed, never "today": the same seed must give the same file on any day.
DATA_AS_OF = dt.date(2025, 12, 31)
MAX_ROWS = 100_000_000  # the organisation-code space of the registry (10^8)
PRODUCTS = ("enterprise_registry", "social_insurance", "population")

ENTERPRISE_COLUMNS = (
    "uscc",
    "name",
    "legal_rep_name",
    "legal_rep_id",
    "district",
    "industry",
    "registered_capital",
    "status",
    "abnormal_list",
    "founded_on",
)
INSURANCE_COLUMNS = (
    "person_id",
    "employer_uscc",
    "district",
    "start_month",
    "last_paid_month",
    "months_paid",
    "base_wage",
    "status",
)
POPULATION_COLUMNS = (
    "household_id",
    "district",
    "household_size",
    "head_age",
    "head_sex",
    "hukou",
    "housing",
    "members_over_60",
    "children_under_18",
    "annual_income",
    "income_band",
)

# Contribution bases (缴费基数) in yuan per month: the demo's floor and cap.
WAGE_FLOOR = 2300
WAGE_CAP = 36000
CAPITAL_CAP = 100_000_000  # the manifest's bound: 1亿元
INCOME_CAP = 2_000_000
INCOME_BANDS = (
    (30_000, "below_30k"),
    (60_000, "30k_60k"),
    (120_000, "60k_120k"),
    (250_000, "120k_250k"),
    (math.inf, "250k_plus"),
)


@dataclass(frozen=True)
class DemoSizes:
    """Row counts of the demo tables (the default starts ``sandbox demo`` in seconds)."""

    enterprises: int = 2000
    social_insurance: int = 5000
    population: int = 3000


class _Weighted(Generic[T]):
    """A fixed weighted choice drawing one ``random()`` per pick (version-stable)."""

    def __init__(self, items: Sequence[T], weights: Sequence[float]) -> None:
        self._items = items
        self._cum = list(accumulate(weights))
        self._total = self._cum[-1]

    def pick(self, rng: random.Random) -> T:
        # bisect_right skips zero-weight items; min() guards a product rounding up to
        # the total.
        i = bisect.bisect_right(self._cum, rng.random() * self._total)
        return self._items[min(i, len(self._items) - 1)]


def _pick(rng: random.Random, seq: Sequence[T]) -> T:
    return seq[rng.randrange(len(seq))]


def _normal(rng: random.Random) -> float:
    """A standard normal draw (Box–Muller on two ``random()`` calls)."""
    u = 1.0 - rng.random()  # in (0, 1]: log is finite
    return math.sqrt(-2.0 * math.log(u)) * math.cos(2.0 * math.pi * rng.random())


def _row_rng(seed: int, table: int, index: int) -> random.Random:
    # Distinct (seed, table, index) give distinct integer seeds; MT's init_by_array
    # spreads them into unrelated streams.
    return random.Random((seed << 96) | (table << 64) | index)


def _month(d: dt.date) -> int:
    return d.year * 12 + d.month - 1


def _first_of(month: int) -> dt.date:
    return dt.date(month // 12, month % 12 + 1, 1)


def _person_name(rng: random.Random, male: bool) -> str:
    if rng.random() < 0.005:
        return _pick(rng, DOTTED_NAMES_MALE if male else DOTTED_NAMES_FEMALE)
    surname = _SURNAMES.pick(rng)
    pool = GIVEN_MALE if male else GIVEN_FEMALE
    first = _pick(rng, pool + GIVEN_ANY)
    if rng.random() < 0.25:
        return surname + first
    return surname + first + _pick(rng, pool)


_SURNAMES = _Weighted([s for s, _ in SURNAMES], [w for _, w in SURNAMES])
_ENTERPRISE_DISTRICTS = _Weighted(DISTRICTS, [d.enterprise_weight for d in DISTRICTS])
_HOUSEHOLD_DISTRICTS = _Weighted(DISTRICTS, [d.population for d in DISTRICTS])
_INDUSTRIES = _Weighted(INDUSTRIES, [i.weight for i in INDUSTRIES])
_FOUNDING_YEARS = _Weighted(
    list(range(1992, DATA_AS_OF.year + 1)),
    [1.12 ** min(y - 1992, 25) for y in range(1992, DATA_AS_OF.year + 1)],
)
# Registered capital in 10,000 yuan (万元): amounts cluster on round figures.
_ROUND_CAPITALS_WAN = (10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000, 3000, 5000, 10000)


@dataclass(frozen=True)
class Enterprise:
    """One registry row (the typed values, before formatting)."""

    uscc: str
    name: str
    legal_rep_name: str
    legal_rep_id: str
    district: District
    industry: Industry
    registered_capital: int
    status: str  # active | revoked | cancelled
    abnormal_list: bool
    founded_on: dt.date

    def row(self) -> tuple[str, ...]:
        return (
            self.uscc,
            self.name,
            self.legal_rep_name,
            self.legal_rep_id,
            self.district.name,
            self.industry.section,
            str(self.registered_capital),
            self.status,
            "true" if self.abnormal_list else "false",
            self.founded_on.isoformat(),
        )


class EnterpriseRegistry:
    """Enterprise ``i`` of the registry generated with ``seed``, computable alone."""

    TABLE = 1

    def __init__(self, seed: int, size: int, cache: int = 65_536) -> None:
        self.seed = seed
        self.size = size
        # Organisation-code bodies: 8 digits (older registrations) or ``MA`` plus six
        # characters of the USCC alphabet (the post-2015 style). Both spaces are
        # permuted by the row index, so no two enterprises share a code.
        self._digits = Permutation(10**8, f"{seed}/org-code/digits")
        self._ma = Permutation(31**6, f"{seed}/org-code/ma")
        self._cache: OrderedDict[int, Enterprise] = OrderedDict()
        self._cache_size = cache

    def _org_body(self, i: int, founded: dt.date) -> str:
        if founded.year >= 2016:
            n = self._ma(i)
            chars = []
            for _ in range(6):
                n, r = divmod(n, 31)
                chars.append(USCC_ALPHABET[r])
            return "MA" + "".join(chars)
        return f"{self._digits(i):08d}"

    def get(self, i: int) -> Enterprise:
        """Return enterprise ``i`` (0 <= i < size); recently used rows are cached."""
        hit = self._cache.get(i)
        if hit is not None:
            self._cache.move_to_end(i)
            return hit
        ent = self._make(i)
        self._cache[i] = ent
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return ent

    def _make(self, i: int) -> Enterprise:
        rng = _row_rng(self.seed, self.TABLE, i)
        district = _ENTERPRISE_DISTRICTS.pick(rng)
        year = _FOUNDING_YEARS.pick(rng)
        start = dt.date(year, 1, 1)
        last = min(dt.date(year, 12, 31), DATA_AS_OF)
        founded = start + dt.timedelta(days=rng.randrange((last - start).days + 1))
        # Market-regulation authority (9), enterprise (1), the district's division code.
        uscc = make_uscc("9", "1", district.code, self._org_body(i, founded))
        industry = _INDUSTRIES.pick(rng)
        name = self._name(rng, industry)
        male = rng.random() < 0.72
        age = 24 + int(36 * rng.random() ** 1.4)
        born = founded - dt.timedelta(days=365 * age + rng.randrange(365))
        seq = rng.randrange(500) * 2 + (1 if male else 0)  # odd sequence: male
        legal_rep_id = make_prc_id(_pick(rng, BIRTH_DIVISIONS), born, seq)
        legal_rep_name = _person_name(rng, male)
        capital = self._capital(rng)
        years = (DATA_AS_OF - founded).days / 365.25
        u = rng.random()
        p_cancelled = min(0.04 + 0.012 * years, 0.35)
        p_revoked = min(0.01 + 0.006 * years, 0.15)
        status = (
            "cancelled"
            if u < p_cancelled
            else "revoked"
            if u < p_cancelled + p_revoked
            else "active"
        )
        p_abnormal = {"active": 0.04, "revoked": 0.55, "cancelled": 0.01}[status]
        return Enterprise(
            uscc=uscc,
            name=name,
            legal_rep_name=legal_rep_name,
            legal_rep_id=legal_rep_id,
            district=district,
            industry=industry,
            registered_capital=capital,
            status=status,
            abnormal_list=rng.random() < p_abnormal,
            founded_on=founded,
        )

    @staticmethod
    def _name(rng: random.Random, industry: Industry) -> str:
        brand = _pick(rng, BRAND_CHARS) + _pick(rng, BRAND_CHARS)
        word = _pick(rng, industry.words)
        u = rng.random()
        if u < 0.55:
            return f"{CITY}{brand}{word}有限公司"
        if u < 0.85:
            return f"{CITY}市{brand}{word}有限公司"
        if u < 0.93:
            return f"{CITY}{brand}{word}股份有限公司"
        if u < 0.97:
            # Branded subsidiaries put the place in full-width parentheses, as the
            # name registration rules require: 某某科技（广州）有限公司.
            return f"{brand}{word}（{CITY}）有限公司"
        return f"{CITY}{brand}{word}集团有限公司"

    @staticmethod
    def _capital(rng: random.Random) -> int:
        while True:
            wan = 100.0 * math.exp(1.5 * _normal(rng))  # median 100万元
            if wan * 10_000 <= CAPITAL_CAP:
                break
        if rng.random() < 0.7:
            # Snap to the nearest round amount in log space (100万, 500万, 1000万...).
            wan = min(_ROUND_CAPITALS_WAN, key=lambda r: abs(math.log(r / wan)))
        else:
            wan = max(1.0, float(f"{wan:.2g}"))
        return round(wan * 10_000)


@dataclass(frozen=True)
class _PersonSpace:
    """Identity numbers of insured people: a bijection from person index to
    (division, birth date, sequence), so no two people share a number."""

    seed: int
    first_birth: dt.date = dt.date(1960, 1, 1)
    last_birth: dt.date = dt.date(2004, 12, 31)

    @property
    def days(self) -> int:
        return (self.last_birth - self.first_birth).days + 1

    def permutation(self) -> Permutation:
        return Permutation(len(BIRTH_DIVISIONS) * self.days * 1000, f"{self.seed}/person-id")

    def identity(self, perm: Permutation, p: int) -> tuple[str, dt.date]:
        n = perm(p)
        n, seq = divmod(n, 1000)
        division, day = divmod(n, self.days)
        born = self.first_birth + dt.timedelta(days=day)
        return make_prc_id(BIRTH_DIVISIONS[division], born, seq), born


def _enterprise_rows(seed: int, rows: int) -> Iterator[tuple[str, ...]]:
    registry = EnterpriseRegistry(seed, rows, cache=0)
    for i in range(rows):
        yield registry.get(i).row()


_SPELLS = _Weighted([1, 2, 3, 4], [55, 25, 13, 7])
MAX_SPELLS = 4  # the manifest's max_rows_per_unit


def _insurance_rows(seed: int, rows: int, enterprises: int) -> Iterator[tuple[str, ...]]:
    registry = EnterpriseRegistry(seed, enterprises)
    space = _PersonSpace(seed)
    perm = space.permutation()
    emitted = 0
    p = 0
    as_of = _month(DATA_AS_OF)
    while emitted < rows:
        rng = _row_rng(seed, 2, p)
        person_id, born = space.identity(perm, p)
        p += 1
        wanted = _SPELLS.pick(rng)
        wanted = min(wanted, rows - emitted, enterprises)
        adult = _month(born) + 18 * 12
        end = as_of if rng.random() < 0.85 else as_of - 1 - rng.randrange(36)
        paying = end == as_of
        spells: list[tuple[str, ...]] = []
        used: set[int] = set()
        while len(spells) < wanted and end >= adult:
            ent = None
            for _ in range(20):  # an employer founded before the spell ends
                j = rng.randrange(enterprises)
                cand = registry.get(j)
                if j not in used and _month(cand.founded_on) <= end:
                    ent = cand
                    used.add(j)
                    break
            if ent is None:
                break
            earliest = max(adult, _month(ent.founded_on), _month(dt.date(1995, 1, 1)))
            if earliest > end:
                break
            months = 1 + int(rng.random() ** 1.6 * 150)
            months = min(months, end - earliest + 1, 360)
            start = end - months + 1
            if rng.random() < 0.2:
                wage = WAGE_FLOOR  # many employers declare the floor
            else:
                wage = round(min(max(7000 * math.exp(0.5 * _normal(rng)), WAGE_FLOOR), WAGE_CAP))
            active = paying and not spells and ent.status == "active"
            spells.append(
                (
                    person_id,
                    ent.uscc,
                    ent.district.name,
                    _first_of(start).isoformat(),
                    _first_of(end).isoformat(),
                    str(months),
                    str(wage),
                    "paying" if active else "stopped",
                )
            )
            end = start - 1 - rng.randrange(7)  # a gap of 0-6 months between jobs
        yield from reversed(spells)
        emitted += len(spells)


_HOUSEHOLD_SIZES = _Weighted(list(range(1, 11)), [28, 30, 22, 12, 5, 1.5, 0.8, 0.4, 0.2, 0.1])


def _population_rows(seed: int, rows: int) -> Iterator[tuple[str, ...]]:
    ids = Permutation(10**10, f"{seed}/household-id")
    for i in range(rows):
        rng = _row_rng(seed, 3, i)
        district = _HOUSEHOLD_DISTRICTS.pick(rng)
        size = _HOUSEHOLD_SIZES.pick(rng)
        head_age = int(min(max(47 + 15 * _normal(rng), 18), 100))
        local = rng.random() < (0.7 if district.code in {"440103", "440104"} else 0.52)
        owned = rng.random() < (0.7 if local else 0.2)
        housing = "owned" if owned else "rented" if rng.random() < 0.92 else "other"
        elderly_others = sum(rng.random() < 0.12 for _ in range(size - 1))
        p_child = 0.5 if 25 <= head_age < 55 else 0.1
        children = sum(rng.random() < p_child for _ in range(size - 1 - elderly_others))
        over_60 = elderly_others + (head_age >= 60)
        per_capita = 65_000 * math.exp(0.6 * _normal(rng))
        income = min(per_capita * size**0.8, INCOME_CAP)
        income = round(income, -2)
        band = next(label for limit, label in INCOME_BANDS if income < limit)
        yield (
            f"{district.code}{ids(i):010d}",
            district.name,
            str(size),
            str(head_age),
            "male" if rng.random() < 0.58 else "female",
            "local" if local else "non_local",
            housing,
            str(over_60),
            str(children),
            f"{income:.0f}",
            band,
        )


def iter_rows(
    product_id: str, rows: int, seed: int = DEFAULT_SEED, *, enterprises: int | None = None
) -> Iterator[tuple[str, ...]]:
    """Yield the data rows (as CSV strings, header excluded) of a demo table.

    ``enterprises`` is the size of the registry that insurance rows point into
    (default: ``DemoSizes().enterprises``). Raises ``InvalidRequest`` for an unknown
    product or an impossible size.
    """
    _check_size("rows", rows)
    if seed < 0:
        raise InvalidRequest("the seed must be a non-negative integer", {"seed": seed})
    if product_id == "enterprise_registry":
        return _enterprise_rows(seed, rows)
    if product_id == "social_insurance":
        n = DemoSizes().enterprises if enterprises is None else enterprises
        _check_size("enterprises", n)
        return _insurance_rows(seed, rows, n)
    if product_id == "population":
        return _population_rows(seed, rows)
    raise InvalidRequest(
        f"no demo product {product_id!r}", {"product": product_id, "known": list(PRODUCTS)}
    )


def _check_size(name: str, n: int) -> None:
    if not 1 <= n <= MAX_ROWS:
        raise InvalidRequest(f"{name} must be between 1 and {MAX_ROWS:,}", {name: n})


def header(product_id: str) -> tuple[str, ...]:
    """Return the column names of a demo table, in file order."""
    return {
        "enterprise_registry": ENTERPRISE_COLUMNS,
        "social_insurance": INSURANCE_COLUMNS,
        "population": POPULATION_COLUMNS,
    }[product_id]


def generate(
    product_id: str,
    rows: int,
    out: Path,
    seed: int = DEFAULT_SEED,
    *,
    enterprises: int | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write ``rows`` rows of a demo table as UTF-8 CSV (header first) to ``out``.

    The file is written under a temporary name and renamed into place, so ``out``
    is either absent or complete. Same arguments, same bytes. Returns ``out``.
    Raises ``InvalidRequest`` (see ``iter_rows``).
    """
    data = iter_rows(product_id, rows, seed, enterprises=enterprises)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.with_name(out.name + ".partial")
    step = max(rows // 100, 1)
    try:
        with work.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header(product_id))
            for n, row in enumerate(data, 1):
                writer.writerow(row)
                if progress and n % step == 0:
                    progress(product_id, n / rows)
        os.replace(work, out)
    finally:
        work.unlink(missing_ok=True)
    if progress:
        progress(product_id, 1.0)
    return out


def write_all(
    out_dir: Path,
    sizes: DemoSizes = DemoSizes(),
    seed: int = DEFAULT_SEED,
    *,
    progress: Progress | None = None,
) -> dict[str, Path]:
    """Write the three demo tables to ``out_dir/<product>.csv``.

    Returns the path of each file by product id. The insurance table's employers
    are enterprises of the registry written here (same seed, ``sizes.enterprises``).
    """
    return {
        "enterprise_registry": generate(
            "enterprise_registry",
            sizes.enterprises,
            out_dir / "enterprise_registry.csv",
            seed,
            progress=progress,
        ),
        "social_insurance": generate(
            "social_insurance",
            sizes.social_insurance,
            out_dir / "social_insurance.csv",
            seed,
            enterprises=sizes.enterprises,
            progress=progress,
        ),
        "population": generate(
            "population", sizes.population, out_dir / "population.csv", seed, progress=progress
        ),
    }
