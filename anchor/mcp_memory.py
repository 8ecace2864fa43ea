"""The node's MCP persistent memory (the knowledge graph of :mod:`node.mcp.graph`) on the anchor's Bolt graph
server (FalkorDB here, Neo4j elsewhere), instead of the node's SQLite file.

The anchor's :class:`~anchor.run.GatewayService` offers it (``mcp_memory_storage``); the MCP service picks it up
when it builds the registry (the node never imports this package). The graph logic, its bounds and its reference
semantics stay in :class:`node.mcp.graph.KnowledgeGraph`; this is its :class:`~node.mcp.graph.Storage`::

    (:McpEntity {ns, id, name, entityType, data})         data: base64 JSON [name, entityType, observations]
    (:McpRelation {ns, id, from, to, relationType, data}) data: base64 JSON [from, to, relationType]

Relations are nodes, not edges: the reference server keeps relations whose ends do not exist and entities that
share a name, which edges between entity nodes cannot express. ``name``/``entityType``/``from``/``to``/
``relationType`` are there for other readers of the graph (Cypher); ``data`` is what is loaded back, exactly
(FalkorDB cuts strings at NUL and reads backslash escapes in them, so the JSON is base64-encoded); a row whose
data does not decode fails the load with a StoreError. ``ns`` is the node's peer ID (FalkorDB's Bolt has one
graph per server, so tenants are kept apart by property). Each operation's changes are one explicit transaction.
Errors: :class:`StoreUnavailable` when the server cannot be reached, :class:`StoreError` otherwise (the tool call
fails with that message; the mirror is unchanged).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import neo4j
import neo4j.exceptions

from anchor.stores.errors import StoreError, StoreUnavailable
from anchor.stores.graph import CONNECT_ATTEMPTS

if TYPE_CHECKING:
    from node.mcp.graph import Changes, EntityRow, RelationRow

_INDEXES = ("CREATE INDEX FOR (e:McpEntity) ON (e.ns)", "CREATE INDEX FOR (r:McpRelation) ON (r.ns)")
_UNAVAILABLE = (neo4j.exceptions.ServiceUnavailable, neo4j.exceptions.SessionExpired, OSError)
_ERRORS = (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError)


def _dump(value: Any) -> str:
    """Base64 of the JSON: FalkorDB's Bolt cuts strings at NUL and turns the two characters ``\\n`` into a
    newline, so anything with a backslash or NUL would not come back as written."""
    raw = json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    return base64.b64encode(raw).decode("ascii")


def _load(data: Any) -> Any:
    return json.loads(base64.b64decode(str(data), validate=True))


class BoltMemoryStorage:
    name = "bolt"

    def __init__(self, url: str, *, namespace: str, user: str = "", password: str = "", timeout_s: float = 5.0):
        self.ns = namespace
        self.timeout_s = timeout_s
        self._driver = neo4j.GraphDatabase.driver(
            url,
            auth=(user, password) if user else None,
            connection_timeout=min(1.0, timeout_s),
            connection_acquisition_timeout=min(1.0, timeout_s),
            max_connection_pool_size=2,  # one operation at a time (GraphStore's limiter), plus a spare
            liveness_check_timeout=0,
        )
        for query in _INDEXES:
            with contextlib.suppress(StoreError):  # exists already (neither server has a portable IF NOT EXISTS)
                self._run([(query, {})])

    def _run(self, statements: Sequence[tuple[str, dict[str, Any]]]) -> list[list[dict[str, Any]]]:
        try:
            with self._driver.session() as session:
                tx = None
                for _ in range(CONNECT_ATTEMPTS - 1):  # FalkorDB drops the first connection after a close
                    try:
                        tx = session.begin_transaction(timeout=self.timeout_s)
                        break
                    except neo4j.exceptions.ServiceUnavailable:
                        continue
                if tx is None:
                    tx = session.begin_transaction(timeout=self.timeout_s)
                with tx:
                    out = [[dict(r) for r in tx.run(q, {"ns": self.ns, **p})] for q, p in statements]
                    tx.commit()
                    return out
        except _UNAVAILABLE as exc:
            raise StoreUnavailable("graph", f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        except _ERRORS as exc:
            raise StoreError(f"graph: {type(exc).__name__}: {str(exc)[:200]}") from exc

    def load(self) -> tuple[list[EntityRow], list[RelationRow]]:
        try:
            return self._load_all()
        except (binascii.Error, ValueError, TypeError) as exc:
            raise StoreError(f"graph: MCP memory of {self.ns} holds a row that does not decode: {exc}") from exc

    def _load_all(self) -> tuple[list[EntityRow], list[RelationRow]]:
        ents, rels = self._run(
            [
                ("MATCH (e:McpEntity {ns: $ns}) RETURN e.id AS id, e.data AS data ORDER BY e.id", {}),
                ("MATCH (r:McpRelation {ns: $ns}) RETURN r.id AS id, r.data AS data ORDER BY r.id", {}),
            ]
        )
        entities: list[EntityRow] = []
        for row in ents:
            name, etype, obs = _load(row["data"])
            entities.append((int(row["id"]), str(name), str(etype), [str(o) for o in obs]))
        relations: list[RelationRow] = []
        for row in rels:
            src, dst, rtype = _load(row["data"])
            relations.append((int(row["id"]), str(src), str(dst), str(rtype)))
        return entities, relations

    def apply(self, ch: Changes) -> None:
        statements: list[tuple[str, dict[str, Any]]] = []
        if ch.wipe:
            statements.append(("MATCH (e:McpEntity {ns: $ns}) DELETE e", {}))
            statements.append(("MATCH (r:McpRelation {ns: $ns}) DELETE r", {}))
        if ch.drop_entities:
            statements.append(("MATCH (e:McpEntity {ns: $ns}) WHERE e.id IN $ids DELETE e", {"ids": ch.drop_entities}))
        if ch.drop_relations:
            q = "MATCH (r:McpRelation {ns: $ns}) WHERE r.id IN $ids DELETE r"
            statements.append((q, {"ids": ch.drop_relations}))
        if ch.add_entities:
            rows = [
                {
                    "id": e.id,
                    "name": e.name,
                    "type": e.entity_type,
                    "data": _dump([e.name, e.entity_type, e.observations]),
                }
                for e in ch.add_entities
            ]
            q = (
                "UNWIND $rows AS r CREATE (:McpEntity {ns: $ns, id: r.id, name: r.name, entityType: r.type, "
                "data: r.data})"
            )
            statements.append((q, {"rows": rows}))
        if ch.add_relations:
            rows = [
                {"id": r.id, "src": r.src, "dst": r.dst, "type": r.relation_type, "data": _dump(list(r.key))}
                for r in ch.add_relations
            ]
            q = (
                "UNWIND $rows AS r CREATE (:McpRelation {ns: $ns, id: r.id, from: r.src, to: r.dst, "
                "relationType: r.type, data: r.data})"
            )
            statements.append((q, {"rows": rows}))
        if ch.set_observations:
            rows = [{"id": e.id, "data": _dump([e.name, e.entity_type, obs])} for e, obs in ch.set_observations]
            q = "UNWIND $rows AS r MATCH (e:McpEntity {ns: $ns}) WHERE e.id = r.id SET e.data = r.data"
            statements.append((q, {"rows": rows}))
        if statements:
            self._run(statements)

    def close(self) -> None:
        try:
            self._driver.close()
        except _UNAVAILABLE + _ERRORS:
            pass

    def count(self) -> int:
        """Nodes of this namespace on the server (tests)."""
        rows = self._run([("MATCH (n) WHERE (n:McpEntity OR n:McpRelation) AND n.ns = $ns RETURN count(n) AS n", {})])[
            0
        ]
        return int(rows[0]["n"])


def storage_factory(
    url: str, *, namespace: str, user: str = "", password: str = "", timeout_s: float = 5.0
) -> Callable[[], BoltMemoryStorage]:
    return lambda: BoltMemoryStorage(url, namespace=namespace, user=user, password=password, timeout_s=timeout_s)
