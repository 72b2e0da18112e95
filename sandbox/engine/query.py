"""The engine's public API: ``prepare`` a query, ``execute`` it (DESIGN §5, §8).

``prepare`` parses, resolves and plans without touching data; what it returns answers a
preview (``PreparedQuery.accuracy()``) and carries the reuse key
(``normalized_sql``). ``execute`` runs the rewritten SQL in isolation, adds OpenDP
noise and post-processes (AVG, empty groups, min_group_size suppression, ORDER BY,
LIMIT). Budget charging, reuse of identical answers and auditing belong to the caller.
"""

from __future__ import annotations

import datetime as dt
import functools
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
from sandbox.engine import accuracy, cost, noise
from sandbox.engine.cost import CostLimits, QueryCost
from sandbox.engine.isolation import (
    Deadline,
    EngineLimits,
    QueryRunner,
    Row,
    Statement,
    StoredColumnsSQL,
    default_runner,
)
from sandbox.engine.parse import parse
from sandbox.engine.plan import (
    MeasureKind,
    Measurement,
    Mechanism,
    OutputKind,
    OutputSpec,
    Plan,
    plan,
)
from sandbox.engine.resolve import BoundKey, KeyValue, resolve
from sandbox.errors import ColumnNotAllowed, InvalidSql

