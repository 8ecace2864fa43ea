"""Persistent memory: a knowledge graph of entities (name, type, observations) and relations (from, to, type),
with the observable behaviour of the reference MCP memory server (``@modelcontextprotocol/server-memory``):

- ``create_entities`` skips entities whose name already exists (checked against the graph as it was before the
  call, so two entities of one name in one call are both added); ``create_relations`` likewise for identical
  (from, to, type) triples; relations may name entities that do not exist.
- ``add_observations`` fails as a whole ("Entity with name X not found") when any entity is missing; otherwise
  each entity (the first of that name) gets the contents it does not have yet.
- ``delete_entities`` removes every entity of those names and every relation from or to them.
- ``delete_observations`` and ``delete_relations`` ignore what does not exist.
- ``search_nodes`` matches the query, case-insensitively, as a substring of an entity's name, type or any
  observation; ``search_nodes`` and ``open_nodes`` return the relations with at least one end in the result.
- Order is insertion order everywhere.

Kept in a :class:`Storage` and mirrored in memory for reads: SQLite by default (:class:`SqliteStorage`,
``<data dir>/mcp/memory.sqlite3``, 0600), or another store a plugin provides (the anchor's Bolt graph store:
``anchor.mcp_memory``). Each operation checks its bounds and computes its :class:`Changes` without touching the
mirror, writes them to the storage in one transaction, and only then updates the mirror: a write that fails
changes nothing. Bounded in entities, relations and bytes (``[mcp] memory_max_*``). :class:`GraphStore`
serialises the operations; changes run in a worker thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio

from node.mcp.errors import MemoryFull, ToolError
from node.mcp.settings import McpSettings

SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, entity_type TEXT NOT NULL, observations TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS relations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, src TEXT NOT NULL, dst TEXT NOT NULL, relation_type TEXT NOT NULL);
"""


@dataclass(slots=True)
class Entity:
    id: int
    name: str
    entity_type: str
    observations: list[str]
    lowered: list[str] = field(default_factory=list)  # name, type, observations, lower-cased (for search)
    haystack: str = ""  # the lowered fields joined by NUL: one substring test for queries without a NUL

    def relower(self) -> None:
        self.lowered = [self.name.lower(), self.entity_type.lower(), *(o.lower() for o in self.observations)]
        self.haystack = "\0".join(self.lowered)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "entityType": self.entity_type, "observations": list(self.observations)}


@dataclass(frozen=True, slots=True)
class Relation:
    id: int
    src: str
    dst: str
    relation_type: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.src, self.dst, self.relation_type)

    def to_json(self) -> dict[str, Any]:
        return {"from": self.src, "to": self.dst, "relationType": self.relation_type}


