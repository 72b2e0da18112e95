"""``audit.log.Effect``: other writes committed in the same transaction as entries."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from audit.errors import BadEntry
from audit.log import AuditLog, Effect, StoreError
from tests.audit.audit_helpers import make_fields
from tests.audit.test_audit_log import db_url, log  # noqa: F401  (fixtures)

SIDE = sa.Table(
    "side_effects",
    sa.MetaData(),
    sa.Column("tag", sa.String(32), primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
)


class Tagged(Effect):
    """Writes its tag; records each batch it was applied to."""

    batches: ClassVar[list[list[str]]] = []

    def __init__(self, tag: str, *, deny: bool = False, bad: bool = False) -> None:
        self.tag, self.deny, self.bad = tag, deny, bad

    @classmethod
    def apply_all(cls, conn: Connection, effects: Sequence[Any]) -> None:
        cls.batches.append([e.tag for e in effects])
        conn.execute(SIDE.insert(), [{"tag": e.tag, "n": len(effects)} for e in effects])

    def entry_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        if self.bad:
            return {**fields, "epsilon": 0.5}  # not a decimal string: refused
        if self.deny:
            return {**fields, "decision": "deny", "reason": "refused at commit"}
        return fields


@pytest.fixture
def side(log: AuditLog) -> Iterator[AuditLog]:  # noqa: F811
    SIDE.create(log.engine)
    Tagged.batches = []
    yield log


def tags(log: AuditLog) -> set[str]:  # noqa: F811
    with log.engine.connect() as conn:
        return {str(t) for t in conn.execute(sa.select(SIDE.c.tag)).scalars()}


def test_an_effect_commits_with_its_entry_and_may_rewrite_it(side: AuditLog) -> None:
    kept = side.append(make_fields(0), Tagged("a"))
    refused = side.append(make_fields(1), Tagged("b", deny=True))
    assert tags(side) == {"a", "b"}
    assert kept.leaf == side.leaf(kept.index)
    assert side.entries().entries[kept.index].entry["decision"] == "allow"
    assert side.entries().entries[refused.index].entry["decision"] == "deny"
    assert side.entries().entries[refused.index].entry["reason"] == "refused at commit"


def test_a_bad_rewrite_or_a_failing_write_commits_nothing(side: AuditLog) -> None:
    side.append(make_fields(0), Tagged("a"))
    with pytest.raises(BadEntry):
        side.append(make_fields(1), Tagged("b", bad=True))
    with pytest.raises(StoreError):
        side.append(make_fields(2), Tagged("a"))  # duplicate key in the side table
    assert tags(side) == {"a"}
    assert side.size() == 1


def test_effects_of_a_batch_are_applied_together_in_queue_order(side: AuditLog) -> None:
    n = 40
    start = threading.Barrier(8)

    def run(k: int) -> None:
        start.wait()
        for i in range(k, n, 8):
            side.append(make_fields(i, who=f"t{i}"), Tagged(f"t{i}"))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tags(side) == {f"t{i}" for i in range(n)}
    assert sum(len(b) for b in Tagged.batches) == n
    # Each batch saw its effects in the order their entries were appended.
    order = [e.entry["who"] for e in side.entries(limit=1000).entries]
    assert [t for b in Tagged.batches for t in b] == order


def test_a_failed_batch_fails_only_its_callers_and_the_lead_passes_on(side: AuditLog) -> None:
    # Every fifth call repeats a tag already written, so its whole batch fails; the
    # calls of other batches must still commit, and no caller may be left waiting.
    side.append(make_fields(0), Tagged("taken"))
    outcomes: dict[str, str] = {}

    def run(k: int) -> None:
        for i in range(k, 120, 8):
            tag = "taken" if i % 5 == 0 else f"t{i}"
            try:
                side.append(make_fields(i, who=f"w{i}"), Tagged(tag))
            except StoreError:
                outcomes[f"w{i}"] = "failed"
            else:
                outcomes[f"w{i}"] = "committed"

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "an append never returned"
    assert len(outcomes) == 120
    committed = {w for w, o in outcomes.items() if o == "committed"}
    assert all(outcomes[f"w{i}"] == "failed" for i in range(0, 120, 5))
    assert committed  # batches without a repeated tag went through
    entries = side.entries(limit=1000).entries
    assert [e.index for e in entries] == list(range(len(entries)))
    assert {e.entry["who"] for e in entries[1:]} == committed
    assert tags(side) == {"taken"} | {f"t{w[1:]}" for w in committed}


class Other(Effect):
    """A second kind of effect: records where it fell among the Tagged ones."""

    seen: ClassVar[list[str]] = []

    def __init__(self, tag: str) -> None:
        self.tag = tag

    @classmethod
    def apply_all(cls, conn: Connection, effects: Sequence[Any]) -> None:
        cls.seen.extend(f"other:{e.tag}" for e in effects)
        Tagged.batches.append([f"other:{e.tag}" for e in effects])


def test_effects_of_different_kinds_are_applied_in_queue_order(side: AuditLog) -> None:
    # Queued [tagged a, other x, tagged b] in one batch: a change queued between two
    # calls (say, a revocation between two verifications) is applied between them.
    hold = threading.Event()
    release = threading.Event()

    class Blocker(Effect):
        @classmethod
        def apply_all(cls, conn: Connection, effects: Sequence[Any]) -> None:
            hold.set()
            release.wait(10)

    first = threading.Thread(target=side.append, args=(make_fields(0), Blocker()))
    first.start()
    assert hold.wait(10)  # the leader is inside its transaction; the rest queue up
    queued = [("a", Tagged("a")), ("x", Other("x")), ("b", Tagged("b"))]
    threads = []
    for i, (_, effect) in enumerate(queued, start=1):
        t = threading.Thread(target=side.append, args=(make_fields(i), effect))
        t.start()
        threads.append(t)
        while not side._queue or side._queue[-1].effect is not effect:  # queue order known
            threading.Event().wait(0.001)
    release.set()
    for t in [first, *threads]:
        t.join(10)
    assert Tagged.batches == [["a"], ["other:x"], ["b"]]
