"""Federated query: ask reachable peers' knowledge bases over the mesh app channel, merge by trust.

Wire (service :data:`SERVICE` on :mod:`node.routing.app`, inside the peers' Noise sessions), JSON in UTF-8::

    request   {"v": 1, "q": <query text, <= MAX_QUERY_CHARS>, "k": <1..MAX_PEER_HITS>}
    response  {"v": 1, "hits": [{"doc": int, "chunk": int, "title": str, "source": str,
                                 "snippet": str, "claim": str}, ...]}

``doc``/``chunk`` are opaque per-answer numbers (not the answering node's ids) and no score is sent (the merge uses
rank): the answer is computed over shared documents alone and is byte-identical whatever unshared content the node
holds. A legacy ``score`` field is still accepted (and ignored for ranking) when decoding.

Answering side (:class:`FederatedResponder`): runs the local search restricted to shared documents
(:class:`SharedSearch`, implemented by the RAG service), then checks *again*, against the store, that every hit's
document is marked shared — a hit whose document is not is dropped and counted, so an unshared document never
leaves the node even if the search had a bug. At most ``k`` hits, snippets cut to :data:`MAX_SNIPPET_CHARS`, and
hits are added only while the encoded answer stays within ``max_answer_bytes``.

Asking side (:func:`federated_query`): every reachable peer (at most ``max_peers``, nearest first) is asked in
parallel with its own timeout; a slow, silent or failing peer is reported in ``peers`` and never delays the others
beyond the timeout. Answers are parsed as untrusted (bounded, typed; a malformed answer counts as that peer's
failure). Merging: each hit's weight is reciprocal-rank ``1 / (RRF_K + rank)`` in its peer's list (scores of
different peers are not comparable) times its trust — the subjective-logic expectation of the hit's claim, fusing
the peer's assertion (discounted by the peer's Beta reputation) with any local support of the same claim
(:meth:`node.rag.trust.TrustStore.opinion_for_claim`). The same claim from several peers is one result listing
every peer (its weight is the sum; a peer repeating a claim counts once, at its first rank). Local hits, when given,
join the merge as origin ``"local"``.

Limits, honestly: a peer's claim key is its own word (we see a snippet, not the chunk), so a lying peer can add its
support to a claim whose text it knows; what that buys it is bounded by its reputation (discounting), and the
result shown is the local or first peer's copy. The query text itself goes to every peer asked (inside Noise).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import trio

from node.errors import MeshError, NodeError
from node.rag.errors import RagError
from node.rag.trust import ChunkTrust, Opinion, TrustStore, claim_hash, peer_source_key
from node.routing.app import APP_MAX_BODY_BYTES, AppError, AppRemoteError, AppTimeout
from node.textsafe import has_lone_surrogate

if TYPE_CHECKING:
    from node.clock import Clock
    from node.rag.service import RagService
    from node.routing.mesh import MeshCore

log = logging.getLogger("village.rag.federated")

SERVICE = "rag.query"
PROTOCOL_VERSION = 1
MAX_QUERY_CHARS = 2_000  # a federated query text is cut to this before it leaves
MAX_PEER_HITS = 20  # hits asked of / accepted from one peer
MAX_SNIPPET_CHARS = 400  # per hit, both ways
MAX_FIELD_CHARS = 512  # title/source per hit
DEFAULT_TIMEOUT_S = 3.0  # per peer
DEFAULT_MAX_PEERS = 16  # peers asked per query
DEFAULT_ANSWER_BYTES = 16_384  # an answer's encoded size (<= the app channel's bound)
RRF_K = 60.0  # reciprocal-rank constant of the merge


@dataclass(frozen=True, slots=True)
class SharedHit:
    """One hit of the answering node's local search (what :class:`SharedSearch` returns)."""

    doc_id: int
    chunk_id: int
    score: float
    title: str
    source: str
    snippet: str
    text: str  # the chunk's full text (for the claim key; never sent)


class SharedSearch(Protocol):
    """What the answering side needs from the knowledge base (the RAG service implements it)."""

    async def search_shared(self, text: str, k: int) -> list[SharedHit]:
        """The best hits among documents marked shared."""
        ...

    async def shared_doc_ids(self, doc_ids: Sequence[int]) -> set[int]:
        """Those of ``doc_ids`` whose document is marked shared now (read from the store)."""
        ...


