"""The memory tools: the reference memory server's nine (same names, input schemas and behaviour; see
:mod:`node.mcp.graph`) and working memory's four (``scratch_*``), declared for the tool registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from node.mcp import outputs as o
from node.mcp.graph import GraphStore
from node.mcp.registry import Caller, Outcome, Resource, Tool
from node.mcp.working import WorkingMemory
from node.textsafe import nested_deeper_than

READ, WRITE, SCRATCH = "memory:read", "memory:write", "memory:scratch"
MAX_SCRATCH_DEPTH = 32  # nesting of a scratch value (what every reader, a typed MCP answer too, copes with)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EntityIn(_Strict):
    name: str = Field(description="The name of the entity")
    entityType: str = Field(description="The type of the entity")
    observations: list[str] = Field(description="An array of observation contents associated with the entity")


class RelationIn(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: str = Field(alias="from", description="The name of the entity where the relation starts")
    to: str = Field(description="The name of the entity where the relation ends")
    relationType: str = Field(description="The type of the relation")


class ObservationIn(_Strict):
    entityName: str = Field(description="The name of the entity to add the observations to")
    contents: list[str] = Field(description="An array of observation contents to add")


class DeletionIn(_Strict):
    entityName: str = Field(description="The name of the entity containing the observations")
    observations: list[str] = Field(description="An array of observations to delete")


class CreateEntitiesArgs(_Strict):
    entities: list[EntityIn]


class CreateRelationsArgs(_Strict):
    relations: list[RelationIn]


class AddObservationsArgs(_Strict):
    observations: list[ObservationIn]


class DeleteEntitiesArgs(_Strict):
    entityNames: list[str] = Field(description="An array of entity names to delete")


class DeleteObservationsArgs(_Strict):
    deletions: list[DeletionIn]


class DeleteRelationsArgs(_Strict):
    relations: list[RelationIn] = Field(description="An array of relations to delete")


class ReadGraphArgs(BaseModel):
    pass


class SearchNodesArgs(_Strict):
    query: str = Field(description="The search query to match against entity names, types, and observation content")


class OpenNodesArgs(_Strict):
    names: list[str] = Field(description="An array of entity names to retrieve")


class EntityOut(BaseModel):
    name: str
    entityType: str
    observations: list[str]


class RelationOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: str = Field(alias="from")
    to: str
    relationType: str


class GraphOut(BaseModel):
    entities: list[EntityOut]
    relations: list[RelationOut]


class EntitiesOut(BaseModel):
    entities: list[EntityOut]


class RelationsOut(BaseModel):
    relations: list[RelationOut]


class AddedOut(BaseModel):
    entityName: str
    addedObservations: list[str]


class AddObservationsOut(BaseModel):
    results: list[AddedOut]


class DoneOut(BaseModel):
    success: bool
    message: str


class ScratchSetArgs(_Strict):
    key: str = Field(max_length=256, description="Key of the entry (1 to 256 characters).", min_length=1)
    value: Any = Field(description=f"Any JSON value to keep (lists/objects nested at most {MAX_SCRATCH_DEPTH} deep).")
    ttl_s: float | None = Field(None, description="Seconds the entry lives (default and cap: mcp.working_max_ttl_s).")

    @field_validator("value")
    @classmethod
    def _bounded_depth(cls, value: Any) -> Any:
        if nested_deeper_than(value, MAX_SCRATCH_DEPTH):
            raise ValueError(f"nested deeper than {MAX_SCRATCH_DEPTH} levels of lists/objects")
        return value


class ScratchKeyArgs(_Strict):
    key: str = Field(max_length=256, description="Key of the entry.")


class ScratchListArgs(_Strict):
    pass


class ScratchClearArgs(_Strict):
    key: str | None = Field(None, description="Only this key (default: every entry of this client).")


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _dump(items: list[BaseModel]) -> list[dict[str, Any]]:
    return [i.model_dump(by_alias=True) for i in items]


def memory_tools(graph: GraphStore) -> list[Tool]:
    async def create_entities(p: CreateEntitiesArgs, caller: Caller) -> Outcome:
        new = await graph.run("create_entities", _dump(list(p.entities)))
        return Outcome({"entities": new}, _json(new))

    async def create_relations(p: CreateRelationsArgs, caller: Caller) -> Outcome:
        new = await graph.run("create_relations", _dump(list(p.relations)))
        return Outcome({"relations": new}, _json(new))

    async def add_observations(p: AddObservationsArgs, caller: Caller) -> Outcome:
        results = await graph.run("add_observations", _dump(list(p.observations)))
        return Outcome({"results": results}, _json(results))

    def done(message: str) -> Outcome:
        return Outcome({"success": True, "message": message}, message)

    async def delete_entities(p: DeleteEntitiesArgs, caller: Caller) -> Outcome:
        await graph.run("delete_entities", list(p.entityNames))
        return done("Entities deleted successfully")

    async def delete_observations(p: DeleteObservationsArgs, caller: Caller) -> Outcome:
        await graph.run("delete_observations", _dump(list(p.deletions)))
        return done("Observations deleted successfully")

    async def delete_relations(p: DeleteRelationsArgs, caller: Caller) -> Outcome:
        await graph.run("delete_relations", _dump(list(p.relations)))
        return done("Relations deleted successfully")

    async def read_graph(p: ReadGraphArgs, caller: Caller) -> Outcome:
        g = await graph.run("read_graph")
        return Outcome(g, _json(g))

    async def search_nodes(p: SearchNodesArgs, caller: Caller) -> Outcome:
        g = await graph.run("search_nodes", p.query)
        return Outcome(g, _json(g))

    async def open_nodes(p: OpenNodesArgs, caller: Caller) -> Outcome:
        g = await graph.run("open_nodes", list(p.names))
        return Outcome(g, _json(g))

    def tool(
        name: str,
        title: str,
        description: str,
        args: type[BaseModel],
        handler: Any,
        out: type[BaseModel],
        *,
        write: bool = False,
        destructive: bool = False,
    ) -> Tool:
        return Tool(
            name,
            description,
            args,
            WRITE if write else READ,
            write,
            handler,
            output_model=out,
            title=title,
            destructive=destructive,
            idempotent=destructive,
        )

    return [
        tool(
            "create_entities",
            "Create Entities",
            "Create multiple new entities in the knowledge graph",
            CreateEntitiesArgs,
            create_entities,
            EntitiesOut,
            write=True,
        ),
        tool(
            "create_relations",
            "Create Relations",
            "Create multiple new relations between entities in the knowledge graph. Relations should be in active "
            "voice",
            CreateRelationsArgs,
            create_relations,
            RelationsOut,
            write=True,
        ),
        tool(
            "add_observations",
            "Add Observations",
            "Add new observations to existing entities in the knowledge graph",
            AddObservationsArgs,
            add_observations,
            AddObservationsOut,
            write=True,
        ),
        tool(
            "delete_entities",
            "Delete Entities",
            "Delete multiple entities and their associated relations from the knowledge graph",
            DeleteEntitiesArgs,
            delete_entities,
            DoneOut,
            write=True,
            destructive=True,
        ),
        tool(
            "delete_observations",
            "Delete Observations",
            "Delete specific observations from entities in the knowledge graph",
            DeleteObservationsArgs,
            delete_observations,
            DoneOut,
            write=True,
            destructive=True,
        ),
        tool(
            "delete_relations",
            "Delete Relations",
            "Delete multiple relations from the knowledge graph",
            DeleteRelationsArgs,
            delete_relations,
            DoneOut,
            write=True,
            destructive=True,
        ),
        tool("read_graph", "Read Graph", "Read the entire knowledge graph", ReadGraphArgs, read_graph, GraphOut),
        tool(
            "search_nodes",
            "Search Nodes",
            "Search for nodes in the knowledge graph based on a query",
            SearchNodesArgs,
            search_nodes,
            GraphOut,
        ),
        tool(
            "open_nodes",
            "Open Nodes",
            "Open specific nodes in the knowledge graph by their names",
            OpenNodesArgs,
            open_nodes,
            GraphOut,
        ),
    ]


def scratch_tools(working: WorkingMemory, now: Callable[[], float]) -> list[Tool]:
    async def scratch_set(p: ScratchSetArgs, caller: Caller) -> dict[str, Any]:
        return working.set(caller.namespace, p.key, p.value, p.ttl_s, now())

    async def scratch_get(p: ScratchKeyArgs, caller: Caller) -> dict[str, Any]:
        return working.get(caller.namespace, p.key, now())

    async def scratch_list(p: ScratchListArgs, caller: Caller) -> dict[str, Any]:
        return working.list(caller.namespace, now())

    async def scratch_clear(p: ScratchClearArgs, caller: Caller) -> dict[str, Any]:
        return working.clear(caller.namespace, p.key, now())

    return [
        Tool(
            "scratch_set",
            "Working memory: keep a JSON value under a key for this client, for a while (TTL).",
            ScratchSetArgs,
            SCRATCH,
            True,
            scratch_set,
            output_model=o.ScratchSetOut,
            title="Scratch: set",
        ),
        Tool(
            "scratch_get",
            "Working memory: the value kept under a key by this client (found: false if none).",
            ScratchKeyArgs,
            SCRATCH,
            False,
            scratch_get,
            output_model=o.ScratchGetOut,
            title="Scratch: get",
        ),
        Tool(
            "scratch_list",
            "Working memory: this client's keys, their sizes and seconds left.",
            ScratchListArgs,
            SCRATCH,
            False,
            scratch_list,
            output_model=o.ScratchListOut,
            title="Scratch: list",
        ),
        Tool(
            "scratch_clear",
            "Working memory: forget one key, or everything this client kept.",
            ScratchClearArgs,
            SCRATCH,
            True,
            scratch_clear,
            output_model=o.ScratchClearOut,
            title="Scratch: clear",
            destructive=True,
            idempotent=True,
        ),
    ]


def memory_resource(graph: GraphStore) -> Resource:
    """``memory://knowledge-graph``: the whole graph as JSON, as the reference server serves it."""

    async def read(_: Caller) -> str:
        return _json(await graph.run("read_graph"))

    return Resource(
        "memory://knowledge-graph",
        "knowledge-graph",
        "Knowledge Graph",
        "The full knowledge graph with all entities and relations",
        READ,
        read,
    )
