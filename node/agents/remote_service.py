"""The trio side of remote dispatch (see :mod:`node.agents.remote` for the protocol and its rules): serving
``agents.caps`` / ``agents.ask`` to peers, pushing this node's capabilities to peers as they become reachable
(``agents.caps_push``), and asking a peer's agent for the local King."""

from __future__ import annotations

import logging
import math
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from node.agents.errors import AgentError
from node.agents.remote import (
    ASK_SERVICE,
    CAPS_PUSH_SERVICE,
    CAPS_SERVICE,
    CAPS_TTL_MS,
    MAX_CAPS_PEERS,
    MAX_REMOTE_REQUEST_CHARS,
    PEER_BURST,
    PEER_MAX_CONCURRENT,
    PEER_RATE_PER_S,
    PUSH_BURST,
    PUSH_CONCURRENCY,
    PUSH_FAST_S,
    PUSH_FAST_WINDOW_S,
    PUSH_IDLE_S,
    PUSH_RATE_PER_S,
    PUSH_TIMEOUT_S,
    CapsCache,
    PeerBuckets,
    RemoteTools,
    answer_from_untrusted,
    caps_from_untrusted,
    encode_answer,
    encode_request,
    request_from_untrusted,
    sign_caps,
)
from node.agents.roles import policy_check
from node.agents.roster import Roster
from node.agents.settings import AgentsSettings
from node.agents.tools import ToolRunner
from node.agents.trace import Trace, TraceStore
from node.errors import NodeError
from node.wire.errors import MalformedFrame

if TYPE_CHECKING:
    from node.agents.king import King
    from node.node import Node

log = logging.getLogger("village.agents")


