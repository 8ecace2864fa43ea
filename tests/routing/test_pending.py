"""PendingSet: the per-peer index and the retry-time heap agree with a plain scan after any sequence of changes."""

from __future__ import annotations

import dataclasses
import random

import nacl.signing

from node.identity import Identity
from node.routing.mesh import MeshCore
from node.routing.pending import PendingMessage, PendingSet
from node.routing.settings import MeshSection
from node.wire import DEFAULT_LIMITS


def _scan_due(msgs: dict[str, PendingMessage], now: float) -> set[str]:
    return {m.message_id for m in msgs.values() if m.next_try <= now}


def test_random_changes_match_a_plain_scan() -> None:
    rng = random.Random(7)
    ps = PendingSet()
    model: dict[str, PendingMessage] = {}
    peers = [bytes([i]) * 8 for i in range(4)]
    now = 0.0
    for step in range(3000):
        op = rng.random()
        if op < 0.35 or not model:
            mid = f"m{step}"
            p = PendingMessage(mid, rng.choice(peers), "t", created=now, next_try=now + rng.uniform(0, 10))
            ps.add(p)
            model[mid] = p
        elif op < 0.55:
            mid = rng.choice(list(model))
            assert ps.remove(mid) is model.pop(mid)
        elif op < 0.8:
            p = rng.choice(list(model.values()))
            ps.reschedule(p, now + rng.choice([0.0, rng.uniform(0, 10), p.next_try - now]))
        else:
            now += rng.uniform(0, 3)
            due = ps.pop_due(now)
            assert {p.message_id for p in due} == _scan_due(model, now)
            assert len(due) == len({p.message_id for p in due})  # never the same message twice
            for p in due:  # the caller reschedules or removes what it took
                if rng.random() < 0.5:
                    ps.remove(p.message_id)
                    del model[p.message_id]
                else:
                    ps.reschedule(p, now + rng.uniform(0.1, 10))
        expected_next = min((m.next_try for m in model.values()), default=None)
        assert ps.next_due() == expected_next
        assert len(ps) == len(model)
        for peer in peers:
            mine = [m for m in model.values() if m.peer_id == peer]
            assert ps.count_for(peer) == len(mine)
            assert {m.message_id for m in ps.for_peer(peer)} == {m.message_id for m in mine}


def test_a_removed_message_is_never_due_and_cannot_be_rescheduled_back() -> None:
    ps = PendingSet()
    p = PendingMessage("a", b"p" * 8, "t", created=0.0, next_try=1.0)
    ps.add(p)
    ps.remove("a")
    ps.reschedule(p, 0.5)
    assert ps.next_due() is None
    assert ps.pop_due(10.0) == []
    assert "a" not in ps


def test_a_message_for_an_unknown_peer_past_courier_time_does_not_spin_the_timer() -> None:
    """Regression: a held message whose peer was never heard (nothing to seal to) was rescheduled at `now` once
    courier_after_s had passed, so the core's timer never advanced (a busy loop in the daemon)."""
    ident = Identity(nacl.signing.SigningKey(bytes(range(32))), bytes(range(1, 33)))
    settings = dataclasses.replace(MeshSection(), courier_after_s=10.0)
    core = MeshCore(ident, settings, DEFAULT_LIMITS, "a", 1.7e12, random.Random(1))
    core.link_up("l1", 65_535, 0.0)
    core.queue_private("M1", b"\x42" * 8, "held", 0.0)  # a full peer ID nobody has announced
    now = 0.0
    for _ in range(50):
        t = core.get_timer()
        assert t is not None
        assert t > now or now == 0.0, f"timer stuck at {t} (now {now})"
        now = t
        core.handle_timer(now)
        if now > 200.0:
            break
    assert now > 200.0  # time moved on; the message is still held (not failed, not spinning)
    assert "M1" in core.pending