class ClaimTrust(Protocol):
    """What the asking side needs for trust weighting (see :class:`StoreClaimTrust`)."""

    async def claim_opinion(self, claim: str, peers: Sequence[str]) -> ChunkTrust:
        """The fused opinion on ``claim``: the local store's sources of it plus these peers (hex IDs) asserting it."""
        ...


@dataclass(slots=True)
class FederatedCounters:
    queries_answered: int = 0
    hits_sent: int = 0
    unshared_dropped: int = 0  # hits the search returned for an unshared document (dropped before sending)
    hits_cut_for_size: int = 0
    bad_requests: int = 0


class FederatedResponder:
    """The app-channel handler for :data:`SERVICE`."""

    def __init__(self, search: SharedSearch, *, max_answer_bytes: int = DEFAULT_ANSWER_BYTES) -> None:
        if not 256 <= max_answer_bytes <= APP_MAX_BODY_BYTES:
            raise RagError(f"max_answer_bytes must be from 256 to {APP_MAX_BODY_BYTES}")
        self.search = search
        self.max_answer_bytes = max_answer_bytes
        self.counters = FederatedCounters()

    async def handle(self, peer_id: bytes, body: bytes) -> bytes:
        text, k = self._parse_request_untrusted(body)
        try:
            hits = await self.search.search_shared(text, k)
            allowed = await self.search.shared_doc_ids(sorted({h.doc_id for h in hits}))
        except NodeError as exc:  # details (paths, SQL) stay in the local log; the peer gets a generic text
            log.warning("federated query from %s failed: %s", peer_id.hex(), exc)
            raise RagError("the knowledge base could not answer") from exc
        out: list[dict[str, Any]] = []
        size = len(_dumps({"v": PROTOCOL_VERSION, "hits": []}))
        opaque_docs: dict[int, int] = {}
        for h in hits[:k]:
            if h.doc_id not in allowed:
                self.counters.unshared_dropped += 1
                continue
            # No raw score and no local ids: "doc" numbers documents in order of first appearance within this
            # answer and "chunk" is the hit's position, so the answer reveals nothing about the store beyond it.
            item = {
                "doc": opaque_docs.setdefault(h.doc_id, len(opaque_docs) + 1),
                "chunk": len(out) + 1,
                "title": h.title[:MAX_FIELD_CHARS],
                "source": h.source.rstrip("/").rsplit("/", 1)[-1][:MAX_FIELD_CHARS],  # never the local path
                "snippet": h.snippet[:MAX_SNIPPET_CHARS],
                "claim": claim_hash(h.text),
            }
            grow = len(_dumps(item)) + 1
            if size + grow > self.max_answer_bytes:
                self.counters.hits_cut_for_size += 1
                continue
            size += grow
            out.append(item)
        self.counters.queries_answered += 1
        self.counters.hits_sent += len(out)
        log.info("federated query from %s answered with %d hit(s)", peer_id.hex(), len(out))
        return _dumps({"v": PROTOCOL_VERSION, "hits": out})

    def _parse_request_untrusted(self, body: bytes) -> tuple[str, int]:
        try:
            req = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):  # bad UTF-8 or JSON, a huge number, deep nesting
            self.counters.bad_requests += 1
            raise RagError("malformed federated query (not UTF-8 JSON)") from None
        if has_lone_surrogate(req):  # "\\ud800" parses, but could never be answered or printed as UTF-8
            self.counters.bad_requests += 1
            raise RagError("malformed federated query (a lone surrogate)")
        if not isinstance(req, dict) or req.get("v") != PROTOCOL_VERSION:
            self.counters.bad_requests += 1
            raise RagError(f"federated query version must be {PROTOCOL_VERSION}")
        text, k = req.get("q"), req.get("k")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_QUERY_CHARS:
            self.counters.bad_requests += 1
            raise RagError(f"federated query text must have 1 to {MAX_QUERY_CHARS} characters")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_PEER_HITS:
            self.counters.bad_requests += 1
            raise RagError(f"federated query k must be from 1 to {MAX_PEER_HITS}")
        return text.strip(), k


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def encode_request(text: str, k: int) -> bytes:
    text = text.strip()[:MAX_QUERY_CHARS]
    if not text:
        raise RagError("the query is empty")
    return _dumps({"v": PROTOCOL_VERSION, "q": text, "k": max(1, min(k, MAX_PEER_HITS))})


