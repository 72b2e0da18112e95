"""The operator's annual public disclosure report (公开披露, DESIGN §12), from the
audit log alone.

:func:`compute` is a pure function of audit entries (their DESIGN §7 fields and the
extension fields named below) and of the checkpoint they were taken from, so anyone
holding a bundle of the log recomputes it (:func:`compute_from_bundle`): the report
names the checkpoint (tree size and root) it was computed from, and covers the
entries of that tree whose time falls in the year (UTC).

What it counts: products registered and their data versions (``product.register``,
``product.data`` with ``product_version``), verification products defined, scopes
granted by purpose (``scope.grant`` entries carry ``purpose``; older entries without
it count as "not recorded"), scope suspensions, resumptions and revocations (by the
operator, and by the platform after enumeration flags: ``scope.review`` entries'
``flags``), calls and refusals by product and operation with refusals by code,
epsilon spent by product, and the regulator's own use of the log.
"""

from __future__ import annotations

import base64
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.bundle import iter_bundle
from audit.entry import parse_leaf
from audit.errors import MalformedBundle
from audit.note import Checkpoint, parse_note

if TYPE_CHECKING:
    from audit.log import StoredCheckpoint
    from sandbox.runtime import Runtime

VERSION = 1
NOT_RECORDED = "(not recorded)"
# The enterprise operations of DESIGN §5 and §11 (calls made under a scope).
OPERATIONS = (
    "query.aggregate",
    "query.preview",
    "verify",
    "verify.batch",
    "synthetic",
    "synthetic.preview",
    "model.train",
    "model.train.preview",
    "model.score",
    "model.score.batch",
)


