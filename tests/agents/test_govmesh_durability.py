"""What GovMesh's core accepts reaches its store and its push queue even when the handler is cancelled mid-way,
and certificates adopted from the pending queue when their epoch begins are stored (review of the govmesh merge,
findings 2 and 3). GovMesh here sits on a stand-in node (a clock, no links): these paths touch nothing else."""

from __future__ import annotations

import types
from pathlib import Path

import nacl.signing
import trio
import trio.testing

from node.agents.governance import (
    MEMBERSHIP_ROUND,
    Action,
    ActionKind,
    Certificate,
    Electorate,
    Proposal,
    Value,
    VoteType,
    make_proposal,
    sign_vote,
)
from node.agents.governance.gossip import certificate_item, encode_push, proposal_item
from node.agents.govmesh import GovMesh
from node.agents.govsettings import GovernanceSettings
from node.agents.govstore import GovStore

NS = "village"
KEYS = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(4)]
PUBS = [bytes(k.verify_key) for k in KEYS]
NEW = nacl.signing.SigningKey(b"\x09" * 32)
E0 = Electorate.of(0, {p: 1 for p in PUBS})
E1 = Electorate.of(1, {**{p: 1 for p in PUBS}, bytes(NEW.verify_key): 1})
WALL_MS = 5_000


class _Clock:
    def wall_ms(self) -> int:
        return WALL_MS

    def now(self) -> float:
        return trio.current_time()


def _node() -> types.SimpleNamespace:
    return types.SimpleNamespace(clock=_Clock(), core=None)


def _cert(e: Electorate, p: Proposal, signers: list[nacl.signing.SigningKey]) -> Certificate:
    by = {e.index(bytes(k.verify_key)): k for k in signers}
    idx = sorted(i for i in by if i is not None)
    sigs = tuple(sign_vote(by[i], NS, p.epoch, p.hash, p.round, VoteType.PRECOMMIT, Value.YES).signature for i in idx)
    return Certificate(NS, p.epoch, p.round, p.hash, Value.YES, tuple(idx), sigs)


def _count(store: GovStore, table: str) -> int:
    return int(store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_a_cancelled_push_handler_still_stores_and_forwards(tmp_path: Path) -> None:
    store = GovStore(tmp_path / "v.sqlite")
    store.init(NS, E0)
    gov = store.load()
    limiter = trio.CapacityLimiter(1)
    mesh = GovMesh(_node(), gov, store, KEYS[0], GovernanceSettings(), db_limiter=limiter)  # type: ignore[arg-type]
    p = make_proposal(NS, 0, 0, Action(ActionKind.CONFIG, "x", 1), expires_at_ms=WALL_MS + 60_000, signer=KEYS[1])
    busy = trio.Event()

    async def main() -> None:
        async with trio.open_nursery() as nursery:

            async def hold_db() -> None:  # another user of the node's DB limiter (agent traces, stores ...)
                async with limiter:
                    busy.set()
                    await trio.sleep(5)

            nursery.start_soon(hold_db)
            await busy.wait()
            with trio.move_on_after(1) as scope:  # the node's APP_HANDLER_TIMEOUT_S
                await mesh._handle(b"peer", encode_push(NS, [proposal_item(p)]))
            assert not scope.cancelled_caught  # shielded: the handler finished its batch

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0.02))
    assert gov.proposal(p.hash) is not None
    assert _count(store, "proposals") == 1
    assert [it for it, _ in mesh._queue] == [proposal_item(p)]


def test_certificates_adopted_when_their_epoch_begins_are_stored_and_forwarded(tmp_path: Path) -> None:
    admit = make_proposal(
        NS,
        0,
        MEMBERSHIP_ROUND,
        Action(ActionKind.ADMIT, bytes(NEW.verify_key).hex(), 1),
        expires_at_ms=10**9,
        signer=KEYS[0],
    )
    cfg = make_proposal(NS, 1, 0, Action(ActionKind.CONFIG, "x", "y"), expires_at_ms=10**9, signer=KEYS[0])
    c0, c1 = _cert(E0, admit, KEYS[:3]), _cert(E1, cfg, [*KEYS[:3], NEW])
    store = GovStore(tmp_path / "v.sqlite")
    store.init(NS, E0)
    mesh = GovMesh(_node(), store.load(), store, KEYS[3], GovernanceSettings())  # type: ignore[arg-type]

    async def main() -> None:  # one catch-up page in the order catch_up sends it, then the next epoch's page
        await mesh._receive(
            b"peer", [proposal_item(admit), proposal_item(cfg), certificate_item(c0), certificate_item(c1)]
        )
        await mesh._receive(b"peer", [proposal_item(cfg), certificate_item(c1)])

    trio.run(main)
    assert mesh.gov.epoch == 1 and mesh.gov.state()["config"] == {"x": "y"}
    assert certificate_item(c1) in [it for it, _ in mesh._queue]
    store.close()
    again = GovStore(tmp_path / "v.sqlite").load()
    assert again.epoch == 1 and again.state()["config"] == {"x": "y"}


def test_a_silent_peer_does_not_stall_pushes_to_the_others(tmp_path: Path) -> None:
    """Each peer has its own push queue and sender: while one peer never answers (each push waits out
    gossip_timeout_s), the others get every batch at once (review finding 10)."""
    slow, fast = b"s" * 32, b"f" * 32
    got: dict[bytes, list[float]] = {slow: [], fast: []}

    async def app_request(peer: bytes, _service: str, _body: bytes, *, timeout_s: float) -> bytes:
        if peer == slow:
            await trio.sleep(timeout_s)  # the node's app_request would raise AppTimeout here; a timeout is enough
        got[peer].append(trio.current_time())
        return b""

    peers = [types.SimpleNamespace(peer_id=p, hops=1) for p in (slow, fast)]
    node = _node()
    node.core = types.SimpleNamespace(peers=peers, is_reachable=lambda _p, _now: True)
    node.app_request = app_request
    store = GovStore(tmp_path / "v.sqlite")
    store.init(NS, E0)
    mesh = GovMesh(node, store.load(), store, KEYS[0], GovernanceSettings(gossip_timeout_s=10.0))  # type: ignore[arg-type]
    items = [
        proposal_item(
            make_proposal(NS, 0, r, Action(ActionKind.CONFIG, "x", r), expires_at_ms=10**9, signer=KEYS[r % 4])
        )
        for r in range(3)
    ]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(mesh._pusher, nursery)
            t0 = trio.current_time()
            for it in items:  # three batches, one after the other
                mesh._enqueue(it, None)
                await trio.sleep(1)
            await trio.sleep(3 * 10 + 1)
            assert [t - t0 for t in got[fast]] == [0, 1, 2]  # never waited for the silent peer
            assert len(got[slow]) >= 2  # the silent one still gets its pushes, one after another
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0.02))
