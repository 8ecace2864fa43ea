"""Remote dispatch: the King asks an agent on another node, over the node's encrypted app channel.

Two app services (``node.register_app_handler`` / ``node.app_request``; Noise-encrypted end to end):

* ``agents.caps``: a node's **capabilities**, the agents it serves to remote callers (``[agents] remote_agents``)
  with a short mission, as a document signed by the node's Ed25519 key. A caller verifies it against the signing
  key the peer's announces pinned, checks it names that peer and has not expired, and keeps it (bounded:
  :data:`MAX_CAPS_PEERS` peers, :data:`MAX_CAPS_BYTES` each).
* ``agents.caps_push``: the same signed document, pushed by a node that serves agents to each peer it can reach
  when a link comes up (and again before the copy expires), so a caller usually has it before it asks. Accepted
  only as the capabilities of the session's own peer, verified like a pulled copy, within a per-peer bucket
  (:data:`PUSH_RATE_PER_S`, :data:`PUSH_BURST`), into the same bounded cache.
* ``agents.ask``: ``{"v": 1, "agent": NAME, "request": TEXT}``. The serving node answers only for an agent it
  advertises, at most ``remote_max_concurrent`` at once and :data:`PEER_MAX_CONCURRENT` per peer (more: "busy"),
  within a per-peer token bucket (:data:`PEER_RATE_PER_S`, :data:`PEER_BURST`; more: "rate limited"), and runs
  it with :class:`RemoteTools`: read-only tools only, knowledge-base searches restricted to *shared* documents,
  every call through the registry as
  ``agents:<Agent>@<caller peer>`` (audited). The answer is cut to :data:`MAX_ANSWER_CHARS` and
  :data:`MAX_SOURCES` sources.

The calling side never sends personal data: the request goes through the privacy rule (``policy_check``) first and
is refused locally if it names a personal category; nothing from the twin or the local knowledge base is added.
Both sides trace the exchange (kind ``remote``).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

from node.agents.errors import AgentError, ToolDenied, ToolUnavailable
from node.agents.roster import AgentSpec
from node.agents.tools import ToolRunner
from node.wire.errors import MalformedFrame

log = logging.getLogger("village.agents")

CAPS_SERVICE = "agents.caps"
CAPS_PUSH_SERVICE = "agents.caps_push"
ASK_SERVICE = "agents.ask"
CAPS_NAMESPACE = b"aivillage/agents/caps/v1\x00"
MAX_CAPS_BYTES = 8_000
MAX_CAPS_PEERS = 64
MAX_CAPS_AGENTS = 32
MAX_MISSION_CHARS = 200
MAX_REQUEST_BYTES = 4_000
MAX_REMOTE_REQUEST_CHARS = 1_000
MAX_ANSWER_CHARS = 4_000
MAX_ANSWER_BYTES = 64_000  # an encoded answer: 4,000 characters and 5 sources, JSON-escaped
MAX_SOURCES = 5
CAPS_TTL_MS = 3_600_000
# One peer's share of the serving side: requests refill at this rate up to a burst, and run this many at once.
PEER_RATE_PER_S = 0.2  # one request every 5 s on average from one peer
PEER_BURST = 5
PEER_MAX_CONCURRENT = 1
MAX_RATE_PEERS = 1_024  # buckets kept; the fullest (most idle) peer's bucket is forgotten first
# Pushed capabilities: a peer may push a few at once (a flapping link), then one a minute.
PUSH_RATE_PER_S = 1 / 60
PUSH_BURST = 3
PUSH_FAST_S = 2.0  # after a link comes up, look for newly reachable peers this often ...
PUSH_FAST_WINDOW_S = 30.0  # ... for this long (the peer announces itself after the link is up)
PUSH_IDLE_S = 60.0  # otherwise this often (peers reached over several hops, copies about to expire)
PUSH_TIMEOUT_S = 10.0
PUSH_CONCURRENCY = 8  # pushes in flight at once in one pass
# What a remote caller's agent may use: read-only, and rag.query only over shared documents.
REMOTE_SAFE_TOOLS = frozenset({"rag.query"})


@dataclass(frozen=True, slots=True)
class Capabilities:
    peer: str  # peer ID hex of the serving node
    agents: tuple[tuple[str, str], ...]  # (name, mission)
    issued_ms: int
    expires_ms: int

    def names(self) -> list[str]:
        return [n for n, _ in self.agents]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_untrusted(body: bytes, what: str) -> Any:
    """``json.loads`` for a peer's bytes: NaN/Infinity refused, deep nesting (RecursionError) a MalformedFrame."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise MalformedFrame(f"bad {what}") from None


