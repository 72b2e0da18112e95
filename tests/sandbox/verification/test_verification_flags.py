"""FlagThrottle: a scope's first flag, then one per enumeration bucket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sandbox.verification.flags import FlagThrottle

from sandbox.verification.enumeration import EnumerationPolicy

POLICY = EnumerationPolicy()  # 600 s window in 60 s buckets
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_first_flag_then_one_per_bucket() -> None:
    flags = FlagThrottle(POLICY)
    assert flags.due("sc-a", T0)
    assert not flags.due("sc-a", T0 + timedelta(seconds=59))
    assert flags.due("sc-b", T0)  # scopes are independent
    assert flags.due("sc-a", T0 + timedelta(seconds=60))
    assert not flags.due("sc-a", T0 + timedelta(seconds=61))
    assert flags.due("sc-a", T0 + timedelta(hours=1))


def test_memory_is_bounded_by_scopes_still_in_a_window() -> None:
    flags = FlagThrottle(POLICY)
    for i in range(10_001):
        assert flags.due(f"old-{i}", T0)
    later = T0 + timedelta(seconds=POLICY.window_s * 2)
    assert flags.due("new", later)  # the 10,002nd scope: the old ones are forgotten
    assert len(flags._last) == 1
    assert not flags.due("new", later)
