"""Helpers shared by the audit tests (a unique module name: tests have no packages)."""

from __future__ import annotations


def make_fields(i: int, **over: object) -> dict[str, object]:
    """Plausible caller fields for entry number ``i`` (DESIGN §7 minimum)."""
    fields: dict[str, object] = {
        "actor": f"ent-{i % 5}",
        "role": "enterprise",
        "action": "query.aggregate" if i % 2 else "verify",
        "target": {"product": "enterprise_registry", "scope": f"sc-{i % 3}"},
        "request_hash": f"{i:064x}",
        "decision": "deny" if i % 7 == 3 else "allow",
        "reason": "budget_exhausted" if i % 7 == 3 else None,
        "epsilon": "0" if i % 7 == 3 else "0.25",
        "result_hash": None if i % 7 == 3 else f"{i + 1:064x}",
        "jti": f"jti-{i}",
        "client": "127.0.0.1",
    }
    fields.update(over)
    return fields


def sqlite_url(directory: object) -> str:
    return f"sqlite:///{directory}/audit.db"


def new_log(url: str, signer: object, **kwargs: object) -> object:
    """An AuditLog over a fresh store at ``url`` (tables created)."""
    import sqlalchemy as sa

    from audit.log import AuditLog, create_tables

    engine = sa.create_engine(url)
    create_tables(engine)
    log = AuditLog(engine, signer=signer, **kwargs)  # type: ignore[arg-type]
    CREATED.append(log)
    return log


#: Logs made by ``new_log``; the conftest disposes their engines after each test.
CREATED: list[object] = []


def make_entry(i: int, **over: object) -> object:
    """The :class:`audit.entry.Entry` of ``make_fields(i, **over)``."""
    from audit.entry import Entry

    return Entry.from_fields(make_fields(i, **over))


def in_entry(log: object, work: object) -> object:
    """Run ``work(tx)`` in the transaction of a new entry, as a call does; return what
    it returned (or raise what it raised, with nothing appended)."""
    from audit.log import AuditLog

    assert isinstance(log, AuditLog)
    got: list[object] = []

    def write(tx: object) -> object:
        got.append(work(tx))  # type: ignore[operator]
        return make_entry(10**6)

    log.append(write)  # type: ignore[arg-type]
    return got[0]


def checkpoint_now(log: object, size: int | None = None, reuse_within: float = 0.0) -> object:
    """Sign (or return) a checkpoint in the transaction of its own entry, as a call
    would (``size`` None: every entry before that one)."""
    return in_entry(log, lambda tx: tx.checkpoint(size, reuse_within=reuse_within))
