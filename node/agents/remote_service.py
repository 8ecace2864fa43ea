"""The trio side of remote dispatch (see :mod:`node.agents.remote` for the protocol and its rules): serving
``agents.caps`` / ``agents.ask`` to peers, and asking a peer's agent for the local King."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from node.agents.errors import AgentError
from node.agents.remote import (
    ASK_SERVICE,
    CAPS_SERVICE,
    MAX_REMOTE_REQUEST_CHARS,
    PEER_BURST,
    PEER_MAX_CONCURRENT,
    PEER_RATE_PER_S,
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
        self.counters = {
            "served": 0,
            "refused": 0,
            "busy": 0,
            "rate_limited": 0,
            "malformed": 0,
            "asked": 0,
            "held_back": 0,
        }

    def register(self) -> None:
        self.node.register_app_handler(CAPS_SERVICE, self.serve_caps)
        self.node.register_app_handler(ASK_SERVICE, self.serve_ask)

    # ---------------------------------------------------------------------------------------- serving peers

    async def serve_caps(self, peer: bytes, body: bytes) -> bytes:
        n = self.node
        return sign_caps(n.identity.signing_key, n.identity.peer_id_hex, self.offered, n.clock.wall_ms())

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
            king = await self._king()
            runner = RemoteTools(await self._runner(), peer.hex())
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