class RemoteAgents:
    def __init__(
        self,
        node: Node,
        roster: Roster,
        settings: AgentsSettings,
        *,
        king: Callable[[], Awaitable[King]],
        runner: Callable[[], Awaitable[ToolRunner]],
        traces: TraceStore,
        db_limiter: trio.CapacityLimiter,
    ) -> None:
        self.node = node
        self.roster = roster
        self.settings = settings
        self._king = king
        self._runner = runner
        self.traces = traces
        self.db_limiter = db_limiter
        offered = {a.lower() for a in settings.remote_agents}
        self.offered = [a for a in roster if a.name.lower() in offered]
        self.caps = CapsCache()
        self.outgoing = trio.Semaphore(settings.remote_max_concurrent)
        self.running = 0
        self.running_per_peer: dict[bytes, int] = {}  # at most remote_max_concurrent entries
        self.buckets = PeerBuckets(PEER_RATE_PER_S, PEER_BURST)
        self.push_buckets = PeerBuckets(PUSH_RATE_PER_S, PUSH_BURST)
        self.pushed: OrderedDict[bytes, int] = OrderedDict()  # peer -> wall ms of our last push (bounded)
        self._link_up = trio.Event()
        self.counters = {
            "caps_pushed": 0,
            "caps_push_failed": 0,
            "caps_push_received": 0,
            "caps_push_refused": 0,
            "served": 0,
            "refused": 0,
            "busy": 0,
            "rate_limited": 0,
            "malformed": 0,
            "failed": 0,
            "asked": 0,
            "held_back": 0,
        }

    def register(self) -> None:
        self.node.register_app_handler(CAPS_SERVICE, self.serve_caps)
        self.node.register_app_handler(ASK_SERVICE, self.serve_ask)
        self.node.register_app_handler(CAPS_PUSH_SERVICE, self.serve_caps_push)
        self.node.on_link_up(lambda _addr: self._link_up.set())

    # ---------------------------------------------------------------------------------------- serving peers

    async def serve_caps(self, peer: bytes, body: bytes) -> bytes:
        n = self.node
        return sign_caps(n.identity.signing_key, n.identity.peer_id_hex, self.offered, n.clock.wall_ms())

    async def serve_caps_push(self, peer: bytes, body: bytes) -> bytes:
        """A peer's own capabilities, pushed: verified against the key its announces pinned, kept like a pulled
        copy. The session authenticates ``peer``; the signature must be that peer's and name it."""
        n = self.node
        if not self.push_buckets.take(peer, n.clock.now()):
            self.counters["caps_push_refused"] += 1
            raise AgentError("rate limited: capabilities pushed too often")
        core = n.core
        info = core.peers.get(peer) if core is not None else None
        if info is None:
            self.counters["caps_push_refused"] += 1
            raise AgentError("capabilities from a peer that has not announced itself")
        try:
            caps = caps_from_untrusted(body, info.signing_public_key, peer.hex(), n.clock.wall_ms())
        except MalformedFrame as exc:
            self.counters["caps_push_refused"] += 1
            raise AgentError(str(exc)) from None
        self.caps.put(caps)
        self.counters["caps_push_received"] += 1
        return b"{}"

    async def push_forever(self) -> None:
        """Push this node's capabilities to every reachable peer that has no fresh copy from us: soon after a link
        comes up, then every :data:`PUSH_IDLE_S`. Nothing to push when no agent is offered."""
        if not self.offered:
            return
        fast_until = -math.inf
        while True:
            wait = PUSH_FAST_S if self.node.clock.now() < fast_until else PUSH_IDLE_S
            with trio.move_on_after(wait):
                await self._link_up.wait()
            if self._link_up.is_set():
                self._link_up = trio.Event()
                fast_until = self.node.clock.now() + PUSH_FAST_WINDOW_S
            await self.push_caps()

    async def push_caps(self) -> int:
        """One pass: push to the reachable peers whose copy from us is older than half its lifetime, at most
        :data:`MAX_CAPS_PEERS` per pass, :data:`PUSH_CONCURRENCY` at once (a peer that never answers holds one slot
        for :data:`PUSH_TIMEOUT_S`, not the whole pass). ``pushed`` remembers the peers of the peer table only (a
        peer that left it is forgotten), so it is bounded by that table, never cut below it: with more reachable
        peers than one pass pushes to, each is pushed once per half-lifetime, not every pass."""
        n = self.node
        core = n.core
        if core is None or not self.offered:
            return 0
        now, wall = n.clock.now(), n.clock.wall_ms()
        peers = list(core.peers)
        known = {p.peer_id for p in peers}
        for gone in [k for k in self.pushed if k not in known]:
            del self.pushed[gone]
        stale = [p for p in peers if wall - self.pushed.get(p.peer_id, -CAPS_TTL_MS) >= CAPS_TTL_MS // 2]
        due = [p.peer_id for p in stale if core.is_reachable(p, now)][:MAX_CAPS_PEERS]
        if not due:
            return 0
        body = sign_caps(n.identity.signing_key, n.identity.peer_id_hex, self.offered, wall)
        for peer in due:
            self.pushed[peer] = wall  # tried: not again before the copy would be half-way to expiry
            self.pushed.move_to_end(peer)
        sent = 0
        limiter = trio.CapacityLimiter(PUSH_CONCURRENCY)

        async def push(peer: bytes) -> None:
            nonlocal sent
            async with limiter:
                try:
                    await n.app_request(peer, CAPS_PUSH_SERVICE, body, timeout_s=PUSH_TIMEOUT_S)
                except NodeError:  # an older node without the service, a timeout, a refusal: it can still pull
                    self.counters["caps_push_failed"] += 1
                    return
            self.counters["caps_pushed"] += 1
            sent += 1

        async with trio.open_nursery() as nursery:
            for peer in due:
                nursery.start_soon(push, peer)
        return sent

    async def serve_ask(self, peer: bytes, body: bytes) -> bytes:
        try:
            name, request = request_from_untrusted(body)
        except MalformedFrame as exc:
            self.counters["malformed"] += 1
            raise AgentError(str(exc)) from None
        spec = next((a for a in self.offered if a.name.lower() == name.lower()), None)
        if spec is None:
            self.counters["refused"] += 1
            raise AgentError(f"agent {name[:64]!r} is not offered to remote callers here")
        mine = self.running_per_peer.get(peer, 0)
        if self.running >= self.settings.remote_max_concurrent or mine >= PEER_MAX_CONCURRENT:
            self.counters["busy"] += 1
            raise AgentError("busy: too many remote agent requests at once")
        if not self.buckets.take(peer, self.node.clock.now()):
            self.counters["rate_limited"] += 1
            raise AgentError("rate limited: too many remote agent requests from this peer")
        self.running += 1
        self.running_per_peer[peer] = mine + 1
        try:
            try:
                king = await self._king()
                runner = RemoteTools(await self._runner(), peer.hex())
            except NodeError as exc:  # a module or service that cannot load here: why is for this node's log only
                self.counters["failed"] += 1
                log.warning("agents: a remote ask from %s could not be served: %s", peer.hex()[:16], exc)
                raise AgentError("the agents could not answer") from None
            out = await king.ask(request, agent=spec.name, runner=runner, remote_caller=peer.hex())
        finally:
            self.running -= 1
            left = self.running_per_peer.pop(peer) - 1
            if left:
                self.running_per_peer[peer] = left
        self.counters["served"] += 1
        step = out["steps"][0]
        return encode_answer(spec.name, step["text"], step["ok"], step["sources"])

    # ------------------------------------------------------------------------------------- asking a peer

    async def ask(self, name: str, peer_ref: str, request: str) -> dict[str, Any]:
        request = request.strip()
        if not request or len(request) > MAX_REMOTE_REQUEST_CHARS:
            raise AgentError(f"a request to another node's agent is 1 to {MAX_REMOTE_REQUEST_CHARS} characters")
        rid = secrets.token_hex(8)
        trace = Trace(rid, request, int(self.node.clock.wall_ms()))
        verdict = policy_check(request)
        if not verdict["allowed"]:  # personal data never leaves in a request to another node
            self.counters["held_back"] += 1
            trace.step("King", "denied", tool=ASK_SERVICE, detail=verdict["reason"])
            await trio.to_thread.run_sync(self.traces.save, trace, limiter=self.db_limiter)
            raise AgentError(f"not sent to {peer_ref}: {verdict['reason']}")
        timeout = self.settings.remote_timeout_s
        try:
            peer = self.node.resolve_peer(peer_ref)
            caps = await self._caps(peer, timeout)
            offered = {n.lower(): n for n in caps.names()}
            if name.lower() not in offered:
                listed = ", ".join(caps.names()) or "no agents"
                raise AgentError(f"{peer_ref} does not offer {name} to remote callers (it offers {listed})")
            agent = offered[name.lower()]
            trace.step("King", "remote", tool=ASK_SERVICE, detail=f"to {agent} on peer {peer.hex()}")
            async with self.outgoing:
                self.counters["asked"] += 1
                body = await self.node.app_request(peer, ASK_SERVICE, encode_request(agent, request), timeout_s=timeout)
            answer = answer_from_untrusted(body)
        except MalformedFrame as exc:
            raise AgentError(f"{peer_ref} answered with something unreadable: {exc}") from None
        except AgentError:
            raise
        except NodeError as exc:  # unknown peer, timeout, the peer's refusal (AppRemoteError), mesh errors
            trace.step("King", "error", tool=ASK_SERVICE, detail=str(exc))
            await trio.to_thread.run_sync(self.traces.save, trace, limiter=self.db_limiter)
            raise AgentError(f"{name}@{peer_ref}: {exc}") from None
        label = f"{answer['agent']}@{peer_ref}"
        trace.step(label, "answer", detail=answer["text"])
        await trio.to_thread.run_sync(self.traces.save, trace, limiter=self.db_limiter)
        return {
            "id": rid,
            "answer": f"[{label}] {answer['text']}",
            "steps": [{"step": request, "routed": [], **answer, "agent": label, "data": None, "remote": peer.hex()}],
        }

    async def _caps(self, peer: bytes, wait_s: float) -> Any:
        now = self.node.clock.wall_ms()
        cached = self.caps.get(peer.hex(), now)
        if cached is not None:
            return cached
        core = self.node.core
        info = core.peers.get(peer) if core is not None else None
        if info is None:
            raise AgentError(f"peer {peer.hex()} has not announced itself: its signing key is unknown")
        body = await self.node.app_request(peer, CAPS_SERVICE, b"{}", timeout_s=wait_s)
        caps = caps_from_untrusted(body, info.signing_public_key, peer.hex(), now)
        self.caps.put(caps)
        return caps