def _ms(value: Any) -> int:
    if type(value) is not int:  # not bool, not float (no Infinity, no 1e400)
        raise TypeError("a time in ms is an integer")
    return value


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_caps(key: nacl.signing.SigningKey, peer_hex: str, specs: list[AgentSpec], now_ms: int) -> bytes:
    doc = {
        "peer": peer_hex,
        "agents": [[s.name, s.mission[:MAX_MISSION_CHARS]] for s in specs[:MAX_CAPS_AGENTS]],
        "issued_ms": now_ms,
        "expires_ms": now_ms + CAPS_TTL_MS,
    }
    sig = key.sign(CAPS_NAMESPACE + _canonical(doc)).signature
    return _canonical({"v": 1, "doc": doc, "sig": sig.hex()})


def caps_from_untrusted(body: bytes, signing_public: bytes, peer_hex: str, now_ms: int) -> Capabilities:
    """Parse and verify a peer's capabilities; raises MalformedFrame on anything wrong."""
    if len(body) > MAX_CAPS_BYTES:
        raise MalformedFrame("capabilities too large")
    try:
        outer = _json_untrusted(body, "capabilities")
        doc, sig = outer["doc"], bytes.fromhex(outer["sig"])
        if outer.get("v") != 1 or not isinstance(doc, dict):
            raise MalformedFrame("unknown capabilities version")
        nacl.signing.VerifyKey(signing_public).verify(CAPS_NAMESPACE + _canonical(doc), sig)
        agents = tuple((str(n), str(m)[:MAX_MISSION_CHARS]) for n, m in doc["agents"][:MAX_CAPS_AGENTS])
        # Kept at most CAPS_TTL_MS from now, whatever expiry the peer signed.
        expires_ms = min(_ms(doc["expires_ms"]), now_ms + CAPS_TTL_MS)
        caps = Capabilities(str(doc["peer"]), agents, _ms(doc["issued_ms"]), expires_ms)
    except (ValueError, KeyError, TypeError, nacl.exceptions.BadSignatureError) as exc:
        raise MalformedFrame(f"bad capabilities: {type(exc).__name__}") from None
    if caps.peer != peer_hex:
        raise MalformedFrame("capabilities signed for another peer")
    if not caps.issued_ms - 300_000 <= now_ms < caps.expires_ms:
        raise MalformedFrame("capabilities expired or from the future")
    return caps


class PeerBuckets:
    """Per-peer token buckets (sans-IO: the caller passes ``now`` in seconds); bounded to ``max_peers`` buckets."""

    def __init__(self, rate_per_s: float, burst: int, max_peers: int = MAX_RATE_PEERS) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_peers = max_peers
        self._buckets: dict[bytes, tuple[float, float]] = {}  # peer -> (tokens, last refill time)

    def take(self, peer: bytes, now: float) -> bool:
        tokens, last = self._buckets.get(peer, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate_per_s)
        if peer not in self._buckets and len(self._buckets) >= self.max_peers:
            idle = max(self._buckets, key=lambda p: self._level(p, now))
            del self._buckets[idle]
        if tokens < 1.0:
            self._buckets[peer] = (tokens, now)
            return False
        self._buckets[peer] = (tokens - 1.0, now)
        return True

    def _level(self, peer: bytes, now: float) -> float:
        tokens, last = self._buckets[peer]
        return tokens + max(0.0, now - last) * self.rate_per_s

    def __len__(self) -> int:
        return len(self._buckets)


