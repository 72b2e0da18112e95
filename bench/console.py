"""Server time of the console's pages (DESIGN §10: under 300 ms; the audit trail at 1M
entries).

    PYTHONPATH=. .venv/bin/python bench/console.py [--entries 1000000] [--runs 20]

1. The demo deployment with some history (``bench/console_world.py``): every page of
   every role, ``--runs`` times each.
2. A log of ``--entries`` entries (appended through the real group commit by 64
   threads, a mix of actors, roles, actions, products, scopes and 1% refusals): the
   audit trail unfiltered, filtered (action, actor, role, decision, scope, time range,
   text in the reason), paged deep into the log, an entry with its proof, integrity.

Server time is the WSGI call in-process (Flask's test client: no network, no browser),
sign-in excluded; each page request includes its own audited read (one durable
append). Reported: median and 95th percentile in ms.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from audit.entry import Entry
from bench.console_world import populate
from policies.calls import sign_call
from policies.principals import (
    PrincipalSchema,
    Role,
    generate_keypair,
    jwk_thumbprint,
    public_pem_of,
)
from policies.sessions import CHALLENGE_PATH
from products.parsing import parse
from sandbox.actions import principals
from sandbox.actions.call import Caller, commit
from sandbox.app import create_app
from sandbox.runtime import Runtime
from sandbox.settings import Settings

DEMO_PAGES = {
    "reg-demo": [
        "/console/audit",
        "/console/audit?decision=deny",
        "/console/audit/5",
        "/console/integrity",
        "/console/budgets",
        "/console/oversight",
        "/console/models",
        "/console/models/{model_version}",
        "/console/report",
        "/console/usage",
    ],
    "op-demo": [
        "/console/scopes",
        "/console/scopes/sc-demo-registry",
        "/console/scopes/new",
        "/console/products",
        "/console/principals",
        "/console/models",
        "/console/usage",
    ],
    "ent-demo": [
        "/console/scopes",
        "/console/scopes/sc-demo-registry",
        "/console/audit",
        "/console/query",
        "/console/synthetic",
        "/console/budgets",
    ],
}


def signed_in(app: Flask, pid: str, key: bytes, audience: str) -> FlaskClient:
    import re

    client = app.test_client()
    challenge = client.get("/console/challenge").get_json()["challenge"]
    token = sign_call(
        key,
        issuer=pid,
        kid=jwk_thumbprint(public_pem_of(key)),
        audience=audience,
        method="POST",
        path_and_query=CHALLENGE_PATH,
        body=challenge.encode(),
    )
    page = client.get("/console/sign-in", query_string={"challenge": challenge, "token": token})
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert csrf
    resp = client.post(
        "/console/sign-in",
        data={"csrf_token": csrf.group(1), "challenge": challenge, "token": token},
    )
    assert resp.status_code == 303, resp.get_data(as_text=True)[:300]
    return client


def timed(client: FlaskClient, path: str, runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        resp = client.get(path)
        resp.get_data()
        samples.append((time.perf_counter() - t0) * 1000)
        assert resp.status_code == 200, (path, resp.status_code)
        resp.close()
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def demo_pages(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "var"
        populate(data)
        rt = Runtime.open(Settings(data_dir=data, checkpoint_interval_s=0))
        try:
            app = create_app(runtime=rt)
            print(f"## demo deployment ({rt.audit.size()} entries)\n")
            print("| role | page | median ms | p95 ms |\n| --- | --- | ---: | ---: |")
            # The review page of the demo's filed operating-risk scorecard.
            mp = rt.models.get("enterprise-operating-risk")
            model_version = f"{mp.id}/versions/{mp.versions[-1].version}"
            for pid, pages in DEMO_PAGES.items():
                key = (data / "demo" / "keys" / f"{pid}.key").read_bytes()
                client = signed_in(app, pid, key, rt.settings.audience)
                for page in pages:
                    path = page.format(model_version=model_version)
                    med, p95 = timed(client, path, runs)
                    print(f"| {pid} | `{path}` | {med:.1f} | {p95:.1f} |")
        finally:
            rt.close()


ACTIONS = ["verify", "query.aggregate", "query.preview", "verify.batch", "audit.read", "scope.read"]


def entry_fields(i: int, start: datetime) -> dict[str, object]:
    deny = i % 100 == 0
    role = ("enterprise", "enterprise", "enterprise", "operator", "regulator")[i % 5]
    return {
        "actor": f"ent-{i % 50}" if role == "enterprise" else f"{role[:3]}-{i % 3}",
        "role": role,
        "action": ACTIONS[i % len(ACTIONS)],
        "target": {"product": f"product_{i % 7}", "scope": f"sc-{i % 200}"},
        "request_hash": f"{i:064x}",
        "decision": "deny" if deny else "allow",
        "reason": f"rate_limited: scope sc-{i % 200} is over {i % 600} calls" if deny else None,
        "epsilon": "0",
        "result_hash": f"{i + 1:064x}",
        "jti": str(uuid.uuid4()),
        "client": "10.0.0.7",
    }


def fill(rt: Runtime, n: int, threads: int = 64) -> float:
    start = datetime.now(UTC) - timedelta(days=30)
    per = n // threads

    def work(t: int) -> None:
        for i in range(per):
            rt.audit.append(Entry.from_fields(entry_fields(t * per + i, start)))

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


def big_log(n: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "var"
        rt = Runtime.open(Settings(data_dir=data, checkpoint_interval_s=0))
        try:
            private, public = generate_keypair("ed25519")
            request = parse(
                PrincipalSchema,
                {
                    "id": "reg-bench",
                    "role": "regulator",
                    "name": "bench",
                    "keys": [{"public_key": public.decode()}],
                },
                "principal",
            )
            commit(
                rt, Caller.local("bench"), principals.register(rt, request, None, roles=tuple(Role))
            )
            seconds = fill(rt, n)
            size = rt.audit.size()
            print(f"\n## audit trail at {size:,} entries (filled in {seconds:.0f} s)\n")
            app = create_app(runtime=rt)
            client = signed_in(app, "reg-bench", private, rt.settings.audience)
            today = datetime.now(UTC).date()
            pages = [
                "/console/audit",
                "/console/audit?action=query.aggregate",
                "/console/audit?actor=ent-7",
                "/console/audit?role=regulator",
                "/console/audit?decision=deny",
                "/console/audit?scope=sc-42",
                f"/console/audit?from={today}&to={today}",
                "/console/audit?text=rate_limited",
                "/console/audit?text=no+such+text",
                f"/console/audit?cursor={size // 2}",
                f"/console/audit?cursor={size // 2}&decision=deny",
                f"/console/audit/{size // 3}",
                "/console/integrity",
            ]
            print("| page | median ms | p95 ms |\n| --- | ---: | ---: |")
            for path in pages:
                med, p95 = timed(client, path, runs)
                print(f"| `{path}` | {med:.1f} | {p95:.1f} |")
        finally:
            rt.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args()
    commit_id = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"# {platform.node()}, {os.cpu_count()} cpus, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d}, commit {commit_id}\n"
    )
    if not args.skip_demo:
        demo_pages(args.runs)
    big_log(args.entries, args.runs)


if __name__ == "__main__":
    main()