@dataclass(frozen=True, slots=True)
class PeerHit:
    """A hit as a peer reported it (parsed, bounded)."""

    doc_id: int
    chunk_id: int
    score: float
    title: str
    source: str
    snippet: str
    claim: str


def decode_answer_untrusted(body: bytes, k: int) -> list[PeerHit]:
    """A peer's answer; raises :class:`RagError` if it is not a well-formed answer. Extra hits beyond ``k`` and
    over-long strings are cut."""
    try:
        ans = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):  # bad UTF-8 or JSON, a huge number, deep nesting
        raise RagError("the peer's answer is not UTF-8 JSON") from None
    if has_lone_surrogate(ans):  # "\\ud800" parses, but no UTF-8 output (the control socket's) can carry it
        raise RagError("the peer's answer holds a lone surrogate (not UTF-8 text)")
    if not isinstance(ans, dict) or ans.get("v") != PROTOCOL_VERSION or not isinstance(ans.get("hits"), list):
        raise RagError("the peer's answer is not a version-1 hit list")
    out: list[PeerHit] = []
    for item in ans["hits"][: min(k, MAX_PEER_HITS)]:
        if not isinstance(item, dict):
            raise RagError("a hit in the peer's answer is not an object")
        doc, chunk, score = item.get("doc"), item.get("chunk"), item.get("score", 0.0)
        strs = [item.get(f) for f in ("title", "source", "snippet", "claim")]
        # type(), not isinstance(): a JSON true/false is a bool, which isinstance(.., int) would take as 1/0
        if not (type(doc) is int and type(chunk) is int and type(score) in (int, float)):
            raise RagError("a hit in the peer's answer lacks doc/chunk/score numbers")
        if not all(isinstance(s, str) for s in strs):
            raise RagError("a hit in the peer's answer lacks title/source/snippet/claim strings")
        try:
            score_f = float(score)
        except OverflowError:
            raise RagError("a hit's score in the peer's answer is out of range") from None
        if not math.isfinite(score_f):
            raise RagError("a hit's score in the peer's answer is not finite")
        title, source, snip, claim = (str(s) for s in strs)
        out.append(
            PeerHit(
                doc,
                chunk,
                score_f,
                title[:MAX_FIELD_CHARS],
                source[:MAX_FIELD_CHARS],
                snip[:MAX_SNIPPET_CHARS],
                claim[:64],
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class PeerOutcome:
    peer_id: str
    nickname: str
    status: str  # "ok", "timeout", "error" (the peer answered an error or could not be asked), "malformed"
    hits: int
    elapsed_s: float
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "nickname": self.nickname,
            "status": self.status,
            "hits": self.hits,
            "elapsed_s": round(self.elapsed_s, 3),
            "detail": self.detail,
        }


@dataclass(slots=True)
class FederatedHit:
    origin: str  # "local" or the hex peer ID of the first peer that returned it
    peers: list[str]  # every origin that returned this claim
    nickname: str
    doc_id: int
    chunk_id: int
    title: str
    source: str
    snippet: str
    score: float  # the origin's own score
    claim: str
    trust: float
    uncertainty: float
    opinion: Opinion
    weight: float = 0.0  # merge weight (sum over origins of trust / (RRF_K + rank))

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "origin_peer": None if self.origin == "local" else self.origin,
            "peers": list(self.peers),
            "nickname": self.nickname,
            "doc_id": self.doc_id,
            "id": self.chunk_id,
            # what `rag.feedback` takes: the chunk id of a local result, "<peer hex>:<claim>" of a peer's
            "ref": str(self.chunk_id) if self.origin == "local" else f"{self.origin}:{self.claim}",
            "claim": self.claim,
            "title": self.title,
            "source": self.source,
            "snippet": self.snippet,
            "score": round(self.score, 6),
            "weight": round(self.weight, 8),
            "trust": round(self.trust, 6),
            "uncertainty": round(self.uncertainty, 6),
            "belief": round(self.opinion.b, 6),
            "disbelief": round(self.opinion.d, 6),
        }


