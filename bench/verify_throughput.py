"""Signed, audited verification calls vs an unsigned "hello" endpoint (DESIGN §10).

    python bench/verify_throughput.py [--rows 100000] [--configs 2x8 4x4]
                                      [--clients 8] [--rounds 5] [--seconds 5]
                                      [--workdir DIR] [--keys N] [--database-url URL]
                                      [--app sandbox|floor] [--baseline hello|score]

Target: throughput of ``POST /v1/verifications/enterprise-good-standing`` (signed
call, nonce, rate counter, DuckDB lookup, probe record, durable audit append and
receipt) >= 0.5 x that of ``GET /v1/health`` (no signature, no audit) of the same
app under the same gunicorn server, measured side by side.

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
(``--app floor``: ``bench/floor_app.py``, the same calls checked and receipted with
no store, whose ratio bounds what any implementation can reach here), then
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

``--baseline score`` measures model scoring (DESIGN §10: scoring >= 0.8 x verification
per call) instead of hello: rounds alternate ``POST /v1/model-products/
enterprise-operating-risk/score`` (the demo's filed DP scorecard; same subjects, same
scope, which then also grants ``score``) and verify, and the ratio is score/verify.
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
# --app: the product, or the bench's floor app (bench/floor_app.py): the same calls
# checked and receipted with no store, to show the best ratio this stack can reach.
APPS = {"sandbox": "sandbox.app:create_app()", "floor": "bench.floor_app:create_app()"}


# --- deployment ---------------------------------------------------------------------


def setup(workdir: Path, rows: int, database_url: str | None) -> Path:
    """Create the demo deployment (once) and return its data dir."""
    data_dir = workdir / "data"
    if not (data_dir / "demo" / "keys" / "ent-demo.key").exists():
        cmd = [sys.executable, "-m", "sandbox", "--data-dir", str(data_dir)]
        if database_url:
            cmd += ["--database-url", database_url]
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
            rt, Caller.local("bench/verify_throughput.py"), scopes.grant(rt, request, "op-demo")
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
    cfg = {**cfg, "scope": grant_scope(data_dir, args.database_url)}
    server = Server(data_dir, workers, threads, args.database_url, args.app)
    clients = Clients(args.clients, server.port, cfg)
    try:
        # Warm-up (not recorded): worker start-up, DuckDB attach, SQLite caches.
        base = args.baseline
        clients.round(base, args.warmup, 2000 if base != "hello" else 0)
        warm = clients.round("verify", args.warmup, 2000)
        per_client = warm["rps"] / args.clients
        tokens_each = int(per_client * args.seconds * 2) + 200
        rounds: dict[str, list[dict[str, Any]]] = {base: [], "verify": []}
        for r in range(args.rounds):
            for kind in (base, "verify"):
                cpu0 = server.cpu_seconds()
                res = clients.round(kind, args.seconds, tokens_each)
                res["server_cpu"] = server.cpu_seconds() - cpu0
                rounds[kind].append(res)
                print(
                    f"  {workers}x{threads} round {r + 1} {kind:6s} {res['rps']:8.1f} req/s  "
                    f"p50 {statistics.median(res['latencies']) * 1e3:6.1f} ms  "
                    f"server CPU {res['server_cpu'] / res['requests'] * 1e3:5.2f} ms/req"
                    + (f"  signed inline {res['signed_inline']}" if res["signed_inline"] else ""),
                    flush=True,
                )
    finally:
        clients.close()
        server.stop()
    out: dict[str, Any] = {
        "workers": workers,
        "threads": threads,
        "clients": args.clients,
        "app": args.app,
        "scope": cfg["scope"],
    }
    for kind, rs in rounds.items():
        lat = [x for r in rs for x in r["latencies"]]
        n = sum(r["requests"] for r in rs)
        out[kind] = {
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
    if args.baseline == "hello":
        out["ratio"] = out["verify"]["rps_median"] / out["hello"]["rps_median"]
    else:  # scoring per call against verification per call
        out["ratio"] = out["score"]["rps_median"] / out["verify"]["rps_median"]
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
        "--app",
        choices=sorted(APPS),
        default="sandbox",
        help="floor: bench/floor_app.py, signature and receipt only, no store",
    )
    ap.add_argument(
        "--baseline",
        choices=["hello", "score"],
        default="hello",
        help="score: model scoring side by side with verification (ratio score/verify)",
    )
    args = ap.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="verify-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        data_dir = setup(workdir, args.rows, args.database_url)
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
            f"control plane {store}; app {args.app}",
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
            for kind in (args.baseline, "verify"):
                k = res[kind]
                print(
                    f"{w}x{t} {kind:6s} {k['rps_median']:8.1f} req/s (median of "
                    f"{args.rounds})  p50 {k['p50_ms']:6.1f} ms  p99 {k['p99_ms']:6.1f} ms  "
                    f"server CPU {k['server_cpu_ms_per_req']:.2f} ms/req  "
                    f"client CPU {k['client_cpu_ms_per_req']:.2f} ms/req"
                )
            if args.baseline == "hello":
                print(f"{w}x{t} ratio verify/hello {res['ratio']:.3f} (target >= 0.5)", flush=True)
            else:
                print(f"{w}x{t} ratio score/verify {res['ratio']:.3f} (target >= 0.8)", flush=True)
        best = max(results, key=lambda r: r["ratio"])
        print(json.dumps({"results": results, "best": f"{best['workers']}x{best['threads']}"}))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
