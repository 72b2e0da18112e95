"""What a query costs the platform, computed from its plan alone (DESIGN §8, §2.9).

"A query's cost to the platform is bounded before it runs (groups × statistics, answer
size) ... a query over those bounds is refused with a clear error, whatever its
epsilon." The release step draws OpenDP noise per released cell, and report-noisy-max
per group and quantile over every candidate; its cost is known from the plan before
any data is read, so it is checked at ``prepare``: a query over a limit is refused
with 413 ``too_large`` naming the limit (issue 13: 72,600 groups × 16 quantiles at
epsilon 1e-9 took 327 s of the request thread).

Measured on the reference machine (2 cores, OpenDP 0.16): a discrete-Laplace cell
costs ~10 µs, a noisy-max draw ~100 µs plus 1–2.5 µs per candidate; the defaults keep
the release step of any accepted query to a few seconds of one worker process.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from products.errors import InvalidRequest, TooLarge
from sandbox.engine.plan import Mechanism, OutputKind, Plan
from sandbox.engine.resolve import BoundKey

NUMBER_BYTES = 25  # the longest JSON number the engine writes: -1.2345678901234567e+100
UNKNOWN_KEY_BYTES = 256  # assumed JSON size of a threshold-released key value


@dataclass(frozen=True)
class CostLimits:
    """The limits a prepared query must meet (defaults in docs/engine.md)."""

    max_groups: int = 100_000  # groups released: the public key sets' product
    max_threshold_groups: int = 10_000  # released keys of a thresholded GROUP BY (largest kept)
    max_cells: int = 100_000  # noisy values drawn: groups × statistics
    max_quantile_cells: int = 10_000  # noisy-max draws: groups × quantiles
    max_quantile_candidates: int = 1_000_000  # candidate scores noised, all quantiles
    max_answer_bytes: int = 4_000_000  # JSON size of rows and per-row accuracy, bound
    min_epsilon_per_statistic: Decimal = Decimal("0.001")

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int | Decimal) or value <= 0:
                raise ValueError(f"{name} must be a positive number")


@dataclass(frozen=True)
class QueryCost:
    """The cost of a prepared query, from its plan alone (never from data).

    ``groups`` is the number of released groups (for a thresholded GROUP BY, the cap
    on released keys); ``cells`` the noisy values drawn (groups × statistics, the
    implicit COUNT(*) of a threshold or of min_group_size included); ``quantile_cells``
    the report-noisy-max draws; ``quantile_candidates`` the candidate scores they noise;
    ``answer_bytes`` an upper bound of the answer's JSON (rows and per-row accuracy;
    for threshold-released string keys it assumes at most 256 bytes a key).
    """

    groups: int
    cells: int
    quantile_cells: int
    quantile_candidates: int
    answer_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def query_cost(plan: Plan, limits: CostLimits) -> QueryCost:
    """Return the cost of ``plan`` (pure: reads no data)."""
    thresholded = plan.selector is not None
    groups = (
        limits.max_threshold_groups
        if thresholded
        else math.prod(len(k.values or ()) for k in plan.keys)
    )
    quantiles = [m for m in plan.measurements if m.mechanism is Mechanism.NOISY_MAX]
    cells = groups * len(plan.measurements)
    rows = groups if plan.limit is None else min(groups, plan.limit)
    per_row = 2  # [ ]
    for output in plan.outputs:
        per_row += 1  # the comma
        if output.kind is OutputKind.KEY:
            assert output.key_index is not None
            per_row += _key_bytes(plan.keys[output.key_index])
        else:
            per_row += NUMBER_BYTES
        if output.kind in (OutputKind.COUNT, OutputKind.AVG):
            per_row += NUMBER_BYTES + 1  # its entry of ci95_rows
    return QueryCost(
        groups=groups,
        cells=cells,
        quantile_cells=groups * len(quantiles),
        quantile_candidates=groups * sum(len(m.candidates) for m in quantiles),
        answer_bytes=rows * per_row,
    )


def _key_bytes(key: BoundKey) -> int:
    if key.values is None:
        return UNKNOWN_KEY_BYTES
    if key.binned:
        assert key.column.bins is not None
        return max(len(json.dumps(f"[{e!r}, {e!r}]")) for e in key.column.bins)
    return max((len(json.dumps(v)) for v in key.values), default=4)


def check_cost(cost: QueryCost, limits: CostLimits, plan: Plan) -> None:
    """Raise ``TooLarge`` (413 ``too_large``) naming the first limit ``cost`` exceeds;
    ``details``: ``rule``, ``limit``, ``value`` and the whole ``cost``."""
    keys = ", ".join(k.label for k in plan.keys) or "(no GROUP BY)"
    checks = [
        (
            "max_groups",
            cost.groups,
            limits.max_groups,
            f"GROUP BY {keys} has {cost.groups} key combinations; at most "
            f"{limits.max_groups} groups can be released in one query",
        ),
        (
            "max_quantile_cells",
            cost.quantile_cells,
            limits.max_quantile_cells,
            f"the query asks for {cost.quantile_cells} quantiles ({cost.groups} groups × "
            f"{cost.quantile_cells // max(cost.groups, 1)} MEDIAN/QUANTILE_CONT); at most "
            f"{limits.max_quantile_cells} are allowed in one query",
        ),
        (
            "max_quantile_candidates",
            cost.quantile_candidates,
            limits.max_quantile_candidates,
            f"the query's quantiles score {cost.quantile_candidates} candidates (groups × "
            f"candidates per quantile); at most {limits.max_quantile_candidates} are allowed "
            "in one query: fewer groups or quantiles, or CLIP(col, lo, hi) to a narrower "
            "range of an integer column (fewer candidates)",
        ),
        (
            "max_cells",
            cost.cells,
            limits.max_cells,
            f"the query releases {cost.cells} noisy values ({cost.groups} groups × "
            f"{cost.cells // max(cost.groups, 1)} statistics); at most {limits.max_cells} "
            "are allowed in one query: fewer groups or aggregates",
        ),
        (
            "max_answer_bytes",
            cost.answer_bytes,
            limits.max_answer_bytes,
            f"the answer could be {cost.answer_bytes} bytes; at most "
            f"{limits.max_answer_bytes} are allowed: fewer groups or columns, or a LIMIT",
        ),
    ]
    for rule, value, limit, message in checks:
        if value > limit:
            details: dict[str, Any] = {"rule": rule, "limit": limit, "value": value}
            if rule == "max_groups":
                details["clause"] = "GROUP BY"
            details["cost"] = cost.as_dict()
            raise TooLarge(message, details)


def check_epsilon_share(share: Decimal, statistics: int, limits: CostLimits) -> None:
    """Raise ``InvalidRequest`` (rule ``min_epsilon_per_statistic``) when a statistic's
    share of epsilon is below the minimum: tiny shares buy only noise, and make noise
    scales (and quantile tie-breaking) needlessly extreme."""
    minimum = limits.min_epsilon_per_statistic
    if share < minimum:
        raise InvalidRequest(
            f"epsilon is split across {statistics} noisy statistics, giving each "
            f"{share:.3g}; at least {minimum} per statistic is required, so ask for "
            f"epsilon >= {minimum * statistics} or fewer aggregates",
            {
                "field": "epsilon",
                "rule": "min_epsilon_per_statistic",
                "limit": str(minimum),
                "statistics": statistics,
                "minimum_epsilon": str(minimum * statistics),
            },
        )