@dataclass(slots=True)
class FederatedResult:
    hits: list[FederatedHit]
    peers: list[PeerOutcome] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"results": [h.to_json() for h in self.hits], "peers": [p.to_json() for p in self.peers]}


class StoreClaimTrust:
    """:class:`ClaimTrust` over a :class:`TrustStore`, run in a worker thread behind the caller's limiter."""

    def __init__(self, store: TrustStore, limiter: trio.CapacityLimiter, wall_s: Callable[[], float]) -> None:
        self.store, self.limiter, self.wall_s = store, limiter, wall_s

    async def claim_opinion(self, claim: str, peers: Sequence[str]) -> ChunkTrust:
        now = self.wall_s()
        keys = [peer_source_key(p) for p in peers]
        return await trio.to_thread.run_sync(
            lambda: self.store.opinion_for_claim(claim, now, extra_support=keys), limiter=self.limiter
        )


class AppRequester(Protocol):
    """The part of :class:`node.node.Node` that asks peers (an in-process Node in tests and daemons)."""

    async def app_request(self, peer_ref: str | bytes, service: str, body: bytes, *, timeout_s: float) -> bytes: ...


class AppHost(Protocol):
    """The part of :class:`node.node.Node` that serves peers' app requests."""

    def register_app_handler(self, service: str, handler: Callable[[bytes, bytes], Awaitable[bytes]]) -> None: ...


