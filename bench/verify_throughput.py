"""Signed, audited verification calls vs an unsigned "hello" endpoint (DESIGN §10).

    python bench/verify_throughput.py [--rows 100000] [--configs 2x8 4x4]
                                      [--clients 8] [--rounds 5] [--seconds 5]
                                      [--workdir DIR] [--keys N] [--database-url URL]
                                      [--apps sandbox floor] [--score]
                                      [--suite ed25519-sha256|sm2-sm3]

Target (DESIGN §10): throughput of ``POST /v1/verifications/enterprise-good-standing``
(signed call, nonce, rate counter and scope status, DuckDB lookup, probe record,
durable audit append and receipt) >= 0.7 x that of the *floor* app
(``bench/floor_app.py``: the same calls with only the mandatory per-call work — the
token check, the canonical entry and its hash, the receipt — and no store) under the
same gunicorn configuration, measured side by side: verify rounds alternate between
the two servers, and the ratio is the median over round pairs. A hello round against
the product (``GET /v1/health``: no signature, no audit) is kept for reference.

Set-up (once per work dir): ``sandbox demo --rows N`` into ``WORKDIR/data``, then a
scope ``sc-bench-*`` per configuration (so each starts with an empty enumeration
window) granting ``enterprise-good-standing`` to ``ent-demo`` with rate and quota
limits far above what the machine can do, so that no call is refused. Subjects are
real USCCs from the generated registry (the first ``--keys`` of them, cycled per
client), so enumeration detection never flags the scope; but every call still
records its probe and reads the scope's window, whose size grows with the calls made
in the last ``SANDBOX_ENUMERATION_WINDOW_S`` (600 s): later rounds cost more.

For each ``WxT`` configuration it starts ``gunicorn -w W -k gthread --threads T``
(``Ws``: W sync workers; ``Wg``: W gevent workers) on ``sandbox.app:create_app()``
(and ``bench/floor_app.py``, the same calls checked and receipted with no store,
under a second server of the same configuration), then
``--clients`` load-generator processes, each with one keep-alive ``http.client``
connection sending one request at a time (closed loop). Rounds alternate hello,
verify, hello, verify, ... for ``--seconds`` each, after one warm-up round of each
kind. Signing is not part of the timed window: before every verify round each
client signs the tokens it will need (``policies.calls.sign_call``: Ed25519, fresh
jti, 60 s lifetime, bound to method, path and body); a client that runs out signs
on the fly and the report counts those. Every response is checked (200, and
``match`` plus ``receipt`` for verify); any other answer aborts the run.

Reported per kind: median requests/s over the rounds, p50/p99 latency over all
requests of the timed rounds, server CPU seconds per request (all gunicorn
processes, from /proc) and client CPU per request. The last line is JSON.

``--score`` adds model scoring (DESIGN §10: scoring >= 0.8 x verification per call):
each round then also sends ``POST /v1/model-products/enterprise-operating-risk/score``
to the product (the demo's filed DP scorecard; same subjects, same scope, which also
grants ``score``), and the ratio score/verify is the median over round pairs.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import multiprocessing as mp
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from policies.calls import sign_call  # noqa: E402
from policies.principals import jwk_thumbprint  # noqa: E402

VP = "enterprise-good-standing"
VERIFY_PATH = f"/v1/verifications/{VP}"
HELLO_PATH = "/v1/health"
MODEL_PRODUCT = "enterprise-operating-risk"
SCORE_PATH = f"/v1/model-products/{MODEL_PRODUCT}/score"
PATHS = {"verify": VERIFY_PATH, "score": SCORE_PATH}
AUDIENCE = "public-data-sandbox"
CLK_TCK = os.sysconf("SC_CLK_TCK")
GEVENT = -1  # "threads" value of a gevent configuration ("Wg")
# --apps: the product and the bench's floor app (bench/floor_app.py): the same calls
# checked and receipted with no store, to show the best ratio this stack can reach.
APPS = {"sandbox": "sandbox.app:create_app()", "floor": "bench.floor_app:create_app()"}


# --- deployment ---------------------------------------------------------------------


def setup(workdir: Path, rows: int, database_url: str | None, suite: str | None = None) -> Path:
    """Create the demo deployment (once; ``suite``: the cryptographic suite it is
    initialised with, DESIGN §13) and return its data dir."""
    data_dir = workdir / "data"
    if not (data_dir / "demo" / "keys" / "ent-demo.key").exists():
        cmd = [sys.executable, "-m", "sandbox", "--data-dir", str(data_dir)]
        if database_url:
            cmd += ["--database-url", database_url]
        if suite:
            subprocess.run([*cmd, "init", "--suite", suite], check=True, cwd=REPO)
        started = time.perf_counter()
        subprocess.run([*cmd, "demo", "--rows", str(rows), "--quiet"], check=True, cwd=REPO)
        print(
            f"# demo deployment with {rows:,} enterprises in {time.perf_counter() - started:.0f} s"
        )
    return data_dir


def grant_scope(data_dir: Path, database_url: str | None) -> str:
    """Grant a verify scope with limits the benchmark cannot reach; return its id."""
    from policies.scopes import GrantSchema
    from products.parsing import parse
    from sandbox.actions import scopes
    from sandbox.actions.call import Caller, commit
    from sandbox.runtime import Runtime
    from sandbox.settings import Settings

    settings = Settings(data_dir=data_dir, database_url=database_url)
    rt = Runtime.open(settings)
    try:
        now = rt.clock()
        sid = f"sc-bench-{secrets.token_hex(4)}"
        grant = {
            "id": sid,
            "enterprise": "ent-demo",
            "product": "enterprise_registry",
            "purpose": "throughput benchmark (bench/verify_throughput.py)",
            "operations": {"verify": [VP], "score": [MODEL_PRODUCT]},
            "epsilon": 1,
            "rate_per_minute": 1_000_000,
            "daily_quota": 1_000_000_000,
            "valid_from": (now - timedelta(days=1)).isoformat(),
            "valid_until": (now + timedelta(days=1)).isoformat(),
        }
        request = parse(GrantSchema, grant, "scope")
        outcome = commit(
            rt,
            Caller.local("bench/verify_throughput.py", rt.suite.digest),
            scopes.grant(rt, request, "op-demo"),
        )
        assert outcome.allowed, outcome.body
    finally:
        rt.close()
    return sid


def subject_keys(data_dir: Path, limit: int) -> list[str]:
    with (data_dir / "demo" / "data" / "enterprise_registry.csv").open(encoding="utf-8") as f:
        keys = [row["uscc"] for _, row in zip(range(limit), csv.DictReader(f), strict=False)]
    return keys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker_args(threads: int) -> list[str]:
    """gunicorn worker options: T > 0 gthread threads, 0 sync, -1 gevent."""
    if threads == 0:
        return ["sync"]
    if threads == GEVENT:
        return ["gevent", "--worker-connections", "1000"]
    return ["gthread", "--threads", str(threads)]


class Server:
    """gunicorn on the app factory, in its own process group."""

    def __init__(
        self,
        data_dir: Path,
        workers: int,
        threads: int,
        database_url: str | None,
        app: str = "sandbox",
    ) -> None:
        self.port = free_port()
        env = dict(os.environ, SANDBOX_DATA_DIR=str(data_dir))
        if database_url:
            env["SANDBOX_DATABASE_URL"] = database_url
        self.log = data_dir / f"gunicorn-{workers}x{threads}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-w",
                    str(workers),
                    "-k",
                    *_worker_args(threads),
                    "--keep-alive",
                    "60",
                    "--backlog",
                    "256",
                    "--log-level",
                    "warning",
                    "-b",
                    f"127.0.0.1:{self.port}",
                    APPS[app],
                ],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log.read_text()[-2000:]}")
            try:
                url = f"http://127.0.0.1:{self.port}{HELLO_PATH}"
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("gunicorn did not become healthy") from None
                time.sleep(0.2)

    def cpu_seconds(self) -> float:
        """User + system CPU of every live process of the server's process group."""
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == self.proc.pid:  # pgrp == the master's pid
                total += int(fields[11]) + int(fields[12])
        return total / CLK_TCK

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