def _nbytes(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


@dataclass(slots=True)
class Changes:
    """What one operation changes, written by a :class:`Storage` in one transaction."""

    add_entities: list[Entity] = field(default_factory=list)
    add_relations: list[Relation] = field(default_factory=list)
    set_observations: list[tuple[Entity, list[str]]] = field(default_factory=list)  # (entity, new observations)
    drop_entities: list[int] = field(default_factory=list)
    drop_relations: list[int] = field(default_factory=list)
    wipe: bool = False  # everything first

    def __bool__(self) -> bool:
        return bool(
            self.wipe
            or self.add_entities
            or self.add_relations
            or self.set_observations
            or self.drop_entities
            or self.drop_relations
        )


EntityRow = tuple[int, str, str, list[str]]  # id, name, type, observations
RelationRow = tuple[int, str, str, str]  # id, from, to, type


class Storage(Protocol):
    """Where the graph persists. Synchronous (called in a worker thread); a failure raises a NodeError."""

    name: str

    def load(self) -> tuple[list[EntityRow], list[RelationRow]]:
        """Every entity and relation, each list in id order."""
        ...

    def apply(self, changes: Changes) -> None:
        """Write ``changes`` atomically (all or nothing)."""
        ...

    def close(self) -> None: ...


class SqliteStorage:
    name = "sqlite"

    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            os.chmod(path, 0o600)
        self.db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def load(self) -> tuple[list[EntityRow], list[RelationRow]]:
        ents = [
            (row[0], row[1], row[2], json.loads(row[3]))
            for row in self.db.execute("SELECT id, name, entity_type, observations FROM entities ORDER BY id")
        ]
        rels = [
            (row[0], row[1], row[2], row[3])
            for row in self.db.execute("SELECT id, src, dst, relation_type FROM relations ORDER BY id")
        ]
        return ents, rels

    def apply(self, ch: Changes) -> None:
        with self.db:
            if ch.wipe:
                self.db.execute("DELETE FROM entities")
                self.db.execute("DELETE FROM relations")
            self.db.executemany("DELETE FROM entities WHERE id = ?", [(i,) for i in ch.drop_entities])
            self.db.executemany("DELETE FROM relations WHERE id = ?", [(i,) for i in ch.drop_relations])
            self.db.executemany(
                "INSERT INTO entities (id, name, entity_type, observations) VALUES (?, ?, ?, ?)",
                [(e.id, e.name, e.entity_type, json.dumps(e.observations)) for e in ch.add_entities],
            )
            self.db.executemany(
                "INSERT INTO relations (id, src, dst, relation_type) VALUES (?, ?, ?, ?)",
                [(r.id, r.src, r.dst, r.relation_type) for r in ch.add_relations],
            )
            self.db.executemany(
                "UPDATE entities SET observations = ? WHERE id = ?",
                [(json.dumps(obs), e.id) for e, obs in ch.set_observations],
            )

    def count(self) -> int:
        """Stored entities and relations (rows)."""
        row = self.db.execute("SELECT (SELECT count(*) FROM entities) + (SELECT count(*) FROM relations)").fetchone()
        return int(row[0])

    def close(self) -> None:
        self.db.close()


class KnowledgeGraph:
    """The graph mirrored from its storage; synchronous (call through :class:`GraphStore`). ``where`` is a SQLite
    path (None: in memory) or a :class:`Storage`."""

    def __init__(self, where: Path | Storage | None, settings: McpSettings) -> None:
        self.settings = settings
        self.storage: Storage = SqliteStorage(where) if where is None or isinstance(where, Path) else where
        self.entities: list[Entity] = []
        self.relations: list[Relation] = []
        self.bytes = 0
        self.refused = 0  # stored rows not loaded: over the bounds, or refused by the storage (``refused``)
        ents, rels = self.storage.load()
        for eid, name, etype, obs in ents:
            e = Entity(eid, name, etype, list(obs))
            eb = self._entity_bytes(e)
            if len(self.entities) >= settings.memory_max_entities or self.bytes + eb > settings.memory_max_bytes:
                self.refused += 1
                continue
            e.relower()
            self.entities.append(e)
            self.bytes += eb
        for rid, src, dst, rtype in rels:
            r = Relation(rid, src, dst, rtype)
            rb = _nbytes(r.src) + _nbytes(r.dst) + _nbytes(r.relation_type)
            if len(self.relations) >= settings.memory_max_relations or self.bytes + rb > settings.memory_max_bytes:
                self.refused += 1
                continue
            self.relations.append(r)
            self.bytes += rb
        self.refused += int(getattr(self.storage, "refused", 0))
        self._next_id = 1 + max([e.id for e in self.entities] + [r.id for r in self.relations] + [0])

    def _ids(self, n: int) -> list[int]:
        first = self._next_id
        self._next_id += n
        return list(range(first, first + n))

    def close(self) -> None:
        self.storage.close()

    @staticmethod
    def _entity_bytes(e: Entity) -> int:
        return _nbytes(e.name) + _nbytes(e.entity_type) + sum(_nbytes(o) for o in e.observations)

    def _check_strings(self, strings: list[str]) -> int:
        total = 0
        for s in strings:
            n = _nbytes(s)
            if n > self.settings.memory_max_string_bytes:
                raise MemoryFull(f"a string of {n} bytes is over mcp.memory_max_string_bytes")
            total += n
        return total

    def _check_room(self, add_bytes: int, add_entities: int = 0, add_relations: int = 0) -> None:
        s = self.settings
        if len(self.entities) + add_entities > s.memory_max_entities:
            raise MemoryFull(f"memory is full: at most {s.memory_max_entities} entities (mcp.memory_max_entities)")
        if len(self.relations) + add_relations > s.memory_max_relations:
            raise MemoryFull(f"memory is full: at most {s.memory_max_relations} relations (mcp.memory_max_relations)")
        if self.bytes + add_bytes > s.memory_max_bytes:
            raise MemoryFull(f"memory is full: at most {s.memory_max_bytes} bytes (mcp.memory_max_bytes)")

    def _first(self, name: str) -> Entity | None:
        for e in self.entities:
            if e.name == name:
                return e
        return None

    # ------------------------------------------------------------ the nine operations
    def create_entities(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        existing = {e.name for e in self.entities}
        new = [it for it in items if it["name"] not in existing]
        add = sum(self._check_strings([it["name"], it["entityType"], *it["observations"]]) for it in new)
        self._check_room(add, add_entities=len(new))
        ents = [
            Entity(eid, it["name"], it["entityType"], list(it["observations"]))
            for eid, it in zip(self._ids(len(new)), new, strict=True)
        ]
        if ents:
            self.storage.apply(Changes(add_entities=ents))
        for e in ents:
            e.relower()
            self.entities.append(e)
        self.bytes += add
        return [{"name": it["name"], "entityType": it["entityType"], "observations": it["observations"]} for it in new]

    def create_relations(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        existing = {r.key for r in self.relations}
        new = [it for it in items if (it["from"], it["to"], it["relationType"]) not in existing]
        add = sum(self._check_strings([it["from"], it["to"], it["relationType"]]) for it in new)
        self._check_room(add, add_relations=len(new))
        rels = [
            Relation(rid, it["from"], it["to"], it["relationType"])
            for rid, it in zip(self._ids(len(new)), new, strict=True)
        ]
        if rels:
            self.storage.apply(Changes(add_relations=rels))
        self.relations.extend(rels)
        self.bytes += add
        return [{"from": it["from"], "to": it["to"], "relationType": it["relationType"]} for it in new]

    def add_observations(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        planned: dict[int, list[str]] = {}  # entity id -> its observations after the call
        targets: dict[int, Entity] = {}
        results = []
        add = 0
        for it in items:
            e = self._first(it["entityName"])
            if e is None:
                raise ToolError(f"Entity with name {it['entityName']} not found")
            current = planned.get(e.id, e.observations)
            new = [c for c in it["contents"] if c not in current]
            add += self._check_strings(new)
            planned[e.id] = [*current, *new]
            targets[e.id] = e
            results.append({"entityName": it["entityName"], "addedObservations": new})
        self._check_room(add)
        changed = [(targets[eid], obs) for eid, obs in planned.items() if len(obs) != len(targets[eid].observations)]
        if changed:
            self.storage.apply(Changes(set_observations=changed))
        for e, obs in changed:
            e.observations = obs
            e.relower()
        self.bytes += add
        return results

    def delete_entities(self, names: list[str]) -> None:
        gone = set(names)
        dead_e = [e for e in self.entities if e.name in gone]
        dead_r = [r for r in self.relations if r.src in gone or r.dst in gone]
        if not dead_e and not dead_r:
            return
        self.storage.apply(Changes(drop_entities=[e.id for e in dead_e], drop_relations=[r.id for r in dead_r]))
        self.entities = [e for e in self.entities if e.name not in gone]
        self.relations = [r for r in self.relations if r.src not in gone and r.dst not in gone]
        self.bytes -= sum(self._entity_bytes(e) for e in dead_e)
        self.bytes -= sum(_nbytes(r.src) + _nbytes(r.dst) + _nbytes(r.relation_type) for r in dead_r)

    def delete_observations(self, items: list[dict[str, Any]]) -> None:
        planned: dict[int, list[str]] = {}  # entity id -> its observations after the call
        targets: dict[int, Entity] = {}
        for it in items:
            e = self._first(it["entityName"])
            if e is None:
                continue
            drop = set(it["observations"])
            current = planned.get(e.id, e.observations)
            kept = [o for o in current if o not in drop]
            if len(kept) != len(current):
                planned[e.id] = kept
                targets[e.id] = e
        if not planned:
            return
        self.storage.apply(Changes(set_observations=[(targets[eid], kept) for eid, kept in planned.items()]))
        for eid, kept in planned.items():
            e = targets[eid]
            self.bytes -= sum(_nbytes(o) for o in e.observations) - sum(_nbytes(o) for o in kept)
            e.observations = kept
            e.relower()

    def delete_relations(self, items: list[dict[str, Any]]) -> None:
        drop = {(it["from"], it["to"], it["relationType"]) for it in items}
        dead = [r for r in self.relations if r.key in drop]
        if not dead:
            return
        self.storage.apply(Changes(drop_relations=[r.id for r in dead]))
        self.relations = [r for r in self.relations if r.key not in drop]
        self.bytes -= sum(_nbytes(r.src) + _nbytes(r.dst) + _nbytes(r.relation_type) for r in dead)

    def read_graph(self) -> dict[str, Any]:
        return {"entities": [e.to_json() for e in self.entities], "relations": [r.to_json() for r in self.relations]}

    def search_nodes(self, query: str) -> dict[str, Any]:
        q = query.lower()
        if "\0" in q:  # could match across the joints of the haystack: test field by field
            hits = [e for e in self.entities if any(q in s for s in e.lowered)]
        else:
            hits = [e for e in self.entities if q in e.haystack]
        return self._subgraph(hits)

    def open_nodes(self, names: list[str]) -> dict[str, Any]:
        wanted = set(names)
        return self._subgraph([e for e in self.entities if e.name in wanted])

    def _subgraph(self, hits: list[Entity]) -> dict[str, Any]:
        names = {e.name for e in hits}
        rels = [r for r in self.relations if r.src in names or r.dst in names]
        return {"entities": [e.to_json() for e in hits], "relations": [r.to_json() for r in rels]}

    def forget(self) -> dict[str, int]:
        counts = {"entities": len(self.entities), "relations": len(self.relations)}
        self.storage.apply(Changes(wipe=True))
        self.entities, self.relations, self.bytes = [], [], 0
        return counts

    def purge_legacy(self) -> dict[str, int]:
        """Delete the rows of an old format the storage refuses to load (``purge_legacy`` of the anchor's Bolt
        storage: its plaintext rows); nothing loaded changes. Zero counts for a storage with no such format."""
        purge = getattr(self.storage, "purge_legacy", None)
        if purge is None:
            return {"entities": 0, "relations": 0}
        deleted: dict[str, int] = purge()
        self.refused = max(0, self.refused - sum(deleted.values()))
        return deleted

    def stats(self) -> dict[str, Any]:
        return {
            "entities": len(self.entities),
            "relations": len(self.relations),
            "bytes": self.bytes,
            "backend": self.storage.name,
            "refused": self.refused,
        }


BlockingCall = Callable[[Callable[[], Any]], Awaitable[Any]]


class GraphStore:
    """Async face of :class:`KnowledgeGraph`, one operation at a time: a change (a storage transaction) runs in a
    worker thread; a read of the in-memory mirror (a few ms of CPU at most) runs in place, saving a thread hop.
    ``storage`` (a factory, called in the worker thread on first use) replaces the SQLite file at ``path``; if
    opening or loading fails, the next operation tries again. ``run_blocking`` runs each blocking call (default: a
    worker thread); a networked storage passes one with a deadline that abandons a hung thread (the anchor's
    BlockingRunner), so a server that stops answering costs a call its deadline, never the lock or the shutdown."""

    READS = frozenset({"read_graph", "search_nodes", "open_nodes", "stats"})

    def __init__(
        self,
        path: Path | None,
        settings: McpSettings,
        *,
        storage: Callable[[], Storage] | None = None,
        run_blocking: BlockingCall | None = None,
    ) -> None:
        self._path = path
        self._storage = storage
        self._settings = settings
        self._graph: KnowledgeGraph | None = None
        self._lock = trio.Lock()
        self._limiter = trio.CapacityLimiter(1)
        self._run_blocking: BlockingCall = run_blocking or self._in_thread

    async def _in_thread(self, fn: Callable[[], Any]) -> Any:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    async def _call(self, fn: Callable[[], Any], owner: KnowledgeGraph | None = None) -> Any:
        """``fn()`` through the blocking runner. A runner may give up on a call whose thread goes on (a deadline, a
        cancellation: the thread is abandoned); if ``fn`` had not finished then, the mirror may no longer match
        the storage (the write may still commit), so it is dropped and the next operation loads it again; the
        abandoned thread closes the dropped graph (``owner``, or the one ``fn`` opened) when it returns. No
        abandoned thread ever touches the graph the next operation uses."""
        state = {"finished": False, "abandoned": False}
        guard = threading.Lock()

        def job() -> Any:
            result: Any = None
            try:
                result = fn()
                return result
            finally:
                with guard:
                    state["finished"] = True
                    late = state["abandoned"]
                target = owner if owner is not None else result
                if late and isinstance(target, KnowledgeGraph):
                    with contextlib.suppress(Exception):
                        target.close()

        try:
            return await self._run_blocking(job)
        except BaseException:
            with guard:
                state["abandoned"] = not state["finished"]
            if state["abandoned"]:
                self._graph = None
            raise

    async def run(self, name: str, *args: Any) -> Any:
        async with self._lock:
            if self._graph is None:
                self._graph = await self._call(self._open)
            graph = self._graph
            op = getattr(graph, name)
            if name in self.READS:
                return op(*args)
            return await self._call(lambda: op(*args), graph)

    def _open(self) -> KnowledgeGraph:
        if self._storage is None:
            return KnowledgeGraph(self._path, self._settings)
        storage = self._storage()
        try:
            return KnowledgeGraph(storage, self._settings)
        except BaseException:
            storage.close()
            raise

    async def aclose(self) -> None:
        async with self._lock:
            graph, self._graph = self._graph, None
            if graph is not None:
                await self._call(graph.close)  # abandoned: nothing else to close it
