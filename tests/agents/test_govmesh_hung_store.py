"""A governance store call that never returns (a stuck PostgreSQL) costs one ``store_timeout_s``: the write
becomes ``persist_failed`` (kept for a retry), GovMesh's lock is released, our own vote is not sent unstored, and
the village's shutdown completes (review of the govfix merge, finding 2). Stand-in node: a clock, no links."""

from __future__ import annotations

import threading
import types
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import trio
import trio.testing

from node.agents.errors import GovernanceError
from node.agents.governance import Action, ActionKind, Electorate, Proposal, Value, Vote, make_proposal
from node.agents.governance.gossip import proposal_item
from node.agents.govmesh import GovMesh
from node.agents.govsettings import GovernanceSettings
from node.agents.govstore import GovStore
from node.agents.village import VillageGovernance

NS = "village"
KEYS = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(4)]
E0 = Electorate.of(0, {bytes(k.verify_key): 1 for k in KEYS})
WALL_MS = 5_000
SETTINGS = GovernanceSettings(store_timeout_s=2.0)


class HungStore(GovStore):
    """A real SQLite store whose writes (and close) block while ``hang`` is set, until ``release`` is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.hang = threading.Event()
        self.release = threading.Event()

    def _maybe_hang(self) -> None:
        if self.hang.is_set():
            assert self.release.wait(timeout=30), "the test never released the store"

    def save_proposal(self, p: Proposal) -> None:
        self._maybe_hang()
        super().save_proposal(p)

    def save_signed(self, v: Vote) -> None:
        self._maybe_hang()
        super().save_signed(v)

    def close(self) -> None:
        self._maybe_hang()
        super().close()


def _node() -> types.SimpleNamespace:
    clock = types.SimpleNamespace(wall_ms=lambda: WALL_MS, now=trio.current_time)
    return types.SimpleNamespace(clock=clock, core=None)


def _proposal(r: int) -> Proposal:
    return make_proposal(NS, 0, r, Action(ActionKind.CONFIG, "x", r), expires_at_ms=WALL_MS + 60_000, signer=KEYS[1])


def test_a_hung_write_fails_the_batch_and_releases_the_lock(tmp_path: Path) -> None:
    store = HungStore(tmp_path / "v.sqlite")
    store.init(NS, E0)
    mesh = GovMesh(_node(), store.load(), store, KEYS[0], SETTINGS)  # type: ignore[arg-type]
    p0, p1 = _proposal(0), _proposal(1)

    async def main() -> None:
        store.hang.set()
        with trio.fail_after(60):
            assert await mesh._receive(b"peer", [proposal_item(p0)]) == 1  # in the core and forwarded anyway
        assert not mesh._lock.locked()
        assert mesh.gossip.counters["persist_failed"] == 1 and mesh.gossip.counters["store_timeouts"] == 1
        assert mesh._unsaved  # kept for the next write
        with pytest.raises(GovernanceError, match="did not answer"):  # our vote is never sent unstored
            await mesh.cast(p0.hash, Value.YES)
        assert not mesh._lock.locked() and mesh.gov.votes(0, 0) == []
        store.hang.clear()
        store.release.set()  # the database answers again: the abandoned thread returns, the next batch retries
        with trio.fail_after(60):
            assert await mesh._receive(b"peer", [proposal_item(p1)]) == 1
        assert mesh._unsaved == []

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0.02))
    store.close()
    again = GovStore(tmp_path / "v.sqlite").load()
    assert again.proposal(p0.hash) is not None and again.proposal(p1.hash) is not None


def test_shutdown_completes_while_the_store_hangs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = HungStore(tmp_path / "v.sqlite")
    provider = types.SimpleNamespace(open_store=lambda _ns, _signer: store)
    node: Any = _node()
    node.identity = types.SimpleNamespace(signing_public=bytes(KEYS[0].verify_key), signing_key=KEYS[0])
    node.service = lambda _name: provider
    node.register_app_handler = lambda _service, _handler: None
    node.on_link_up = lambda _cb: None
    settings = GovernanceSettings(village_members=tuple(bytes(k.verify_key).hex() for k in KEYS), store_timeout_s=2.0)
    village = VillageGovernance(node, settings, tmp_path, trio.CapacityLimiter(1))

    async def main() -> None:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(village.run)
                store.hang.set()  # PostgreSQL stops answering; then the node shuts down
                nursery.cancel_scope.cancel()

    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0.02))
    finally:
        store.release.set()
    assert "did not close" in caplog.text  # the close was given up on, not waited for