class MeshView(AppRequester, Protocol):
    """The part of :class:`node.node.Node` a federated query reads: its mesh core (reachable peers), clock and
    nickname, and the app channel to ask peers."""

    @property
    def core(self) -> MeshCore | None: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def nickname(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PeerRef:
    peer_id: bytes
    nickname: str


def reachable_peers(node: MeshView, max_peers: int = DEFAULT_MAX_PEERS) -> list[PeerRef]:
    """The peers a federated query asks: reachable now, nearest (fewest hops) first."""
    core = node.core
    if core is None:
        raise MeshError("the node is not running")
    now = node.clock.now()
    peers = sorted((p for p in core.peers if core.is_reachable(p, now)), key=lambda p: (p.hops, p.peer_id))
    return [PeerRef(p.peer_id, p.nickname) for p in peers[:max_peers]]


async def ask_peers(
    requester: AppRequester,
    peers: Sequence[PeerRef],
    text: str,
    *,
    k: int = 10,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    clock: Callable[[], float] = trio.current_time,
) -> tuple[dict[str, list[PeerHit]], list[PeerOutcome]]:
    """Ask every peer in parallel, each bounded by ``timeout_s``. Returns hits per peer (hex) and outcomes."""
    body = encode_request(text, k)
    answers: dict[str, list[PeerHit]] = {}
    outcomes: list[PeerOutcome] = []

    async def ask(peer: PeerRef) -> None:
        start = clock()
        hexid = peer.peer_id.hex()
        status, detail, hits = "ok", "", []
        try:
            raw = await requester.app_request(peer.peer_id, SERVICE, body, timeout_s=timeout_s)
            hits = decode_answer_untrusted(raw, k)
            answers[hexid] = hits
        except AppTimeout as exc:
            status, detail = "timeout", str(exc)
        except (AppRemoteError, AppError, MeshError) as exc:
            status, detail = "error", str(exc)
        except RagError as exc:
            status, detail = "malformed", str(exc)
        outcomes.append(PeerOutcome(hexid, peer.nickname, status, len(hits), clock() - start, detail))

    async with trio.open_nursery() as nursery:
        for peer in peers:
            nursery.start_soon(ask, peer)
    outcomes.sort(key=lambda o: o.peer_id)
    return answers, outcomes


async def merge(
    answers: dict[str, list[PeerHit]],
    nicknames: dict[str, str],
    trust: ClaimTrust | None,
    *,
    k: int,
    local: Sequence[FederatedHit] = (),
) -> list[FederatedHit]:
    """Trust-weighted reciprocal-rank merge of the peers' lists (and local hits); one result per claim, its
    opinion fused over every peer that returned it (and the local store's own support of it)."""
    rr: dict[str, float] = {}  # claim -> sum of 1 / (RRF_K + rank) over the lists it is in
    first: dict[str, FederatedHit] = {}
    peers_of: dict[str, list[str]] = {}
    for rank, hit in enumerate(local, start=1):
        rr[hit.claim] = rr.get(hit.claim, 0.0) + 1.0 / (RRF_K + rank)
        first.setdefault(hit.claim, hit)
    for peer_hex in sorted(answers):
        counted: set[str] = set()
        for rank, ph in enumerate(answers[peer_hex], start=1):
            if ph.claim in counted:  # a peer repeating a claim gets no extra weight for it
                continue
            counted.add(ph.claim)
            rr[ph.claim] = rr.get(ph.claim, 0.0) + 1.0 / (RRF_K + rank)
            peers = peers_of.setdefault(ph.claim, [])
            if peer_hex not in peers:
                peers.append(peer_hex)
            if ph.claim not in first:
                first[ph.claim] = FederatedHit(
                    origin=peer_hex,
                    peers=[],
                    nickname=nicknames.get(peer_hex, ""),
                    doc_id=ph.doc_id,
                    chunk_id=ph.chunk_id,
                    title=ph.title,
                    source=ph.source,
                    snippet=ph.snippet,
                    score=ph.score,
                    claim=ph.claim,
                    trust=0.5,
                    uncertainty=1.0,
                    opinion=Opinion.vacuous(),
                )
    for claim, hit in first.items():
        remote = peers_of.get(claim, [])
        hit.peers = ([hit.origin] if hit.origin == "local" else []) + remote
        if remote:
            opinion = (await trust.claim_opinion(claim, remote)).opinion if trust is not None else Opinion.vacuous()
            hit.opinion, hit.trust, hit.uncertainty = opinion, opinion.expected, opinion.u
        hit.weight = hit.trust * rr[claim]
    return sorted(first.values(), key=lambda h: (-h.weight, h.origin, h.chunk_id))[:k]


async def federated_query(
    node: MeshView,
    text: str,
    *,
    k: int = 10,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_peers: int = DEFAULT_MAX_PEERS,
    trust: ClaimTrust | None = None,
    local: Sequence[FederatedHit] = (),
) -> FederatedResult:
    """Ask the node's reachable peers (their shared documents only) and merge with ``local`` hits by trust.
    ``node`` is a running node."""
    if not 1 <= k <= MAX_PEER_HITS:
        raise RagError(f"k must be from 1 to {MAX_PEER_HITS} for a federated query")
    if timeout_s <= 0:
        raise RagError("the federated query timeout must be > 0")
    peers = reachable_peers(node, max_peers)
    answers, outcomes = await ask_peers(node, peers, text, k=k, timeout_s=timeout_s)
    nicknames = {p.peer_id.hex(): p.nickname for p in peers}
    hits = await merge(answers, nicknames, trust, k=k, local=local)
    return FederatedResult(hits, outcomes)


class RagServiceSearch:
    """:class:`SharedSearch` over the node's :class:`node.rag.service.RagService`: its query restricted to shared
    documents, then the chunk texts (for claim keys) and the shared flags read again from its store.

    SEAM (RAG-pipeline): the two store reads go through ``RagService._run_db`` / ``_store`` (its single DB worker
    thread); a public ``RagService`` method for them would replace these two private accesses."""

    def __init__(self, service: RagService) -> None:
        self.service = service

    async def search_shared(self, text: str, k: int) -> list[SharedHit]:
        hits = await self.service.query(text, k=k, shared_only=True)
        texts: dict[int, str] = await self.service._run_db(self._texts_sync, [h.chunk_id for h in hits])
        return [
            SharedHit(h.doc_id, h.chunk_id, h.score, h.title, h.source, h.snippet, texts.get(h.chunk_id, h.snippet))
            for h in hits
            if h.shared
        ]

    async def shared_doc_ids(self, doc_ids: Sequence[int]) -> set[int]:
        out: set[int] = await self.service._run_db(self._shared_sync, list(doc_ids))
        return out

    def _texts_sync(self, chunk_ids: list[int]) -> dict[int, str]:
        return {cid: row.text for cid, row in self._opened_store().chunks(chunk_ids).items()}

    def _shared_sync(self, doc_ids: list[int]) -> set[int]:
        return shared_doc_ids(self._opened_store().conn, doc_ids)

    def _opened_store(self) -> Any:
        store = self.service._store  # opened by the query that came before (on the same DB thread)
        if store is None:
            raise RagError("the knowledge base is not open")
        return store


def shared_doc_ids(conn: Any, doc_ids: Sequence[int]) -> set[int]:
    """Those of ``doc_ids`` whose ``documents.shared`` is 1 (blocking; the caller's DB thread)."""
    out: set[int] = set()
    ids = list(doc_ids)
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        marks = ",".join("?" * len(part))
        out.update(
            int(r[0]) for r in conn.execute(f"SELECT id FROM documents WHERE shared = 1 AND id IN ({marks})", part)
        )
    return out


def serve(node: AppHost, service: RagService) -> FederatedResponder:
    """Answer peers' federated queries on ``node`` from ``service`` (the node's knowledge base; shared documents
    only). Call before the node's transports start."""
    return register(node, RagServiceSearch(service))


async def mesh_query(
    node: MeshView,
    service: RagService,
    text: str,
    *,
    k: int = 10,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_peers: int = DEFAULT_MAX_PEERS,
    mode: str | None = None,
    graph: bool | None = None,
) -> dict[str, Any]:
    """``rag.query`` with ``mesh = true``: the local results (``service``) and the reachable peers' (their shared
    documents), merged by trust; JSON for the control method, each result naming its origin (``local`` or a peer
    ID, with nickname) and every peer that returned the same claim, plus one status line per peer asked.

    SEAM (RAG-pipeline): reads claim keys and the trust store through ``RagService._run_db`` / ``_trust`` / ``_db``
    (the service's single DB thread); a public RagService accessor would replace them."""
    k = max(1, min(k, MAX_PEER_HITS))
    hits = await service.query(text, k=k, mode=mode, graph=graph)
    claims: dict[int, str] = await service._run_db(
        lambda: {h.chunk_id: service._trust.chunk_claim(h.chunk_id) for h in hits}
    )
    nickname = node.nickname
    local = [
        FederatedHit(
            origin="local",
            peers=[],
            nickname=nickname,
            doc_id=h.doc_id,
            chunk_id=h.chunk_id,
            title=h.title,
            source=h.source,
            snippet=h.snippet,
            score=h.score,
            claim=claims[h.chunk_id],
            trust=0.5 if h.trust is None else h.trust,
            uncertainty=1.0 if h.uncertainty is None else h.uncertainty,
            opinion=Opinion(h.belief or 0.0, h.disbelief or 0.0, 1.0 if h.uncertainty is None else h.uncertainty),
        )
        for h in hits
    ]
    trust = StoreClaimTrust(service._trust, service._db, service.wall_s)
    result = await federated_query(node, text, k=k, timeout_s=timeout_s, max_peers=max_peers, trust=trust, local=local)
    return {"query": text, "mesh": True, **result.to_json()}


def register(node: AppHost, search: SharedSearch, **kwargs: Any) -> FederatedResponder:
    """Serve federated queries from peers on ``node`` (a running or starting node)."""
    responder = FederatedResponder(search, **kwargs)
    handler: Callable[[bytes, bytes], Awaitable[bytes]] = responder.handle
    node.register_app_handler(SERVICE, handler)
    return responder


__all__ = [
    "SERVICE",
    "ClaimTrust",
    "FederatedHit",
    "FederatedResponder",
    "FederatedResult",
    "PeerHit",
    "PeerOutcome",
    "RagServiceSearch",
    "SharedHit",
    "SharedSearch",
    "StoreClaimTrust",
    "ask_peers",
    "decode_answer_untrusted",
    "encode_request",
    "federated_query",
    "merge",
    "mesh_query",
    "reachable_peers",
    "register",
    "serve",
    "shared_doc_ids",
]
