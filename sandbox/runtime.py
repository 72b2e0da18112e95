"""The runtime: every long-lived object of one deployment, built once from Settings.

The Flask app, the CLI and the tests all start from ``Runtime.open(settings)``; no
module keeps state of its own at import time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from audit.log import AuditLog
from audit.suites import Suite
from policies.budget import BudgetLedger
from policies.calls import CallPolicy
from policies.limits import RateLimiter
from policies.nonces import NonceStore
from policies.principals import KeyAlg, PrincipalStore, Role, public_jwk
from policies.scopes import ScopeStore
from policies.sessions import SessionStore, console_secret
from products.catalogue import Catalogue
from products.loader import LoadLimits
from sandbox.db import engine_for, migrate
from sandbox.engine.isolation import WorkerPool
from sandbox.models.products import ModelStore
from sandbox.platform_keys import PlatformKeys, deployment_suite, subject_key_secret
from sandbox.settings import Settings
from sandbox.verification.enumeration import EnumerationPolicy
from sandbox.verification.lookup import VerificationLimits, VerificationRunner
from sandbox.verification.probes import purge_expired

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    clock: Clock
    suite: Suite
    keys: PlatformKeys
    catalogue: Catalogue
    principals: PrincipalStore
    scopes: ScopeStore
    nonces: NonceStore
    ledger: BudgetLedger
    limiter: RateLimiter
    audit: AuditLog
    call_policy: CallPolicy
    verifier: VerificationRunner
    enumeration: EnumerationPolicy
    subject_secret: bytes
    sessions: SessionStore
    console_secret: bytes
    load_limits: LoadLimits = field(default_factory=LoadLimits)
    model_products: ModelStore | None = None  # set by ``open``

    @classmethod
    def open(cls, settings: Settings, *, clock: Clock = utcnow, create: bool = True) -> Runtime:
        """Open (and with ``create``, initialise) the stores of a deployment.

        Raises ``Unavailable`` when the store cannot be opened, ``InvalidRequest`` when
        its URL is unusable or, without ``create``, it has not been initialised.
        """
        suite = deployment_suite(settings.keys_dir, settings.suite, create=create)
        engine = engine_for(settings)
        migrate(engine)
        settings.products_dir.mkdir(parents=True, exist_ok=True)
        keys = PlatformKeys.open(
            settings.keys_dir, settings.audit_origin, create=create, suite=suite
        )
        audit = AuditLog(
            engine,
            origin=settings.audit_origin,
            suite=suite,
            signer=keys.note_signer(),
            clock=clock,
            sqlite_synchronous=settings.sqlite_synchronous,
            checkpoint_interval=settings.checkpoint_interval_s,
            checkpoint_entries=settings.checkpoint_every_entries,
            lock_timeout_s=settings.store_lock_timeout_s,
        )
        enumeration = EnumerationPolicy.from_settings(settings)
        subject_secret = subject_key_secret(settings.keys_dir, create=create)
        return cls(
            settings=settings,
            engine=engine,
            clock=clock,
            suite=suite,
            keys=keys,
            catalogue=Catalogue(engine, settings.products_dir, clock),
            principals=PrincipalStore(engine, clock),
            scopes=ScopeStore(engine, clock),
            nonces=NonceStore(engine, clock),
            ledger=BudgetLedger(engine, clock),
            limiter=RateLimiter(engine, clock),
            audit=audit,
            call_policy=CallPolicy(
                audience=settings.audience,
                max_lifetime_s=settings.max_token_lifetime_s,
                clock_skew_s=settings.clock_skew_s,
            ),
            verifier=VerificationRunner(VerificationLimits.from_settings(settings)),
            enumeration=enumeration,
            subject_secret=subject_secret,
            sessions=SessionStore(engine, clock),
            console_secret=console_secret(subject_secret),
            load_limits=LoadLimits(
                memory_limit=settings.query_memory_limit,
                threads=settings.query_threads,
                temp_disk_limit=settings.load_temp_disk_bytes,
                temp_dir=settings.load_temp_dir,
            ),
            model_products=ModelStore(engine),
        )

    _stop: threading.Event = field(default_factory=threading.Event)
    _background: threading.Thread | None = None
    _runner: WorkerPool | None = None
    _runner_lock: threading.Lock = field(default_factory=threading.Lock)

    def query_runner(self) -> WorkerPool:
        """Return this deployment's pool of isolated query workers (started on first use)."""
        with self._runner_lock:
            if self._runner is None:
                self._runner = WorkerPool(size=max(1, self.settings.query_workers))
            return self._runner

    def start_background(self, tick: Callable[[], None]) -> None:
        """Run ``tick`` every few seconds from a daemon thread of this process, until
        ``close`` (idempotent; no thread when ``checkpoint_interval_s`` is 0)."""
        if self._background is not None or self.settings.checkpoint_interval_s <= 0:
            return
        period = min(self.settings.checkpoint_interval_s, 10.0)

        def run() -> None:
            while not self._stop.wait(period):
                try:
                    tick()
                except Exception:
                    logging.getLogger(__name__).exception("background work failed")

        self._background = threading.Thread(target=run, name="platform", daemon=True)
        self._background.start()

    def sweep(self) -> None:
        """Forget what can no longer matter: enumeration buckets that left every window,
        nonces whose tokens have expired, rate windows of past days, and stored releases
        past their retention (``release_retention_days``)."""
        with self.engine.begin() as conn:
            purge_expired(conn, self.clock(), self.enumeration)
        self.nonces.prune()
        self.limiter.prune()
        retention = timedelta(days=self.settings.release_retention_days)
        self.ledger.forget_releases(self.clock() - retention)
        self.sessions.prune()

    def forget_cached(self) -> None:
        """Drop this process's cached principals, scopes and definitions (after a
        change committed by this process; other processes see it within a second)."""
        self.principals.forget()
        self.scopes.forget()
        self.catalogue.forget()
        self.models.forget()

    @property
    def models(self) -> ModelStore:
        """Model products, their versions and filings (DESIGN §11.3)."""
        if self.model_products is None:
            self.model_products = ModelStore(self.engine)
        return self.model_products

    def bundle_keys(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Return the JWKs for an audit bundle header: the platform's keys, and the
        regulators' Ed25519 and SM2 keys as witnesses (named by principal id, the name
        their cosignature lines carry)."""
        keys = [dict(k) for k in self.keys.jwks()["keys"]]
        witnesses = [
            {**public_jwk(k.pem), "kid": k.kid, "name": p.id}
            for p in self.principals.with_role(Role.REGULATOR)
            for k in p.keys
            if k.active and k.alg in (KeyAlg.EDDSA, KeyAlg.SM2SM3)
        ]
        return keys, witnesses

    def close(self) -> None:
        """Stop background work and release connections."""
        self._stop.set()
        if self._background is not None:
            self._background.join(timeout=5)
            self._background = None
        self.verifier.close()
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        self.audit.close()
        self.engine.dispose()
