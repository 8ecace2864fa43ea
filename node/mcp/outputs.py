"""Typed outputs of the node's tools (issue 14 item 1): one pydantic model per tool, matched to what its control
method answers (node/control/methods.py, node/rag/rpc.py, node/twin/rpc.py, node/agents/plugin.py and vote.py,
node/mcp/working.py). MCP clients get each as the tool's ``outputSchema``; the registry validates every answer
against it (strictly: no coercion, so what passes here also passes a client's JSON Schema check) before it leaves.

Two kinds of model:

* :class:`Closed` — answers whose fields are fixed by our own code (a sent message's id, a scratch entry): every
  field typed, no other field allowed (``additionalProperties: false``).
* :class:`Open` — answers that grow with the node (status counters, the twin's figures, governance state, a trace):
  the stable fields typed, further fields allowed explicitly (``additionalProperties: true``).

The memory tools' outputs stay beside them in node.mcp.memory_tools (the reference server's shapes).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from types import GenericAlias
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, create_model

from node.inbox import JSON_NAMES, InboxMessage


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


# ---------------------------------------------------------------- node, peers, routes, BetaNet


class OutboxCounts(Open):
    pending: int
    delivered: int
    failed: int


class NodeStatusStable(Open):
    """The stable fields of ``node.status``: the one typing of them. The anchor's gateway builds ``GET /v1/node``
    from it (anchor.gateway.app.NodeOut: these fields and its refusal counts, nothing else)."""

    peer_id: str
    fingerprint: str
    nickname: str
    uptime_s: float
    transports: list[str]
    listen_addrs: list[str]
    peers: int = Field(description="Reachable peers.")
    links: int
    pending_private: int
    routes: int


class NodeStatusOut(NodeStatusStable):
    outbox: OutboxCounts
    data_dir: str
    counters: dict[str, int]
    app_counters: dict[str, int]
    contained: dict[str, int] = Field(description="Frames or timer tasks a contained failure ended, by cause.")
    transport_counters: dict[str, dict[str, float]]


class PeerOut(Closed):
    peer_id: str
    nickname: str
    fingerprint: str
    reachable: bool
    last_seen_s_ago: float
    hops: int
    transport: str | None
    address: str | None
    session: bool
    rtt_ms: float | None


class PeersOut(Closed):
    peers: list[PeerOut]


class RouteOut(Closed):
    destination: str
    nickname: str | None
    next_hop: str | None
    link: str
    transport: str | None
    hops: int
    cost: float
    via: list[str]
    source: str
    expires_in_s: float


class RoutesOut(Closed):
    routes: list[RouteOut]


class ConnectOut(Closed):
    link_id: str
    remote: str
    transport: str


# ---------------------------------------------------------------- messages


class SentOut(Closed):
    id: str
    to: str
    state: str


class BroadcastOut(Closed):
    id: str
    links: int = Field(description="Links the message left on.")


class MessageStatusOut(Closed):
    id: str
    to: str | None
    text: str
    private: bool
    state: str = Field(description="sent (broadcast), pending, delivered or failed.")
    created_at_ms: int
    updated_at_ms: int | None = None
    detail: str


def record_model(name: str, record: type[Any], renamed: Mapping[str, str]) -> type[Closed]:
    """The closed model of a dataclass record's JSON answer: the record's fields, typed as it types them, under
    the answer's names (``renamed``: record field -> answer key). One typing: a field added to the record is in
    the outputSchema too."""
    hints = typing.get_type_hints(record)
    spec: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        alias = renamed.get(f.name)
        spec[f.name] = (hints[f.name], Field(alias=alias) if alias else ...)
    return create_model(name, __base__=Closed, __module__=__name__, **spec)


InboxMessageOut = record_model("InboxMessageOut", InboxMessage, JSON_NAMES)  # node.inbox.InboxMessage.to_json()
_messages: Any = (GenericAlias(list, InboxMessageOut), ...)  # list[InboxMessageOut], a model built at run time
InboxOut = create_model("InboxOut", __base__=Closed, __module__=__name__, messages=_messages)


# ---------------------------------------------------------------- knowledge base


class RagHitOut(Open):
    """A local result (``id`` is what rag_feedback takes) or, with mesh, a merged one (``ref``, ``origin``...)."""

    id: int
    doc_id: int
    source: str
    title: str
    score: float
    snippet: str
    trust: float | None
    uncertainty: float | None
    ref: str | None = None
    origin: str | None = None


class PeerAskedOut(Open):
    peer_id: str
    nickname: str
    status: str
    hits: int
    elapsed_s: float
    detail: str


class RagQueryOut(Closed):
    query: str
    results: list[RagHitOut]
    mesh: bool | None = None
    peers: list[PeerAskedOut] | None = Field(None, description="With mesh: one status per peer asked.")


class AddedDocOut(Closed):
    source: str
    status: str = Field(description="added, replaced, unchanged, duplicate, empty or failed.")
    doc_id: int | None = None
    chunks: int = 0
    detail: str | None = None


class PathErrorOut(Closed):
    path: str
    error: str


class RagAddOut(Open):
    """Besides these: one count per outcome status that occurred (added, replaced, unchanged, failed...)."""

    files: int
    bytes: int
    outcomes: list[AddedDocOut] = Field(description="The first 100 files' outcomes.")
    errors: list[PathErrorOut]
    errors_more: int | None = None


class RagRemoveOut(Closed):
    documents: int
    chunks: int
    doc_ids: list[int]


class RagShareOut(Closed):
    documents: int
    changed: int
    doc_ids: list[int]
    shared: bool


class RagStatsOut(Open):
    documents: int
    chunks: int
    embedded_chunks: int
    shared_documents: int
    remote_documents: int
    source_bytes: int
    dense_index_size: int
    mode: str
    fusion: str
    graph: bool
    model_loaded: bool
    path: str | None
    db_bytes: int | None = None


class ReputationOut(Open):
    source: str
    alpha: float
    beta: float
    reputation: float
    uncertainty: float


class RagFeedbackOut(Closed):
    id: int | str = Field(description="The chunk id, or <peer hex>:<claim> for a peer's result.")
    good: bool
    source: ReputationOut
    chunk: dict[str, JsonValue] = Field(description="The result's trust after the feedback.")


# ---------------------------------------------------------------- working memory


class ScratchSetOut(Closed):
    key: str
    bytes: int
    expires_in_s: float


class ScratchGetOut(Closed):
    key: str
    found: bool
    value: JsonValue = Field(description="The JSON value kept (null when not found).")
    expires_in_s: float | None = None


class ScratchKeyOut(Closed):
    key: str
    bytes: int
    expires_in_s: float


class ScratchListOut(Closed):
    keys: list[ScratchKeyOut]
    bytes: int
    max_bytes: int


class ScratchClearOut(Closed):
    cleared: int


# ---------------------------------------------------------------- ask, twin, agents


class AskOut(Open):
    id: str | None = Field(description="The trace id (agents_trace), or null when a tool answered directly.")
    answer: str
    via: str = Field(description="agents, or tool (the agents are off).")
    steps: list[dict[str, JsonValue]] | None = None
    personal_context: dict[str, JsonValue] | None = None


class SuggestionOut(Closed):
    token: str
    p: float


class SuggestOut(Closed):
    suggestions: list[SuggestionOut]


class TwinStatusOut(Open):
    events: int
    messages_learned: int
    tokens_learned: int
    learning: str = Field(description="allowed or paused.")
    reason: str | None
    queued_events: int
    state_bytes: int
    max_disk_bytes: int


class AgentOut(Open):
    name: str
    mission: str
    tools: list[str]
    needs_llm: bool
    voting_power: float


class AgentsOut(Closed):
    agents: list[AgentOut]


class RecentRequestOut(Closed):
    id: str
    started_ms: int
    request: str


class TraceOut(Open):
    """One request's trace (``id``, ``request``, ``steps``...), or ``recent`` requests when no id was given."""

    id: str | None = None
    request: str | None = None
    steps: list[dict[str, JsonValue]] | None = None
    recent: list[RecentRequestOut] | None = None


# ---------------------------------------------------------------- governance


class VoteStatusOut(Open):
    namespace: str
    epoch: int
    electorate: list[list[JsonValue]] = Field(description="[member public key hex, voting power] pairs.")
    proposals: list[dict[str, JsonValue]]
    certificates: list[dict[str, JsonValue]]
    state: dict[str, JsonValue]


class EvidenceOut(Open):
    voter: str
    first: dict[str, JsonValue]
    second: dict[str, JsonValue]


class VoteEvidenceOut(Closed):
    evidence: list[EvidenceOut]


class VoteProposeOut(Open):
    proposal: str = Field(description="The proposal's hash (64 hex).")
    epoch: int
    round: int
    certificate: dict[str, JsonValue] | None
    state: dict[str, JsonValue]


class VoteCastOut(Open):
    namespace: str
    proposal: str
    vote: dict[str, JsonValue]
    certificate: dict[str, JsonValue] | None
    state: dict[str, JsonValue]