class CapsCache:
    def __init__(self, max_peers: int = MAX_CAPS_PEERS) -> None:
        self.max_peers = max_peers
        self._caps: OrderedDict[str, Capabilities] = OrderedDict()

    def get(self, peer_hex: str, now_ms: int) -> Capabilities | None:
        c = self._caps.get(peer_hex)
        if c is None or now_ms >= c.expires_ms:
            return None
        self._caps.move_to_end(peer_hex)
        return c

    def put(self, caps: Capabilities) -> None:
        self._caps[caps.peer] = caps
        self._caps.move_to_end(caps.peer)
        while len(self._caps) > self.max_peers:
            self._caps.popitem(last=False)


def encode_request(agent: str, request: str) -> bytes:
    return json.dumps({"v": 1, "agent": agent, "request": request}).encode()


def request_from_untrusted(body: bytes) -> tuple[str, str]:
    if len(body) > MAX_REQUEST_BYTES:
        raise MalformedFrame("remote agent request too large")
    d = _json_untrusted(body, "remote agent request")
    try:
        agent, request = d["agent"], d["request"]
    except (ValueError, KeyError, TypeError):
        raise MalformedFrame("bad remote agent request") from None
    if d.get("v") != 1 or not isinstance(agent, str) or not isinstance(request, str):
        raise MalformedFrame("bad remote agent request")
    if not request.strip() or len(request) > MAX_REMOTE_REQUEST_CHARS:
        raise MalformedFrame(f"a remote request is 1 to {MAX_REMOTE_REQUEST_CHARS} characters")
    return agent, request


def encode_answer(agent: str, text: str, ok: bool, sources: list[dict[str, Any]]) -> bytes:
    cut = [{"source": str(s.get("source", ""))[:512], "title": str(s.get("title", ""))[:200]} for s in sources]
    return json.dumps(
        {"v": 1, "agent": agent, "text": text[:MAX_ANSWER_CHARS], "ok": ok, "sources": cut[:MAX_SOURCES]}
    ).encode()


def answer_from_untrusted(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_ANSWER_BYTES:
        raise MalformedFrame("remote agent answer too large")
    d = _json_untrusted(body, "remote agent answer")
    try:
        out = {
            "agent": str(d["agent"])[:64],
            "text": str(d["text"])[:MAX_ANSWER_CHARS],
            "ok": bool(d["ok"]),
            "sources": [
                {"source": str(s["source"])[:512], "title": str(s.get("title", ""))[:200]}
                for s in d["sources"][:MAX_SOURCES]
            ],
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        raise MalformedFrame("bad remote agent answer") from None
    return out


class RemoteTools:
    """The tool runner of an agent serving a remote caller: read-only tools, shared documents only, audited as
    ``<Agent>@<caller peer>`` by the registry."""

    def __init__(self, inner: ToolRunner, caller_hex: str) -> None:
        self.inner = inner
        self.caller_hex = caller_hex

    async def call_as(self, agent: str, allowed: frozenset[str], tool: str, args: Mapping[str, Any]) -> Any:
        if tool not in REMOTE_SAFE_TOOLS:
            raise ToolDenied(f"{tool} is not open to remote callers")
        safe = dict(args)
        if tool == "rag.query":
            safe["shared_only"] = True
        try:
            return await self.inner.call_as(f"{agent}@{self.caller_hex[:16]}", allowed & REMOTE_SAFE_TOOLS, tool, safe)
        except (ToolDenied, ToolUnavailable):
            raise
        except AgentError as exc:
            # The tool's own error may name this node's paths or installed modules: the remote peer gets a generic
            # text, the owner's log says why.
            log.warning("%s for peer %s: %s failed: %s", agent, self.caller_hex[:16], tool, exc)
            raise AgentError(f"{tool} failed on this node") from None


def split_target(agent: str) -> tuple[str, str | None]:
    """``"Sage@bob"`` -> ("Sage", "bob"); ``"Sage"`` -> ("Sage", None)."""
    name, sep, peer = agent.partition("@")
    if sep and (not name or not peer):
        raise AgentError(f"{agent!r}: use AGENT@PEER")
    return name, (peer if sep else None)