# --- load generator ---------------------------------------------------------------------


def client_main(conn: Any, port: int, cfg: dict[str, Any]) -> None:
    """One load-generator process: commands in, results out, over ``conn`` (a Pipe)."""
    private_pem = Path(cfg["key_file"]).read_bytes()
    kid = jwk_thumbprint(Path(cfg["pub_file"]).read_bytes())
    keys: list[str] = cfg["keys"]
    scope: str = cfg["scope"]
    cursor = 0
    tokens: list[tuple[bytes, str]] = []
    http_conn: http.client.HTTPConnection | None = None

    def signed(body: bytes, kind: str = "verify") -> str:
        return sign_call(
            private_pem,
            issuer="ent-demo",
            kid=kid,
            audience=AUDIENCE,
            method="POST",
            path_and_query=PATHS[kind],
            body=body,
        )

    def next_body() -> bytes:
        nonlocal cursor
        key = keys[cursor % len(keys)]
        cursor += 1
        return json.dumps({"scope": scope, "subject": {"uscc": key}}).encode()

    def request(kind: str) -> float:
        nonlocal http_conn
        if kind == "hello":
            method, path, body, headers = "GET", HELLO_PATH, None, {}
        else:
            if tokens:
                body, token = tokens.pop()
            else:
                body = next_body()
                token = signed(body, kind)
                stats["signed_inline"] += 1
            method, path = "POST", PATHS[kind]
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        for attempt in (0, 1):
            if http_conn is None:
                http_conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            started = time.perf_counter()
            try:
                http_conn.request(method, path, body=body, headers=headers)
                resp = http_conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError):
                http_conn.close()
                http_conn = None
                stats["reconnects"] += 1
                if attempt:
                    raise
                continue
            elapsed = time.perf_counter() - started
            if resp.status != 200:
                raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
            if kind != "hello":
                answer = json.loads(data)
                field = "match" if kind == "verify" else "band"
                if field not in answer or "receipt" not in answer:
                    raise RuntimeError(f"unexpected {kind} answer {data[:300]!r}")
            return elapsed
        raise AssertionError("unreachable")

    stats: dict[str, int] = {"signed_inline": 0, "reconnects": 0}
    while True:
        cmd = conn.recv()
        if cmd[0] == "quit":
            break
        if cmd[0] == "prepare":  # sign the tokens of the next signed round
            _, n, signed_kind = cmd
            tokens = [(b, signed(b, signed_kind)) for b in (next_body() for _ in range(n))]
            tokens.reverse()  # pop() takes them in signing order
            conn.send("ready")
            continue
        _, kind, start_at, end_at = cmd
        stats = {"signed_inline": 0, "reconnects": 0}
        try:
            while time.monotonic() < start_at:
                time.sleep(0.001)
            cpu0 = time.process_time()
            latencies: list[float] = []
            while time.monotonic() < end_at:
                latencies.append(request(kind))
            finished = time.monotonic()
            conn.send(
                {
                    "latencies": latencies,
                    "finished": finished,
                    "cpu": time.process_time() - cpu0,
                    **stats,
                }
            )
        except Exception as exc:
            conn.send({"error": f"{type(exc).__name__}: {exc}"})
        tokens = []