JsonScalar = str | int | float | bool | None
MAX_NOISE_SCALE = 2.0**50  # beyond this, integer noise could overflow 64 bits
MAX_SCORE = 2**62  # quantile scores are capped here (they are u64 in OpenDP)
MAX_SENSITIVITY = 2**62  # OpenDP's maps take 64-bit integer distances


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
    epsilon: Decimal
    delta_spent: float
    plan: Plan
    allocations: tuple[Allocation, ...]
    cost: QueryCost
    max_threshold_groups: int = CostLimits.max_threshold_groups

    @property
    def rewritten_sql(self) -> str:
        """The rewritten SQL over the product's raw columns (rendered on first use)."""
        return self.plan.sql

    @property
    def columns(self) -> list[str]:
        return [o.name for o in self.plan.outputs]

    @property
    def functions_used(self) -> frozenset[str]:
        """The aggregate function names a scope must grant for this query: ``count``,
        ``sum``, ``avg``, ``quantile`` (MEDIAN, QUANTILE_CONT) and ``histogram`` (any
        ``BIN(col)`` key; the COUNTs of such a query are ``histogram``, not ``count``)."""
        return self.plan.functions_used

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
        released unit), epsilon and noise scale (in the released unit), and for sums and
        quantiles the ``bounds`` its values are clipped to."""
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
            if m.kind is not MeasureKind.COUNT and m.column is not None:
                assert m.column.bounds is not None
                entry["bounds"] = list(m.column.bounds)  # clipped to (declared or CLIP)
            if a.threshold is not None:
                entry["threshold"] = a.threshold
                entry["delta"] = a.delta
            out.append(entry)
        return out

    def accuracy(self) -> list[dict[str, Any]]:
        """Return ``[{"column", "ci95"}]`` for each aggregate output column: the 95%
        half-width of its noise, computed from the noise scale alone (calibrated:
        ``released ± ci95`` covers the bounded statistic's truth 95% of the time).

        ``ci95`` is None where it depends on the data: AVG (a ratio of two noisy values;
        ``execute`` reports each row's half-width, computed from the released values, in
        ``ci95_rows``) and quantiles (the exponential mechanism's error is in rank, not
        in value units).
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
        half = accuracy.discrete_laplace_ci95(a.scale)
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
    cost_limits: CostLimits | None = None,
) -> PreparedQuery:
    """Parse, check, plan and cost ``sql`` for ``product`` under a scope.

    ``allowed_columns`` is the scope's aggregate column list, ``delta`` its delta (used
    only by the threshold mechanism for unknown group keys) and ``epsilon`` the query's
    epsilon (> 0), split evenly across the query's noisy statistics. ``cost_limits``
    (default ``CostLimits()``) bounds what the query may cost the platform; the cost
    is computed from the plan alone, never from data.

    Returns a ``PreparedQuery``. Raises ``InvalidRequest`` (bad epsilon or delta; rule
    ``min_epsilon_per_statistic``; epsilon too small to noise), ``InvalidSql``,
    ``UnsupportedQuery``, ``UnknownColumn``, ``ColumnNotAllowed`` (also rules
    ``clip_within_bounds`` and ``bounds_range``), ``TooLarge`` (rules ``max_groups``,
    ``max_cells``, ``max_quantile_cells``, ``max_quantile_candidates``,
    ``max_answer_bytes``).
    """
    limits = cost_limits if cost_limits is not None else CostLimits()
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
    query_cost = cost.query_cost(the_plan, limits)
    cost.check_cost(query_cost, limits, the_plan)
    allocations = _allocate(the_plan, eps, dlt, limits)
    return PreparedQuery(
        product=product,
        sql=sql,
        normalized_sql=resolved.normalized_sql,
        epsilon=eps,
        delta_spent=dlt if any(a.threshold is not None for a in allocations) else 0.0,
        plan=the_plan,
        allocations=allocations,
        cost=query_cost,
        max_threshold_groups=limits.max_threshold_groups,
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


def _allocate(
    the_plan: Plan, epsilon: Decimal, delta: float, limits: CostLimits
) -> tuple[Allocation, ...]:
    # Sequential composition inside the query: each distinct measurement gets an equal
    # share of epsilon (DESIGN §8); docs/engine.md explains why this is per measurement.
    measurements = the_plan.measurements
    cost.check_epsilon_share(epsilon / len(measurements), len(measurements), limits)
    share = _split(epsilon, len(measurements))
    if share <= 0:
        raise InvalidRequest("epsilon is too small to split", {"field": "epsilon"})
    out: list[Allocation] = []
    for m in measurements:
        # Checked before OpenDP sees them: its maps take 64-bit distances, and noise
        # beyond 2^50 could overflow 64-bit values (all from bounds and epsilon alone).
        if m.sensitivity > MAX_SENSITIVITY:
            assert m.column is not None  # counts have sensitivity k <= 10,000
            raise ColumnNotAllowed(
                f"the bounds of {m.column.name} are too wide to noise exactly (one unit "
                f"could move the {m.kind.value} by {m.sensitivity} integer units, over 2^62); "
                f"ask with tighter bounds, CLIP({m.column.name}, lo, hi)",
                {"clause": "SELECT", "column": m.column.name, "rule": "bounds_range"},
            )
        if m.sensitivity / share > MAX_NOISE_SCALE:
            raise _too_noisy(epsilon, m)
        if m.mechanism is Mechanism.DISCRETE_LAPLACE:
            a = Allocation(m, share, noise.laplace_scale(m.sensitivity, share))
        elif m.mechanism is Mechanism.NOISY_MAX:
            a = Allocation(m, share, noise.noisy_min_scale(m.sensitivity, share))
        else:
            scale, threshold = noise.threshold_params(m.sensitivity, share, delta)
            a = Allocation(m, share, scale, threshold, delta)
        if a.scale > MAX_NOISE_SCALE:
            raise _too_noisy(epsilon, m)
        out.append(a)
    return tuple(out)


def _too_noisy(epsilon: Decimal, m: Measurement) -> InvalidRequest:
    hint = f", or tighter bounds with CLIP({m.column.name}, lo, hi)" if m.column else ""
    return InvalidRequest(
        f"epsilon {epsilon} is too small for this query: the noise would exceed the "
        f"engine's numeric range; ask for a larger epsilon or fewer aggregates{hint}",
        {"field": "epsilon", "rule": "noise_range"},
    )


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

    Uses ``runner`` (default: the process-wide ``WorkerPool``), which runs the SQL and
    then the release step (``release_rows``: OpenDP noise and post-processing) in its
    worker process, both within ``limits.timeout_s``: exact aggregates never reach
    this process, and the whole engine work is bounded in time (and, by the cost
    limits checked at ``prepare``, in size). ``tenant`` (the calling enterprise) keeps
    one caller within its fair share of a pool's workers. Raises ``QueryTimeout`` (503
    ``unavailable``, ``details.retry_after``) at the time limit or when no worker frees
    up in time, ``QueryFailed`` (413 ``too_large``) on the memory limit or an engine
    failure; nothing is released then.
    """
    active = runner if runner is not None else default_runner()
    finish = functools.partial(release_rows, prepared)
    answer: Answer = active.run_and_finish(
        Path(db_path), prepared.statement, limits, finish, tenant=tenant
    )
    return answer


@dataclass
class _Group:
    key: tuple[KeyValue, ...]
    exact: dict[str, Any]
    noisy: dict[str, Any]


@dataclass
class _OutRow:
    values: list[JsonScalar]
    sort_keys: list[Any]
    ci95: dict[str, float | None]  # per-row half-widths (AVG columns)


def release_rows(
    prepared: PreparedQuery, rows: Sequence[Row], deadline: Deadline | None = None
) -> Answer:
    """Return the DP answer for the exact per-group rows of ``prepared.rewritten_sql``:
    draw OpenDP noise for every measurement of every released group, then
    post-process (AVG, clamping, min_group_size, ORDER BY, LIMIT, accuracy).

    Each call draws fresh noise: it is one release, to be charged as such. Raises
    ``QueryTimeout`` if ``deadline`` passes (checked between OpenDP calls).
    """
    check = deadline.check if deadline is not None else _no_deadline
    the_plan = prepared.plan
    keys = the_plan.keys
    nkeys = len(keys)
    measurements = the_plan.measurements
    by_key: dict[tuple[KeyValue, ...], dict[str, Any]] = {}
    for row in rows:
        key = tuple(_key_value(v, k) for v, k in zip(row[:nkeys], keys, strict=True))
        by_key[key] = {m.alias: v for m, v in zip(measurements, row[nkeys:], strict=True)}

    groups: list[_Group]
    check()
    if the_plan.selector is not None:
        groups = _threshold_groups(prepared, by_key)
    else:
        domains = [k.values or () for k in keys]
        groups = [_Group(key, by_key.get(key, {}), {}) for key in itertools.product(*domains)]

    for a in prepared.allocations:
        m = a.measurement
        if m.alias == the_plan.selector:
            continue
        check()
        if m.mechanism is Mechanism.NOISY_MAX:
            for g in groups:
                check()
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
    out_rows: list[_OutRow] = []
    averages = [o for o in the_plan.outputs if o.kind is OutputKind.AVG]
    pending: dict[str, list[tuple[float, int]]] = {o.name: [] for o in averages}
    pending_rows: dict[str, list[_OutRow]] = {o.name: [] for o in averages}
    count_halves = {
        o.name: int(prepared._laplace_ci(o.measures[0]))
        for o in the_plan.outputs
        if o.kind is OutputKind.COUNT
    }
    for g in groups:
        suppressed = (
            the_plan.suppressor is not None
            and min_size is not None
            and g.noisy[the_plan.suppressor] < min_size
        )
        if suppressed and nkeys:
            continue  # post-processing: the group's noisy count is below min_group_size
        out = _OutRow([], [], {})
        for spec in the_plan.outputs:
            if spec.kind is OutputKind.KEY:
                assert spec.key_index is not None
                raw = g.key[spec.key_index]
                out.values.append(_key_output(raw, keys[spec.key_index]))
                out.sort_keys.append(raw)
                continue
            released = None
            if spec.kind in (OutputKind.AVG, OutputKind.COUNT):
                out.ci95[spec.name] = None
            if spec.kind is OutputKind.AVG and not suppressed:
                pending_rows[spec.name].append(out)
            if not suppressed:
                released = _aggregate_value(prepared, spec, g, pending.get(spec.name, []))
            if spec.kind is OutputKind.COUNT and not suppressed:
                out.ci95[spec.name] = accuracy.clamped_count_ci95(
                    int(g.noisy[spec.measures[0]]), count_halves[spec.name]
                )
            out.values.append(released)
            out.sort_keys.append(released)
        out_rows.append(out)

    check()
    for spec in averages:
        halves = _average_ci95(prepared, spec, pending[spec.name])
        for out, half in zip(pending_rows[spec.name], halves, strict=True):
            out.ci95[spec.name] = half

    ordered = _order(out_rows, the_plan)
    widths = prepared.accuracy()
    for entry in widths:
        name = entry["column"]
        if name in pending or name in count_halves:
            per_row = [r.ci95.get(name) for r in ordered]
            entry["ci95_rows"] = per_row
        if name in pending:
            # An average's half-width depends on its row: one number is calibrated for
            # every row only when there is one row.
            entry["ci95"] = per_row[0] if len(per_row) == 1 else None
    return Answer(
        columns=prepared.columns,
        rows=[r.values for r in ordered],
        accuracy=widths,
        epsilon_spent=prepared.epsilon,
        delta_spent=prepared.delta_spent,
    )


def _no_deadline() -> None:
    return None


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
    if len(kept) > prepared.max_threshold_groups:
        # Post-processing of the threshold's output: release the keys with the largest
        # noisy counts, so the release's cost is bounded by the plan (cost.py).
        largest = sorted(kept, key=lambda t: (-kept[t], t))[: prepared.max_threshold_groups]
        kept = {t: kept[t] for t in largest}
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
        # Codes are in range by construction; clamping keeps any value-dependent
        # surprise from becoming an error (any per-row code keeps the sensitivity).
        per_code[min(max(int(code), 0), 2 * ncand)] += int(count)
    n = sum(per_code)
    scores = []
    below = 0  # #{code <= 2i}
    for i in range(ncand):
        below += per_code[2 * i] + (per_code[2 * i - 1] if i > 0 else 0)
        equal = per_code[2 * i + 1]
        # Capped (1-Lipschitz, so the sensitivity holds) to fit OpenDP's u64 scores.
        scores.append(min(abs(den * below - num * (n - equal)), MAX_SCORE))
    return scores


def _aggregate_value(
    prepared: PreparedQuery, spec: OutputSpec, g: _Group, pending: list[tuple[float, int]]
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
    noisy_count = int(g.noisy[spec.measures[1]])
    count = max(noisy_count, 1)
    centred = Fraction(int(g.noisy[m0])) * measure.quantum
    lo, hi = column.bounds
    mean = float(measure.center + centred / count)
    value = min(max(mean, float(lo)), float(hi))
    # Its 95% half-width needs the noisy centred sum and count (see _average_ci95).
    pending.append((float(centred), noisy_count))
    return value


def _average_ci95(
    prepared: PreparedQuery, spec: OutputSpec, pending: list[tuple[float, int]]
) -> list[float]:
    """The 95% half-widths of one AVG column's released rows (accuracy.average_ci95:
    the error of center + S'/C' is exactly (Z_S - m Z_C) / C')."""
    if not pending:
        return []
    column = spec.column
    assert column is not None and column.bounds is not None
    centred, count = (prepared.allocation(alias) for alias in spec.measures)
    lo, hi = column.bounds
    halves = accuracy.average_ci95(
        sum_scale=centred.scale * float(centred.measurement.quantum),
        count_scale=count.scale,
        sums=[s for s, _ in pending],
        center=float(centred.measurement.center),
        counts=[c for _, c in pending],
        lo=float(lo),
        hi=float(hi),
    )
    return [float(h) for h in halves]


def _order(rows: list[_OutRow], the_plan: Plan) -> list[_OutRow]:
    ordered = list(rows)
    for key in reversed(the_plan.order_by):
        present = [r for r in ordered if r.sort_keys[key.position] is not None]
        missing = [r for r in ordered if r.sort_keys[key.position] is None]
        present.sort(key=lambda r: _sortable(r.sort_keys[key.position]), reverse=key.descending)
        ordered = missing + present if key.nulls_first else present + missing
    start = the_plan.offset
    stop = None if the_plan.limit is None else start + the_plan.limit
    return ordered[start:stop]


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
