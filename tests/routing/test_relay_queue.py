"""The relay queue's two bounds (entries and bytes) and its byte accounting."""

from __future__ import annotations

from node.routing.relay import RelayQueue


def test_byte_bound_refuses_a_relay_that_would_pass_it() -> None:
    q = RelayQueue(max_entries=100, max_bytes=1000)
    assert q.push(1.0, "a", b"x" * 600, ["l1"])
    assert not q.push(1.0, "b", b"y" * 500, ["l1"])  # 1,100 bytes > 1,000
    assert q.push(1.0, "c", b"z" * 400, ["l1"])  # exactly 1,000
    assert len(q) == 2
    assert q.queued_bytes == 1000


def test_entry_bound_still_holds() -> None:
    q = RelayQueue(max_entries=2, max_bytes=1 << 20)
    assert q.push(1.0, "a", b"1", ["l1"])
    assert q.push(1.0, "b", b"2", ["l1"])
    assert not q.push(1.0, "c", b"3", ["l1"])


def test_bytes_are_released_when_relays_leave_or_are_cancelled() -> None:
    q = RelayQueue(max_entries=100, max_bytes=1000)
    q.push(1.0, "a", b"x" * 600, ["l1"])
    q.push(2.0, "b", b"y" * 400, ["l1", "l2"])
    assert [r.key for r in q.pop_due(1.5)] == ["a"]
    assert q.queued_bytes == 400
    assert q.push(3.0, "c", b"z" * 600, ["l1"])  # room again after "a" left
    assert not q.heard_from("b", "l1")  # l2 still wants it
    assert q.heard_from("b", "l2")  # no link left: cancelled, bytes released
    assert q.queued_bytes == 600
    assert [r.key for r in q.pop_due(10.0)] == ["c"]
    assert q.queued_bytes == 0