class Clients:
    def __init__(self, n: int, port: int, cfg: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")
        self.pipes = []
        self.procs = []
        for i in range(n):
            parent, child = ctx.Pipe()
            # Each client walks its own slice of the subject keys.
            keys = cfg["keys"][i::n] or cfg["keys"]
            p = ctx.Process(target=client_main, args=(child, port, {**cfg, "keys": keys}))
            p.start()
            self.pipes.append(parent)
            self.procs.append(p)

    def round(self, kind: str, seconds: float, tokens_each: int) -> dict[str, Any]:
        if kind != "hello":
            for p in self.pipes:
                p.send(("prepare", tokens_each, kind))
            for p in self.pipes:
                assert p.recv() == "ready"
        start_at = time.monotonic() + 0.3
        end_at = start_at + seconds
        for p in self.pipes:
            p.send(("run", kind, start_at, end_at))
        results = [p.recv() for p in self.pipes]
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            raise RuntimeError(f"{kind} round failed: {errors[0]}")
        latencies = [x for r in results for x in r["latencies"]]
        elapsed = max(r["finished"] for r in results) - start_at
        return {
            "requests": len(latencies),
            "elapsed": elapsed,
            "rps": len(latencies) / elapsed,
            "latencies": latencies,
            "client_cpu": sum(r["cpu"] for r in results),
            "signed_inline": sum(r["signed_inline"] for r in results),
            "reconnects": sum(r["reconnects"] for r in results),
        }

    def close(self) -> None:
        for p in self.pipes:
            p.send(("quit",))
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()


# --- measurement ----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def measure(
    data_dir: Path, workers: int, threads: int, args: argparse.Namespace, cfg: dict[str, Any]
) -> dict[str, Any]:
    """One server configuration: each app of ``args.apps`` under its own gunicorn, the
    same clients sending to each in turn (verify rounds alternate between the apps,
    then a hello round against the product), so every ratio compares rounds measured
    side by side."""
    cfg = {**cfg, "scope": grant_scope(data_dir, args.database_url)}
    servers = {app: Server(data_dir, workers, threads, args.database_url, app) for app in args.apps}
    clients = {app: Clients(args.clients, servers[app].port, cfg) for app in args.apps}
    product = "sandbox" if "sandbox" in args.apps else args.apps[0]
    kinds = [(app, "verify") for app in args.apps] + [(product, "hello")]
    if args.score:
        kinds.append((product, "score"))
    rounds: dict[tuple[str, str], list[dict[str, Any]]] = {k: [] for k in kinds}
    try:
        # Warm-up (not recorded): worker start-up, DuckDB attach, SQLite caches.
        tokens_each = 0
        for app in args.apps:
            clients[app].round("hello", args.warmup, 0)
            warm = clients[app].round("verify", args.warmup, 2000)
            if args.score and app == product:
                clients[app].round("score", args.warmup, 2000)
            per_client = warm["rps"] / args.clients
            tokens_each = max(tokens_each, int(per_client * args.seconds * 2) + 200)
        for r in range(args.rounds):
            for app, kind in kinds:
                cpu0 = servers[app].cpu_seconds()
                res = clients[app].round(kind, args.seconds, tokens_each)
                res["server_cpu"] = servers[app].cpu_seconds() - cpu0
                rounds[(app, kind)].append(res)
                print(
                    f"  {workers}x{threads} round {r + 1} {app:7s} {kind:6s} {res['rps']:8.1f} "
                    f"req/s  p50 {statistics.median(res['latencies']) * 1e3:6.1f} ms  "
                    f"server CPU {res['server_cpu'] / res['requests'] * 1e3:5.2f} ms/req"
                    + (f"  signed inline {res['signed_inline']}" if res["signed_inline"] else ""),
                    flush=True,
                )
    finally:
        for c in clients.values():
            c.close()
        for srv in servers.values():
            srv.stop()
    out: dict[str, Any] = {
        "workers": workers,
        "threads": threads,
        "clients": args.clients,
        "scope": cfg["scope"],
    }
    for (app, kind), rs in rounds.items():
        lat = [x for r in rs for x in r["latencies"]]
        n = sum(r["requests"] for r in rs)
        out[f"{app} {kind}"] = {
            "rps_median": statistics.median(r["rps"] for r in rs),
            "rps_rounds": [round(r["rps"], 1) for r in rs],
            "p50_ms": statistics.median(lat) * 1e3,
            "p99_ms": pct(lat, 0.99) * 1e3,
            "requests": n,
            "server_cpu_ms_per_req": sum(r["server_cpu"] for r in rs) / n * 1e3,
            "client_cpu_ms_per_req": sum(r["client_cpu"] for r in rs) / n * 1e3,
            "signed_inline": sum(r["signed_inline"] for r in rs),
            "reconnects": sum(r["reconnects"] for r in rs),
        }
    verify = out[f"{product} verify"]["rps_median"]
    out["ratio_to_hello"] = verify / out[f"{product} hello"]["rps_median"]
    if "floor" in args.apps and product != "floor":
        # Per round pair, then the median: both measured within seconds of each other.
        pairs = zip(rounds[(product, "verify")], rounds[("floor", "verify")], strict=True)
        out["ratio_to_floor_rounds"] = [round(a["rps"] / b["rps"], 3) for a, b in pairs]
        out["ratio_to_floor"] = statistics.median(out["ratio_to_floor_rounds"])
    if args.score:
        pairs = zip(rounds[(product, "score")], rounds[(product, "verify")], strict=True)
        out["ratio_score_rounds"] = [round(a["rps"] / b["rps"], 3) for a, b in pairs]
        out["ratio_score"] = statistics.median(out["ratio_score_rounds"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument(
        "--configs",
        nargs="+",
        default=["2x8", "4x4"],
        help="WORKERSxTHREADS (gthread) or Ws (W sync workers)",
    )
    ap.add_argument("--clients", type=int, default=8, help="load-generator processes")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of one round")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--keys", type=int, default=100_000, help="distinct subjects to cycle")
    ap.add_argument("--workdir", type=Path, default=None, help="kept; default: a temp dir")
    ap.add_argument("--database-url", default=None, help="control plane (default SQLite)")
    ap.add_argument(
        "--apps",
        nargs="+",
        choices=sorted(APPS),
        default=["sandbox", "floor"],
        help="floor: bench/floor_app.py, the token check, entry hash and receipt with no "
        "store (DESIGN §10's floor); both by default, measured side by side",
    )
    ap.add_argument(
        "--suite",
        choices=["ed25519-sha256", "sm2-sm3"],
        default=None,
        help="the deployment's suite (DESIGN §13; default ed25519-sha256): in sm2-sm3 the "
        "client signs SM2SM3, receipts are SM2 and the log hashes with SM3",
    )
    ap.add_argument(
        "--score",
        action="store_true",
        help="also model scoring, side by side with verification (ratio score/verify)",
    )
    args = ap.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="verify-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        data_dir = setup(workdir, args.rows, args.database_url, args.suite)
        keys_dir = data_dir / "demo" / "keys"
        cfg = {
            "key_file": str(keys_dir / "ent-demo.key"),
            "pub_file": str(keys_dir / "ent-demo.pub"),
            "keys": subject_keys(data_dir, args.keys),
        }
        store = "PostgreSQL" if args.database_url else "SQLite"
        print(
            f"# {os.cpu_count()} cpus; {args.clients} client processes, closed loop; "
            f"{args.rounds} x {args.seconds:g} s rounds per kind; {len(cfg['keys']):,} subjects; "
            f"control plane {store}; apps {' '.join(args.apps)}; "
            f"suite {args.suite or 'ed25519-sha256'}",
            flush=True,
        )
        results = []
        for spec in args.configs:
            # WxT: W gthread workers of T threads; Ws: W sync workers (one request at
            # a time per process, no keep-alive).
            if spec.lower().endswith("s"):
                w, t = int(spec[:-1]), 0
            elif spec.lower().endswith("g"):
                w, t = int(spec[:-1]), GEVENT
            else:
                w, t = (int(x) for x in spec.lower().split("x"))
            res = measure(data_dir, w, t, args, cfg)
            results.append(res)
            for name, k in res.items():
                if not isinstance(k, dict):
                    continue
                print(
                    f"{w}x{t} {name:15s} {k['rps_median']:8.1f} req/s (median of "
                    f"{args.rounds})  p50 {k['p50_ms']:6.1f} ms  p99 {k['p99_ms']:6.1f} ms  "
                    f"server CPU {k['server_cpu_ms_per_req']:.2f} ms/req  "
                    f"client CPU {k['client_cpu_ms_per_req']:.2f} ms/req"
                )
            if "ratio_to_floor" in res:
                print(
                    f"{w}x{t} ratio product/floor {res['ratio_to_floor']:.3f} "
                    f"(rounds {res['ratio_to_floor_rounds']}; DESIGN §10 target >= 0.7)",
                    flush=True,
                )
            print(f"{w}x{t} ratio verify/hello {res['ratio_to_hello']:.3f}", flush=True)
            if "ratio_score" in res:
                print(
                    f"{w}x{t} ratio score/verify {res['ratio_score']:.3f} "
                    f"(rounds {res['ratio_score_rounds']}; DESIGN §10 target >= 0.8)",
                    flush=True,
                )
        print(json.dumps({"results": results}))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