def _dec(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value is not None else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def _dstr(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def _code(reason: Any) -> str:
    if isinstance(reason, str) and ":" in reason:
        return reason.split(":", 1)[0].strip()
    return "unknown"


def year_bounds(year: int) -> tuple[str, str]:
    """The RFC 3339 bounds ``[start, end)`` of ``year`` in UTC, as entry times compare."""
    return f"{year:04d}-01-01T00:00:00.000Z", f"{year + 1:04d}-01-01T00:00:00.000Z"


def compute(
    entries: Iterable[Mapping[str, Any]], year: int, *, size: int, root: str
) -> dict[str, Any]:
    """The report for ``year`` from ``entries`` (all of a tree of ``size`` entries with
    root ``root``, base64; those outside the year are skipped). Deterministic: the
    same entries give the same JSON."""
    start, end = year_bounds(year)
    n = 0
    products: dict[str, dict[str, Any]] = {}
    verification_products: list[str] = []
    purposes: Counter[str] = Counter()
    granted = 0
    transitions: Counter[str] = Counter()
    platform_suspensions = 0
    flagged: set[str] = set()
    calls: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    refusal_codes: Counter[str] = Counter()
    spent: dict[str, Decimal] = defaultdict(Decimal)
    enterprises: set[str] = set()
    supervision: Counter[str] = Counter()
    for e in entries:
        if not isinstance(e.get("index"), int) or e["index"] >= size:
            continue
        t = e.get("time")
        if not isinstance(t, str) or not start <= t < end:
            continue
        n += 1
        action, decision = e.get("action"), e.get("decision")
        raw_target = e.get("target")
        target: Mapping[str, Any] = raw_target if isinstance(raw_target, dict) else {}
        product = target.get("product") if isinstance(target.get("product"), str) else None
        allowed = decision == "allow"
        if action == "product.register" and allowed and product:
            products.setdefault(product, {"registered": t, "versions": []})
        elif action == "product.data" and allowed and product:
            item = products.setdefault(product, {"registered": None, "versions": []})
            version = e.get("product_version")
            if isinstance(version, int):
                item["versions"].append({"version": version, "loaded": t})
        elif action == "verification_product.register" and allowed:
            vp = target.get("verification_product")
            verification_products.append(vp if isinstance(vp, str) else NOT_RECORDED)
        elif action == "scope.grant" and allowed:
            granted += 1
            purpose = e.get("purpose")
            purposes[purpose if isinstance(purpose, str) and purpose else NOT_RECORDED] += 1
        elif action in ("scope.suspend", "scope.resume", "scope.revoke") and allowed:
            transitions[str(action).split(".", 1)[1]] += 1
        elif action == "scope.review" and allowed:
            for flag in e.get("flags") or []:
                if isinstance(flag, dict):
                    flagged.add(str(flag.get("scope")))
                    if flag.get("suspended"):
                        platform_suspensions += 1
        elif action in ("audit.read", "audit.export", "audit.cosign", "audit.proof"):
            supervision[str(action)] += 1
        if action in OPERATIONS:
            calls[product or NOT_RECORDED][str(action)][str(decision)] += 1
            if not allowed:
                refusal_codes[_code(e.get("reason"))] += 1
            if allowed and product:
                spent[product] += _dec(e.get("epsilon"))
                enterprise = target.get("enterprise") or e.get("actor")
                if isinstance(enterprise, str):
                    enterprises.add(enterprise)
    total_calls = sum(sum(c.values()) for ops in calls.values() for c in ops.values())
    refused = sum(c.get("deny", 0) for ops in calls.values() for c in ops.values())
    return {
        "version": VERSION,
        "year": year,
        "period": {"from": start, "to": end, "timezone": "UTC"},
        "checkpoint": {"size": size, "root": root},
        "entries": n,
        "products": {
            p: {
                "registered": v["registered"],
                "versions": sorted(v["versions"], key=lambda x: x["version"]),
            }
            for p, v in sorted(products.items())
        },
        "verification_products": sorted(verification_products),
        "scopes": {
            "granted": granted,
            "by_purpose": dict(sorted(purposes.items(), key=lambda kv: (-kv[1], kv[0]))),
            "suspended_by_operator": transitions["suspend"],
            "suspended_by_platform": platform_suspensions,
            "resumed": transitions["resume"],
            "revoked": transitions["revoke"],
            "flagged_for_enumeration": len(flagged),
        },
        "calls": {
            "total": total_calls,
            "refused": refused,
            "by_product": {
                p: {a: dict(sorted(c.items())) for a, c in sorted(ops.items())}
                for p, ops in sorted(calls.items())
            },
            "refusals_by_code": dict(sorted(refusal_codes.items())),
            "enterprises": len(enterprises),
        },
        "budget": {
            "epsilon_spent_by_product": {p: _dstr(v) for p, v in sorted(spent.items())},
            "epsilon_spent_total": _dstr(sum(spent.values(), Decimal(0))),
        },
        "supervision": dict(sorted(supervision.items())),
    }


def compute_from_log(rt: Runtime, year: int, cp: StoredCheckpoint) -> dict[str, Any]:
    """The report of ``year`` over the entries of the signed checkpoint ``cp``."""
    from sandbox.actions.console import entries_of

    start, end = year_bounds(year)
    entries = entries_of(rt, cp.size, start, end)
    return compute(entries, year, size=cp.size, root=base64.b64encode(cp.root).decode())


def compute_from_bundle(path: Path, year: int) -> dict[str, Any]:
    """The report of ``year`` recomputed from a bundle of the whole log (``start`` 0),
    over the entries of its last checkpoint. Verify the bundle first (``sandbox audit
    verify``): this reads it, it does not check it. Raises ``MalformedBundle``."""
    entries: list[dict[str, Any]] = []
    notes: list[str] = []
    with path.open("rb") as f:
        for record in iter_bundle(f):
            if record.kind == "header" and getattr(record.value, "start", 0) != 0:
                raise MalformedBundle("the report needs a bundle of the whole log (start 0)")
            if record.kind == "entry":
                entries.append(parse_leaf(record.value[1], strict=False))
            elif record.kind == "checkpoint":
                notes.append(record.value)
    if not notes:
        raise MalformedBundle("the bundle has no checkpoint")
    cp = Checkpoint.parse(parse_note(notes[-1]).text)
    root = base64.b64encode(cp.root).decode()
    return compute(entries, year, size=cp.size, root=root)


_HTML_ROWS = (
    ("entries", "审计条目 Audit entries"),
    ("scopes.granted", "授权范围（新授予） Scopes granted"),
    ("scopes.suspended_by_operator", "运营方暂停 Suspended by the operator"),
    ("scopes.suspended_by_platform", "平台自动暂停 Suspended by the platform"),
    ("scopes.revoked", "撤销 Revoked"),
    ("scopes.flagged_for_enumeration", "遍历探测标记 Flagged for enumeration"),
    ("calls.total", "调用 Calls"),
    ("calls.refused", "拒绝 Refused"),
    ("calls.enterprises", "调用企业数 Enterprises calling"),
    ("budget.epsilon_spent_total", "隐私预算消耗 ε spent"),
)


def to_html(report: Mapping[str, Any]) -> str:
    """A standalone bilingual (zh-CN / English) HTML page of ``report``."""
    from html import escape

    def get(path: str) -> Any:
        value: Any = report
        for part in path.split("."):
            value = value[part]
        return value

    cp = report["checkpoint"]
    rows = "".join(
        f"<tr><th scope='row'>{escape(label)}</th><td>{escape(str(get(path)))}</td></tr>"
        for path, label in _HTML_ROWS
    )
    products = "".join(
        f"<tr><td>{escape(p)}</td><td>{escape(str(v['registered'] or ''))}</td>"
        f"<td>{escape(', '.join(str(x['version']) for x in v['versions']))}</td></tr>"
        for p, v in report["products"].items()
    )
    purposes = "".join(
        f"<tr><td>{escape(p)}</td><td>{n}</td></tr>"
        for p, n in report["scopes"]["by_purpose"].items()
    )
    calls = "".join(
        f"<tr><td>{escape(p)}</td><td>{escape(a)}</td><td>{c.get('allow', 0)}</td>"
        f"<td>{c.get('deny', 0)}</td></tr>"
        for p, ops in report["calls"]["by_product"].items()
        for a, c in ops.items()
    )
    spent = "".join(
        f"<tr><td>{escape(p)}</td><td>{escape(v)}</td></tr>"
        for p, v in report["budget"]["epsilon_spent_by_product"].items()
    )
    year = int(report["year"])
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>{year} 年度公开披露报告 Annual disclosure report {year}</title>
<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto;color:#1a1a1a}}
table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #888;padding:.3rem .6rem;
text-align:left}}code{{word-break:break-all}}</style></head><body>
<h1>{year} 年度公开披露报告 <span lang="en">Annual disclosure report {year}</span></h1>
<p>依据审计日志计算 Computed from the audit log alone: checkpoint size
<code>{cp["size"]}</code>, root <code>{escape(cp["root"])}</code>; period (UTC)
{escape(report["period"]["from"])} – {escape(report["period"]["to"])}.</p>
<h2>概览 Summary</h2><table>{rows}</table>
<h2>数据产品 Products and data versions</h2>
<table><tr><th>产品 Product</th><th>登记 Registered</th><th>版本 Versions</th></tr>
{products}</table>
<h2>授权用途 Scopes granted by purpose</h2>
<table><tr><th>用途 Purpose</th><th>数量 Count</th></tr>{purposes}</table>
<h2>调用 Calls by product and operation</h2>
<table><tr><th>产品 Product</th><th>操作 Operation</th><th>允许 Allowed</th>
<th>拒绝 Refused</th></tr>
{calls}</table>
<h2>隐私预算 Budget spent</h2>
<table><tr><th>产品 Product</th><th>ε</th></tr>{spent}</table>
</body></html>
"""
