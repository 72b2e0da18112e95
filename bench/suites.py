"""The two cryptographic suites side by side (DESIGN §13): ed25519-sha256 vs sm2-sm3.

    PYTHONPATH=. python bench/suites.py [--seconds 3] [--threads 32]

Measured in one process, one suite after the other for each item, on the code paths
the service runs:

* signed-call verification: ``policies.calls.verify_call`` of a token signed with the
  suite's key type (EdDSA / SM2SM3), JWT parse and every claim check; one thread;
* receipt signing: ``PlatformKeys.sign_receipt`` (pyjwt, EdDSA / SM2SM3);
* checkpoint signing: ``NoteSigner.sign_note`` (Ed25519 / SM2 signed note);
* audit appends: ``AuditLog.append`` on SQLite WAL, ``--threads`` writers, group commit,
  SHA-256 / SM3 leaf and node hashes.

Offline verification: ``bench/audit_verify.py --suite sm2-sm3`` next to the default;
end to end over HTTP: ``bench/verify_throughput.py --suite sm2-sm3`` next to the
default. Results go in BENCHMARKS.md; the last line printed is JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from audit.entry import Entry
from audit.log import AuditLog, create_tables
from audit.note import checkpoint_text
from audit.suites import SUITE_NAMES, suite_named
from policies.calls import CallPolicy, sign_call, verify_call
from policies.principals import Principal, PublicKey, Role, generate_keypair, load_public_key
from sandbox.platform_keys import PlatformKeys, key_alg_for


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after a short warm-up)."""
    for _ in range(20):
        fn()
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        for _ in range(10):
            fn()
        n += 10
    return n / elapsed


def call_verification(suite: str, seconds: float) -> float:
    private, public = generate_keypair(key_alg_for(suite_named(suite)))
    alg = load_public_key(public)[1]
    principal = Principal(
        "ent-bench",
        Role.ENTERPRISE,
        "bench",
        (PublicKey("k1", alg, public.decode()),),
        datetime.now(UTC),
    )
    body = b'{"scope": "sc-bench", "subject": {"uscc": "91110000100000000X"}}'
    digest = hashlib.sha256(body).digest()
    policy = CallPolicy(audience="public-data-sandbox")
    tokens = [
        "Bearer "
        + sign_call(
            private,
            issuer="ent-bench",
            kid="k1",
            audience="public-data-sandbox",
            method="POST",
            path_and_query="/v1/verifications/enterprise-good-standing",
            body=body,
        )
        for _ in range(200)
    ]
    it = iter(range(1 << 62))

    def one() -> None:
        verify_call(
            tokens[next(it) % len(tokens)],
            method="POST",
            path_and_query="/v1/verifications/enterprise-good-standing",
            body_sha256=digest,
            policy=policy,
            principals=lambda _: principal,
            now=datetime.now(UTC),
        )

    return rate(one, seconds)


def platform_keys(suite: str, directory: Path) -> PlatformKeys:
    s = suite_named(suite)
    return PlatformKeys.open(directory / suite, "bench/audit", create=True, suite=s)


def receipt_signing(keys: PlatformKeys, seconds: float) -> float:
    claims = {
        "iss": "public-data-sandbox",
        "iat": 1_800_000_000,
        "audit_index": 123_456,
        "leaf_hash": "ab" * 32,
        "request_hash": "cd" * 32,
        "result_hash": "ef" * 32,
    }
    return rate(lambda: keys.sign_receipt(claims), seconds)


def checkpoint_signing(keys: PlatformKeys, seconds: float) -> float:
    signer = keys.note_signer()
    text = checkpoint_text("bench/audit", 123_456, b"\x01" * 32, "2026-12-01T00:00:00.000Z")
    return rate(lambda: signer.sign_note(text), seconds)


def fields(i: int) -> dict[str, object]:
    return {
        "actor": f"ent-{i % 50}",
        "role": "enterprise",
        "action": "verify",
        "target": {"product": "enterprise_registry", "scope": f"sc-{i % 20}"},
        "request_hash": f"{i:064x}",
        "decision": "allow",
        "reason": None,
        "epsilon": "0",
        "result_hash": f"{i + 1:064x}",
        "jti": str(uuid.uuid4()),
        "client": "10.0.0.7",
    }


def appends(log: AuditLog, threads: int, seconds: float) -> float:
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def work(t: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            log.append(Entry.from_fields(fields(t * 1_000_000 + i)))
            i += 1
        counts[t] = i

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per single-thread item")
    ap.add_argument("--threads", type=int, default=32, help="appending threads")
    args = ap.parse_args()
    print(
        f"# {platform.node()} {os.cpu_count()} cpus, python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d}"
    )
    results: dict[str, dict[str, float]] = {s: {} for s in SUITE_NAMES}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        keys = {s: platform_keys(s, tmp) for s in SUITE_NAMES}
        items: list[tuple[str, Callable[[str], float]]] = [
            ("signed-call verifications/s", lambda s: call_verification(s, args.seconds)),
            ("receipts signed/s", lambda s: receipt_signing(keys[s], args.seconds)),
            ("checkpoints signed/s", lambda s: checkpoint_signing(keys[s], args.seconds)),
        ]
        for name, fn in items:
            for s in SUITE_NAMES:
                results[s][name] = fn(s)
            print(_row(name, results, "{:,.0f}"), flush=True)
        for s in SUITE_NAMES:
            engine = sa.create_engine(f"sqlite:///{tmp}/{s}.db")
            create_tables(engine)
            log = AuditLog(engine, suite=s, signer=keys[s].note_signer())
            results[s]["audit appends/s"] = appends(log, args.threads, args.seconds * 2)
            log.close()
            engine.dispose()
        print(_row("audit appends/s", results, "{:,.0f}"), flush=True)
    buf = io.StringIO()
    json.dump(results, buf)
    print(buf.getvalue())


def _row(name: str, results: dict[str, dict[str, float]], fmt: str) -> str:
    a, b = (results[s][name] for s in SUITE_NAMES)
    return (
        f"{name:42s} ed25519-sha256 {fmt.format(a):>10s}   sm2-sm3 {fmt.format(b):>10s}   "
        f"sm2/ed {b / a:.2f}"
    )


if __name__ == "__main__":
    main()
