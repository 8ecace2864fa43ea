"""``POST /v1/ask`` and ``POST /v1/twin/suggest``: the node's entry point and the twin's suggestions over HTTP.

``/v1/ask`` (scope ``agents:ask``; roles user and admin) runs :func:`node.twin.ask.ask` as a remote caller whose
tool scopes are the key's gateway scopes mapped as for ``/mcp`` (:data:`anchor.gateway.mcp_route.SCOPE_MAP`): the
agents' tools are narrowed to them (no unshared document without ``rag:private``, no message without
``messages:send``, nothing of the owner's: traces, audit, stores). The twin's personal context is applied, and
reported in ``personal_context``, only for a key that also holds ``twin:owner`` (granted only explicitly, to admin
keys); for any other key the field is null and nothing personal was used. An ask may change state (an agent may
send a message), so it is audited (actor, the agent asked for, the request's length and a hash of it — never its
text) before it runs: a request the audit cannot record does not run.

``/v1/twin/suggest`` (scope ``twin:owner``) returns next-word suggestions from the personal model. It reads the
owner's personal data, so it is audited too (the text's length and hash only).
"""

# No `from __future__ import annotations`: FastAPI reads the route's annotations at run time.
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field

from anchor.gateway.auth import Principal
from anchor.gateway.errors import GatewayError, NodeUnavailable
from anchor.gateway.mcp_route import tool_scopes
from anchor.gateway.roles import SCOPE_ASK, SCOPE_TWIN_OWNER
from node.errors import NodeError
from node.mcp.registry import Caller

if TYPE_CHECKING:
    from anchor.gateway.app import GatewayContext

MAX_ASK_CHARS = 4000  # node.twin.ask.MAX_ASK_CHARS

Audit = Callable[[Principal, str, str, Mapping[str, Any]], Awaitable[None]]


class AskIn(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_ASK_CHARS, description="the request in plain words")
    agent: str | None = Field(None, max_length=64, description="send it to this agent instead of the King's choice")
    confirm: bool = Field(False, description="confirm a public broadcast (or a message the privacy check flags)")


class AskOut(BaseModel):
    id: str | None = Field(description="the request's trace id (null when a tool answered directly)")
    answer: str
    via: Literal["agents", "tool"] = Field(description="agents: the King routed it; tool: the agents are off")
    steps: list[dict[str, Any]]
    personal_context: dict[str, Any] | None = Field(
        None, description="what the twin's personal context changed; only for a key holding twin:owner"
    )


class SuggestIn(BaseModel):
    text: str = Field(max_length=MAX_ASK_CHARS, description="the text being typed")
    k: int = Field(3, ge=1, le=10, description="how many suggestions")


class Suggestion(BaseModel):
    token: str
    p: float


class SuggestOut(BaseModel):
    suggestions: list[Suggestion]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]


def add_ask_routes(
    app: FastAPI,
    ctx: "GatewayContext",
    scoped: Callable[[str], Callable[..., Awaitable[Principal]]],
    audit: Audit,
    responses: dict[int | str, dict[str, Any]],
) -> None:
    @app.post("/v1/ask", response_model=AskOut, responses=responses)
    async def ask_route(body: AskIn, principal: Annotated[Principal, Depends(scoped(SCOPE_ASK))]) -> AskOut:
        """Ask the node in plain words: the agents answer (with tools narrowed to this key's scopes), or with the
        agents off the matching tool; personal context only for a key holding twin:owner."""
        from node.twin.ask import Access, ask

        if ctx.node.core is None:
            raise NodeUnavailable("the node is not running")
        caller = Caller("gateway", f"key:{principal.key_id}", tool_scopes(principal.scopes))
        await audit(
            principal,
            "ask",
            body.agent or "King",
            {"chars": len(body.text), "sha256_16": _digest(body.text), "confirm": body.confirm},
        )
        try:
            out = await ask(ctx.node, body.text, access=Access(caller), agent=body.agent, confirm=body.confirm)
        except GatewayError:
            raise
        except NodeError as exc:
            raise GatewayError(str(exc), code="ask_rejected") from exc
        return AskOut.model_validate(out)

    @app.post("/v1/twin/suggest", response_model=SuggestOut, responses=responses)
    async def suggest_route(
        body: SuggestIn, principal: Annotated[Principal, Depends(scoped(SCOPE_TWIN_OWNER))]
    ) -> SuggestOut:
        """Next-word suggestions / completions of the text being typed, from the owner's personal model."""
        from node.twin.service import TwinService

        twin = ctx.node.service("twin")
        if not isinstance(twin, TwinService):
            raise NodeUnavailable("the twin is disabled on this node (twin.enabled = false)", code="twin_unavailable")
        await audit(principal, "twin.suggest", "-", {"chars": len(body.text), "sha256_16": _digest(body.text)})
        try:
            got = await twin.suggest(body.text, body.k)
        except NodeError as exc:
            raise GatewayError(str(exc), code="twin_rejected") from exc
        return SuggestOut(suggestions=[Suggestion.model_validate(s) for s in got])
