"""The engine's public API: ``prepare`` a query, ``execute`` it (DESIGN §5, §8).

``prepare`` parses, resolves and plans without touching data; what it returns answers a
preview (``PreparedQuery.accuracy()``) and carries the reuse key
(``normalized_sql``). ``execute`` runs the rewritten SQL in isolation, adds OpenDP
noise and post-processes (AVG, empty groups, min_group_size suppression, ORDER BY,
LIMIT). Budget charging, reuse of identical answers and auditing belong to the caller.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any

from products.errors import InvalidRequest
from products.manifest import Column, ColumnType, DataProduct
from sandbox.engine import noise
from sandbox.engine.isolation import (
    EngineLimits,
    QueryRunner,
    Row,
    Statement,
    StoredColumnsSQL,
    WorkerPool,
    default_runner,
)
from sandbox.engine.parse import parse
from sandbox.engine.plan import Measurement, Mechanism, OutputKind, OutputSpec, Plan, plan
from sandbox.engine.resolve import BoundKey, KeyValue, resolve
from sandbox.errors import InvalidSql

JsonScalar = str | int | float | bool | None
MAX_NOISE_SCALE = 2.0**50  # beyond this, integer noise could overflow 64 bits


@dataclass(frozen=True)
class Allocation:
    """The privacy parameters of one measurement."""

    measurement: Measurement
    epsilon: float
    scale: float
    threshold: int | None = None
    delta: float = 0.0


@dataclass(frozen=True)
class PreparedQuery:
    """A parsed, checked and planned query; nothing in it has touched data."""

    product: DataProduct
    sql: str
    normalized_sql: str
    rewritten_sql: str
    epsilon: Decimal
    delta_spent: float
    plan: Plan
    allocations: tuple[Allocation, ...]

    @property
    def columns(self) -> list[str]:
        return [o.name for o in self.plan.outputs]

    @property
    def statement(self) -> Statement:
        """What ``execute`` runs: the SQL reading the loader's stored fixed-point
        columns where the product file has them, else ``rewritten_sql`` (same values)."""
        if self.plan.stored_sql is None:
            return self.rewritten_sql
        return StoredColumnsSQL(
            table=self.product.id,
            columns=self.plan.stored_columns,
            sql=self.plan.stored_sql,
            fallback=self.rewritten_sql,
        )

    def allocation(self, alias: str) -> Allocation:
        for a in self.allocations:
            if a.measurement.alias == alias:
                return a
        raise KeyError(alias)

    def measurements(self) -> list[dict[str, Any]]:
        """Return, per noisy statistic: its kind, column, mechanism, sensitivity (in the
        released unit), epsilon and noise scale (in the released unit)."""
        out = []
        for a in self.allocations:
            m = a.measurement
            unit = float(m.quantum)
            entry: dict[str, Any] = {
                "name": m.alias,
                "kind": m.kind.value,
                "column": m.column.name if m.column else None,
                "mechanism": m.mechanism.value,
                "sensitivity": m.sensitivity * unit,
                "epsilon": a.epsilon,
                "scale": a.scale * unit,
            }
            if a.threshold is not None:
                entry["threshold"] = a.threshold
                entry["delta"] = a.delta
            out.append(entry)
        return out

    def accuracy(self) -> list[dict[str, Any]]:
        """Return ``[{"column", "ci95"}]`` for each aggregate output column: the 95%
        half-width of its noise, computed from the noise scale alone.

        ``ci95`` is None where it depends on the data: AVG (a ratio of two noisy values;
        ``execute`` reports an approximation from the released values) and quantiles
        (the exponential mechanism's error is in rank, not in value units).
        """
        out: list[dict[str, Any]] = []
        for spec in self.plan.outputs:
            if spec.kind in (OutputKind.COUNT, OutputKind.SUM):
                out.append({"column": spec.name, "ci95": self._laplace_ci(spec.measures[0])})
            elif spec.kind in (OutputKind.AVG, OutputKind.QUANTILE):
                out.append({"column": spec.name, "ci95": None})
        return out

    def _laplace_ci(self, alias: str) -> int | float:
        a = self.allocation(alias)
        half = noise.discrete_laplace_ci95(a.scale)
        quantum = a.measurement.quantum
        return half if quantum == 1 else float(half * quantum)


@dataclass(frozen=True)
class Answer:
    """A DP answer: only noisy aggregates (and public or threshold-released keys)."""

    columns: list[str]
    rows: list[list[JsonScalar]]
    accuracy: list[dict[str, Any]]
    epsilon_spent: Decimal
    delta_spent: float = 0.0


# --- prepare -------------------------------------------------------------------------


def prepare(
    product: DataProduct,
    sql: str,
    *,
    allowed_columns: frozenset[str] | Iterable[str],
    delta: float | Decimal,
    epsilon: Decimal,
) -> PreparedQuery:
    """Parse, check and plan ``sql`` for ``product`` under a scope.

    ``allowed_columns`` is the scope's aggregate column list, ``delta`` its delta (used
    only by the threshold mechanism for unknown group keys) and ``epsilon`` the query's
    epsilon (> 0), split evenly across the query's noisy statistics.

    Returns a ``PreparedQuery``. Raises ``InvalidRequest`` (bad epsilon or delta),
    ``InvalidSql``, ``UnsupportedQuery``, ``UnknownColumn``, ``ColumnNotAllowed``,
    ``TooLarge``.
    """
    eps = _check_epsilon(epsilon)
    dlt = _check_delta(delta)
    try:
        parsed = parse(sql)
        resolved = resolve(parsed, product, allowed_columns=frozenset(allowed_columns), delta=dlt)
        the_plan = plan(resolved)
    except RecursionError:
        # sqlglot and the checks walk expressions recursively; 20,000 characters of
        # "((((" or "NOT NOT ..." exceed Python's stack before any rule applies.
        raise InvalidSql(
            "the query nests its expressions too deeply to be checked; flatten them",
            {"rule": "max_depth"},
        ) from None
    allocations = _allocate(the_plan, eps, dlt)
    return PreparedQuery(
        product=product,
        sql=sql,
        normalized_sql=resolved.normalized_sql,
        rewritten_sql=the_plan.sql,
        epsilon=eps,
        delta_spent=dlt if any(a.threshold is not None for a in allocations) else 0.0,
        plan=the_plan,
        allocations=allocations,
    )


def _check_epsilon(epsilon: Decimal | int) -> Decimal:
    try:
        eps = epsilon if isinstance(epsilon, Decimal) else Decimal(str(epsilon))
    except (InvalidOperation, ValueError):
        raise InvalidRequest("epsilon must be a decimal number", {"field": "epsilon"}) from None
    if isinstance(epsilon, bool) or not eps.is_finite() or eps <= 0:
        raise InvalidRequest("epsilon must be a finite number > 0", {"field": "epsilon"})
    return eps


def _check_delta(delta: float | Decimal) -> float:
    try:
        value = float(delta)
    except (TypeError, ValueError):
        raise InvalidRequest("delta must be a number in [0, 1)", {"field": "delta"}) from None
    if isinstance(delta, bool) or not (0 <= value < 1):
        raise InvalidRequest("delta must be a number in [0, 1)", {"field": "delta"})
    return value


def _split(epsilon: Decimal, parts: int) -> float:
    """Return epsilon / parts as a float that never exceeds the exact share."""
    share = epsilon / parts
    value = float(share)
    while Decimal(value) > share:
        value = math.nextafter(value, 0.0)
    return value


def _allocate(the_plan: Plan, epsilon: Decimal, delta: float) -> tuple[Allocation, ...]:
    # Sequential composition inside the query: each distinct measurement gets an equal
    # share of epsilon (DESIGN §8); docs/engine.md explains why this is per measurement.
    measurements = the_plan.measurements
    share = _split(epsilon, len(measurements))
    if share <= 0:
        raise InvalidRequest("epsilon is too small to split", {"field": "epsilon"})
    out: list[Allocation] = []
    for m in measurements:
        if m.mechanism is Mechanism.DISCRETE_LAPLACE:
            a = Allocation(m, share, noise.laplace_scale(m.sensitivity, share))
        elif m.mechanism is Mechanism.NOISY_MAX:
            a = Allocation(m, share, noise.noisy_min_scale(m.sensitivity, share))
        else:
            scale, threshold = noise.threshold_params(m.sensitivity, share, delta)
            a = Allocation(m, share, scale, threshold, delta)
        if a.scale > MAX_NOISE_SCALE:
            raise InvalidRequest(
                f"epsilon {epsilon} is too small for this query: the noise would exceed the "
                "engine's numeric range; ask for a larger epsilon or fewer aggregates",
                {"field": "epsilon"},
            )
        out.append(a)
    return tuple(out)


# --- execute -------------------------------------------------------------------------


def execute(
    prepared: PreparedQuery,
    db_path: Path,
    limits: EngineLimits,
    *,
    runner: QueryRunner | None = None,
    tenant: str | None = None,
) -> Answer:
    """Run ``prepared`` on the product version at ``db_path`` and return the DP answer.

    Uses ``runner`` (default: the process-wide ``WorkerPool``); ``tenant`` (e.g. the
    calling enterprise) keeps one caller within its fair share of a pool's workers.
    Raises ``QueryFailed`` (timeout, memory, engine failure) and ``ServiceUnavailable``
    (no worker within the pool's wait). The caller must have charged the budget first.
    """
    active = runner if runner is not None else default_runner()
    if tenant is not None and isinstance(active, WorkerPool):
        rows = active.run(Path(db_path), prepared.statement, limits, tenant=tenant)
    else:
        rows = active.run(Path(db_path), prepared.statement, limits)
    return _release(prepared, rows)


@dataclass
class _Group:
    key: tuple[KeyValue, ...]
    exact: dict[str, Any]
    noisy: dict[str, Any]


def _release(prepared: PreparedQuery, rows: Sequence[Row]) -> Answer:
    the_plan = prepared.plan
    keys = the_plan.keys
    nkeys = len(keys)
    measurements = the_plan.measurements
    by_key: dict[tuple[KeyValue, ...], dict[str, Any]] = {}
    for row in rows:
        key = tuple(_key_value(v, k) for v, k in zip(row[:nkeys], keys, strict=True))
        by_key[key] = {m.alias: v for m, v in zip(measurements, row[nkeys:], strict=True)}

    groups: list[_Group]
    if the_plan.selector is not None:
        groups = _threshold_groups(prepared, by_key)
    else:
        domains = [k.values or () for k in keys]
        groups = [_Group(key, by_key.get(key, {}), {}) for key in itertools.product(*domains)]

    for a in prepared.allocations:
        m = a.measurement
        if m.alias == the_plan.selector:
            continue
        if m.mechanism is Mechanism.NOISY_MAX:
            for g in groups:
                scores = quantile_scores(g.exact.get(m.alias), m)
                idx = noise.select_min(
                    scores, score_sensitivity=m.sensitivity, scale=a.scale, epsilon=a.epsilon
                )
                g.noisy[m.alias] = m.candidates[idx]
            continue
        exact = [int(g.exact.get(m.alias) or 0) for g in groups]
        noisy = noise.release_integers(
            exact, sensitivity=m.sensitivity, scale=a.scale, epsilon=a.epsilon
        )
        for g, value in zip(groups, noisy, strict=True):
            g.noisy[m.alias] = value

    min_size = prepared.product.min_group_size
    out_rows: list[tuple[list[JsonScalar], list[Any]]] = []
    avg_ci: dict[str, float] = {}
    for g in groups:
        suppressed = (
            the_plan.suppressor is not None
            and min_size is not None
            and g.noisy[the_plan.suppressor] < min_size
        )
        if suppressed and nkeys:
            continue  # post-processing: the group's noisy count is below min_group_size
        values: list[JsonScalar] = []
        sort_keys: list[Any] = []
        for spec in the_plan.outputs:
            if spec.kind is OutputKind.KEY:
                assert spec.key_index is not None
                raw = g.key[spec.key_index]
                values.append(_key_output(raw, keys[spec.key_index]))
                sort_keys.append(raw)
                continue
            released = None if suppressed else _aggregate_value(prepared, spec, g, avg_ci)
            values.append(released)
            sort_keys.append(released)
        out_rows.append((values, sort_keys))

    ordered = _order(out_rows, the_plan)
    accuracy = prepared.accuracy()
    for entry in accuracy:
        if entry["column"] in avg_ci:
            entry["ci95"] = avg_ci[entry["column"]]
    return Answer(
        columns=prepared.columns,
        rows=ordered,
        accuracy=accuracy,
        epsilon_spent=prepared.epsilon,
        delta_spent=prepared.delta_spent,
    )


def _threshold_groups(
    prepared: PreparedQuery, by_key: dict[tuple[KeyValue, ...], dict[str, Any]]
) -> list[_Group]:
    the_plan = prepared.plan
    selector = the_plan.selector
    assert selector is not None
    a = prepared.allocation(selector)
    assert a.threshold is not None
    encoded = {json.dumps(list(key)): key for key in by_key}
    counts = {text: int(by_key[key][selector] or 0) for text, key in encoded.items()}
    kept = noise.release_above_threshold(
        counts,
        sensitivity=a.measurement.sensitivity,
        scale=a.scale,
        threshold=a.threshold,
        epsilon=a.epsilon,
        delta=a.delta,
    )
    groups = []
    for text in sorted(kept):
        key = encoded[text]
        groups.append(_Group(key, by_key[key], {selector: kept[text]}))
    return groups


def _key_value(value: Any, key: BoundKey) -> KeyValue:
    """DuckDB's value of a key column → the manifest's representation."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _key_output(value: KeyValue, key: BoundKey) -> JsonScalar:
    if key.binned and isinstance(value, int):
        return bin_label(key.column, value)
    return value


def bin_label(column: Column, index: int) -> str:
    """Return the label of bin ``index`` of ``column``: "[lo, hi)", the last "[lo, hi]"."""
    assert column.bins is not None
    lo, hi = column.bins[index], column.bins[index + 1]
    close = "]" if index == len(column.bins) - 2 else ")"
    return f"[{_number_text(lo)}, {_number_text(hi)}{close}"


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def quantile_scores(histogram: dict[int, int] | None, m: Measurement) -> list[int]:
    """Return OpenDP's quantile scores ``|den·#(x<c) − num·(n − #(x=c))|`` for each
    candidate c, from DuckDB's counts per code (code = 2j + [x = c_j], j = #{c < x})."""
    assert m.alpha is not None
    num, den = m.alpha.numerator, m.alpha.denominator
    ncand = len(m.candidates)
    per_code = [0] * (2 * ncand + 1)
    for code, count in (histogram or {}).items():
        per_code[int(code)] += int(count)
    n = sum(per_code)
    scores = []
    below = 0  # #{code <= 2i}
    for i in range(ncand):
        below += per_code[2 * i] + (per_code[2 * i - 1] if i > 0 else 0)
        equal = per_code[2 * i + 1]
        scores.append(abs(den * below - num * (n - equal)))
    return scores


def _aggregate_value(
    prepared: PreparedQuery, spec: OutputSpec, g: _Group, avg_ci: dict[str, float]
) -> JsonScalar:
    kind = spec.kind
    m0 = spec.measures[0]
    if kind is OutputKind.COUNT:
        return max(int(g.noisy[m0]), 0)  # post-processing: a count is never negative
    if kind is OutputKind.QUANTILE:
        value = g.noisy[m0]
        return int(value) if isinstance(value, int) else float(value)
    measure = prepared.allocation(m0).measurement
    if kind is OutputKind.SUM:
        if measure.quantum == 1:
            return int(g.noisy[m0])
        return float(g.noisy[m0] * measure.quantum)
    # AVG = center + (noisy centred sum) / (noisy count), clamped to the bounds.
    column = spec.column
    assert column is not None and column.bounds is not None
    count = max(int(g.noisy[spec.measures[1]]), 1)
    centred = Fraction(int(g.noisy[m0])) * measure.quantum
    lo, hi = column.bounds
    mean = float(measure.center + centred / count)
    value = min(max(mean, float(lo)), float(hi))
    # Approximate 95% half-width (first order, conservative): (h_S + |S/C| h_C) / C.
    h_sum = noise.discrete_laplace_ci95(prepared.allocation(m0).scale) * float(measure.quantum)
    h_count = noise.discrete_laplace_ci95(prepared.allocation(spec.measures[1]).scale)
    half = (h_sum + abs(float(centred) / count) * h_count) / max(count - h_count, 1)
    half = min(half, float(hi) - float(lo))
    avg_ci[spec.name] = max(avg_ci.get(spec.name, 0.0), half)
    return value


def _order(
    rows: list[tuple[list[JsonScalar], list[Any]]], the_plan: Plan
) -> list[list[JsonScalar]]:
    ordered = list(rows)
    for key in reversed(the_plan.order_by):
        present = [r for r in ordered if r[1][key.position] is not None]
        missing = [r for r in ordered if r[1][key.position] is None]
        present.sort(key=lambda r: _sortable(r[1][key.position]), reverse=key.descending)
        ordered = missing + present if key.nulls_first else present + missing
    start = the_plan.offset
    stop = None if the_plan.limit is None else start + the_plan.limit
    return [values for values, _ in ordered[start:stop]]


def _sortable(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    return value


def json_scalar(value: Any, column: Column | None = None) -> JsonScalar:
    """Return ``value`` as a JSON scalar (dates as ISO strings)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.date):
        return value.isoformat()
    if column is not None and column.type is ColumnType.INTEGER:
        return int(value)
    return float(value)
