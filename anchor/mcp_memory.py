"""The node's MCP persistent memory (the knowledge graph of :mod:`node.mcp.graph`) on the anchor's Bolt graph
server (FalkorDB here, Neo4j elsewhere), instead of the node's SQLite file (``[anchor] mcp_memory = "graph"``; the
default is ``local``, the SQLite file).

The anchor's :class:`~anchor.run.GatewayService` offers it (``mcp_memory_storage``); the MCP service picks it up
when it builds the registry (the node never imports this package). The graph logic, its bounds and its reference
semantics stay in :class:`node.mcp.graph.KnowledgeGraph`; this is its :class:`~node.mcp.graph.Storage`::

    (:McpEntity {ns, id, data})     data: base64(nonce || XChaCha20-Poly1305(UTF-8 JSON [name, type, observations]))
    (:McpRelation {ns, id, data})   data: base64(nonce || XChaCha20-Poly1305(UTF-8 JSON [from, to, relationType]))

The graph server is shared and (FalkorDB here) has no authentication: ``ns`` (the node's peer ID) is only a
property, so anyone who reaches the server can read and write any namespace. Every row's ``data`` is therefore
sealed with the node's memory key (32 random bytes, ``<data dir>/anchor/mcp-memory.key``, 0600) with
``ns``, the label and the ``id`` as associated data: the server holds only ciphertext, and a row planted under this
node's namespace (or moved from another id) does not open and is skipped and counted (``refused``), never loaded.
What the key cannot stop: a writer on the server can delete rows or put back an older sealed row of the same id.

**Legacy rows.** A version on main for about an hour (never released) wrote rows in the clear (``name``,
``entityType`` / ``from``, ``to``, ``relationType`` beside an unsealed ``data``). They are never loaded nor served:
a load skips and counts every row that carries one of those plaintext properties (``legacy``, also in
``refused``), and the factory logs them once. They are not migrated in place (a migration over Bolt hung the
server); ``village memory purge-legacy --yes`` deletes them (:meth:`BoltMemoryStorage.purge_legacy`: one
``MATCH ... WHERE <plaintext property> IS NOT NULL DELETE`` per label, this namespace only), and ``village memory
forget`` erases them with everything else.

Relations are nodes, not edges: the reference server keeps relations whose ends do not exist and entities that
share a name, which edges between entity nodes cannot express. Loading reads at most ``max_entities`` entities and
``max_relations`` relations (``LIMIT`` in Cypher) and skips a ``data`` longer than ``max_data_chars``. Each
operation's changes are one explicit transaction. Errors: :class:`StoreUnavailable` when the server cannot be
reached, :class:`StoreError` otherwise (the tool call fails with that message; the mirror is unchanged).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import neo4j
import neo4j.exceptions
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
)
from nacl.exceptions import CryptoError

from anchor.stores._runner import BlockingRunner
from anchor.stores.errors import StoreError, StoreUnavailable
from anchor.stores.graph import CONNECT_ATTEMPTS

if TYPE_CHECKING:
    from node.mcp.graph import Changes, EntityRow, RelationRow

_INDEXES = ("CREATE INDEX FOR (e:McpEntity) ON (e.ns)", "CREATE INDEX FOR (r:McpRelation) ON (r.ns)")
_UNAVAILABLE = (neo4j.exceptions.ServiceUnavailable, neo4j.exceptions.SessionExpired, OSError)
_ERRORS = (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError)


KEY_FILE = "mcp-memory.key"  # in <data dir>/anchor (anchor.gateway.auth.load_or_create_secret)
KEY_BYTES = 32
# Properties only the legacy plaintext format (never released) wrote: a row carrying one is legacy.
_LEGACY_ENTITY = "e.name IS NOT NULL OR e.entityType IS NOT NULL"
_LEGACY_RELATION = "r.relationType IS NOT NULL OR r.`from` IS NOT NULL OR r.to IS NOT NULL"  # `from`: a keyword
_NONCE = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
log = logging.getLogger("village.anchor.mcp_memory")


def _aad(ns: str, label: str, row_id: int) -> bytes:
    return f"{ns}\0{label}\0{row_id}".encode()


def seal(key: bytes, ns: str, label: str, row_id: int, value: Any) -> str:
    """The row's ``data``: base64 of nonce || ciphertext of the UTF-8 JSON (base64 because FalkorDB's Bolt cuts
    strings at NUL and reads backslash escapes)."""
    raw = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    nonce = secrets.token_bytes(_NONCE)
    ct = crypto_aead_xchacha20poly1305_ietf_encrypt(raw, _aad(ns, label, row_id), nonce, key)
    return base64.b64encode(nonce + ct).decode("ascii")


def open_sealed(key: bytes, ns: str, label: str, row_id: int, data: Any) -> Any:
    """The value :func:`seal` sealed; ValueError if ``data`` was not sealed by ``key`` for this ns/label/id."""
    if not isinstance(data, str):
        raise ValueError("data is not a string")
    try:
        blob = base64.b64decode(data, validate=True)
        if len(blob) < _NONCE:
            raise ValueError("data too short")
        raw = crypto_aead_xchacha20poly1305_ietf_decrypt(blob[_NONCE:], _aad(ns, label, row_id), blob[:_NONCE], key)
    except (binascii.Error, CryptoError) as exc:
        raise ValueError(f"data does not open: {type(exc).__name__}") from None
    return json.loads(raw.decode("utf-8", "surrogatepass"))


class BoltMemoryStorage:
    name = "bolt"

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        key: bytes,
        user: str = "",
        password: str = "",
        timeout_s: float = 5.0,
        max_entities: int = 100_000,
        max_relations: int = 200_000,
        max_data_chars: int = 8 << 20,
        on_legacy: Callable[[str, int], None] | None = None,
    ):
        if len(key) != KEY_BYTES:  # the anchor checks the key file at start (BoltMemoryFactory): never reached there
            raise ValueError(f"the MCP memory key must be {KEY_BYTES} bytes")
        self.ns = namespace
        self.timeout_s = timeout_s
        self._key = key
        self.max_entities = max_entities
        self.max_relations = max_relations
        self.max_data_chars = max_data_chars
        self.refused = 0  # rows of this namespace the last load skipped: not sealed by this node's key, or too big
        self.legacy = 0  # of which rows in the legacy plaintext format (never served; `village memory purge-legacy`)
        self._on_legacy = on_legacy
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
        ents, rels = self._run(
            [
                (
                    f"MATCH (e:McpEntity {{ns: $ns}}) RETURN e.id AS id, e.data AS data, ({_LEGACY_ENTITY}) AS "
                    f"legacy ORDER BY e.id LIMIT $limit",
                    {"limit": self.max_entities},
                ),
                (
                    f"MATCH (r:McpRelation {{ns: $ns}}) RETURN r.id AS id, r.data AS data, ({_LEGACY_RELATION}) AS "
                    f"legacy ORDER BY r.id LIMIT $limit",
                    {"limit": self.max_relations},
                ),
            ]
        )
        self.refused = self.legacy = 0
        entities: list[EntityRow] = []
        for row_id, (name, etype, obs) in self._open_rows(ents, "McpEntity", 3):
            entities.append((row_id, str(name), str(etype), [str(o) for o in obs]))
        relations: list[RelationRow] = []
        for row_id, (src, dst, rtype) in self._open_rows(rels, "McpRelation", 3):
            relations.append((row_id, str(src), str(dst), str(rtype)))
        if self.legacy and self._on_legacy is not None:
            self._on_legacy(self.ns, self.legacy)
        if self.refused > self.legacy:
            log.warning(
                "MCP memory of %s: %d rows on the graph server refused (not sealed by this node)",
                self.ns,
                self.refused - self.legacy,
            )
        return entities, relations

    def _open_rows(self, rows: list[dict[str, Any]], label: str, width: int) -> list[tuple[int, list[Any]]]:
        out: list[tuple[int, list[Any]]] = []
        seen: set[int] = set()
        for row in rows:
            if row.get("legacy"):  # plaintext on the server: never loaded, whatever its data holds
                self.refused += 1
                self.legacy += 1
                continue
            try:
                row_id = row["id"]
                data = row["data"]
                if not isinstance(row_id, int) or row_id in seen:
                    raise ValueError("bad or repeated id")
                if not isinstance(data, str) or len(data) > self.max_data_chars:
                    raise ValueError("data missing or too big")
                value = open_sealed(self._key, self.ns, label, row_id, data)
                if not isinstance(value, list) or len(value) != width or not isinstance(value[-1], (list, str)):
                    raise ValueError("not a row")
            except (KeyError, ValueError, TypeError):
                self.refused += 1
                continue
            seen.add(row_id)
            out.append((row_id, value))
        return out

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
                {"id": e.id, "data": self._seal("McpEntity", e.id, [e.name, e.entity_type, e.observations])}
                for e in ch.add_entities
            ]
            q = "UNWIND $rows AS r CREATE (:McpEntity {ns: $ns, id: r.id, data: r.data})"
            statements.append((q, {"rows": rows}))
        if ch.add_relations:
            rows = [{"id": r.id, "data": self._seal("McpRelation", r.id, list(r.key))} for r in ch.add_relations]
            q = "UNWIND $rows AS r CREATE (:McpRelation {ns: $ns, id: r.id, data: r.data})"
            statements.append((q, {"rows": rows}))
        if ch.set_observations:
            rows = [
                {"id": e.id, "data": self._seal("McpEntity", e.id, [e.name, e.entity_type, obs])}
                for e, obs in ch.set_observations
            ]
            q = "UNWIND $rows AS r MATCH (e:McpEntity {ns: $ns}) WHERE e.id = r.id SET e.data = r.data"
            statements.append((q, {"rows": rows}))
        if statements:
            self._run(statements)

    def _seal(self, label: str, row_id: int, value: Any) -> str:
        return seal(self._key, self.ns, label, row_id, value)

    def close(self) -> None:
        try:
            self._driver.close()
        except _UNAVAILABLE + _ERRORS:
            pass

    def purge_legacy(self) -> dict[str, int]:
        """Delete this namespace's rows in the legacy plaintext format (one simple query per label, one
        transaction; no row is rewritten); the number deleted of each."""
        ents, rels = self._run(
            [
                (f"MATCH (e:McpEntity {{ns: $ns}}) WHERE {_LEGACY_ENTITY} DELETE e RETURN count(e) AS n", {}),
                (f"MATCH (r:McpRelation {{ns: $ns}}) WHERE {_LEGACY_RELATION} DELETE r RETURN count(r) AS n", {}),
            ]
        )
        return {"entities": int(ents[0]["n"]) if ents else 0, "relations": int(rels[0]["n"]) if rels else 0}

    def count(self) -> int:
        """Nodes of this namespace on the server (tests)."""
        rows = self._run([("MATCH (n) WHERE (n:McpEntity OR n:McpRelation) AND n.ns = $ns RETURN count(n) AS n", {})])[
            0
        ]
        return int(rows[0]["n"])


class BoltMemoryFactory:
    """What the anchor offers the MCP service: a factory of :class:`BoltMemoryStorage` (called in a worker thread)
    and ``run_blocking``, the runner of its blocking calls: an :class:`~anchor.stores._runner.BlockingRunner` with a
    deadline of four times ``timeout_s`` (an open is up to three transactions: two index creations and the load)
    that abandons a thread stuck on a server that stopped answering (at most
    ``max_threads`` such threads) and answers :class:`StoreUnavailable`. Legacy plaintext rows a load skipped are
    logged once per number found (not at every reload)."""

    def __init__(self, url: str, *, timeout_s: float = 5.0, max_threads: int = 2, **kwargs: Any) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.kwargs = kwargs
        self.runner = BlockingRunner("graph", max_threads, (), deadline_s=4 * timeout_s)
        self.legacy_logged = 0  # the legacy row count last logged

    def __call__(self) -> BoltMemoryStorage:
        return BoltMemoryStorage(self.url, timeout_s=self.timeout_s, on_legacy=self._legacy, **self.kwargs)

    def _legacy(self, ns: str, rows: int) -> None:
        if rows != self.legacy_logged:
            self.legacy_logged = rows
            log.warning(
                "MCP memory of %s: %d rows on the graph server are in the old plaintext format; they are not served. "
                "Delete them with `village memory purge-legacy --yes`",
                ns,
                rows,
            )

    async def run_blocking(self, fn: Callable[[], Any]) -> Any:
        return await self.runner.run(fn)


def storage_factory(
    url: str,
    *,
    namespace: str,
    key: bytes,
    user: str = "",
    password: str = "",
    timeout_s: float = 5.0,
    max_entities: int = 100_000,
    max_relations: int = 200_000,
) -> BoltMemoryFactory:
    return BoltMemoryFactory(
        url,
        namespace=namespace,
        key=key,
        user=user,
        password=password,
        timeout_s=timeout_s,
        max_entities=max_entities,
        max_relations=max_relations,
    )
