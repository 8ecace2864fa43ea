"""Governance over HTTP: ``GET /v1/proposals``, ``GET /v1/proposals/{id}``, ``POST /v1/proposals`` and
``POST /v1/proposals/{id}/votes``.

Each route calls the node's ``vote.*`` control method in-process (node/agents/vote.py), the code path of
``village vote`` and the MCP tools. Scopes: ``vote:read`` (roles user and admin), ``vote:propose`` and
``vote:cast`` (admin). A proposal or a vote is written to the audit log before it is made; a refusal (a key not on
``governance.votable_keys``, a second vote) adds a ``vote.refused`` row with the reason and answers 400. The
namespace is the village's when the node has one (``governance.village_members``), else the node's local one.
"""

# No `from __future__ import annotations`: FastAPI reads the route's annotations at run time.
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path
from pydantic import BaseModel, Field

from anchor.gateway.auth import Principal
from anchor.gateway.errors import GatewayError, NodeUnavailable, NotFound
from anchor.gateway.roles import SCOPE_VOTE_CAST, SCOPE_VOTE_PROPOSE, SCOPE_VOTE_READ
from node.control.rpc import RpcError

if TYPE_CHECKING:
    from anchor.gateway.app import GatewayContext
    from node.control.rpc import Registry

HASH_HEX = "^[0-9a-f]{64}$"


class ProposalIn(BaseModel):
    kind: Literal["config", "policy", "admit", "remove"] = Field(description="what the proposal changes")
    key: str = Field(min_length=1, max_length=128, description="SECTION.KEY, a policy key, or a member key (hex)")
    value: Any = Field(None, description="the new value (JSON); the power for admit; nothing for remove")
    ttl_s: float = Field(3600.0, ge=1, le=30 * 86400, description="seconds until the proposal expires")
    vote: bool = Field(True, description="also vote yes as this node")


class VoteIn(BaseModel):
    value: Literal["yes", "no"] = Field(description="the vote")


class ProposalOut(BaseModel):
    hash: str
    epoch: int
    round: int
    kind: str
    key: str
    value: Any
    votes: int | None = Field(None, description="votes counted for it so far (village)")
    certificate: dict[str, Any] | None = Field(None, description="its certificate, once > 2/3 of the power signed")


class ProposalsOut(BaseModel):
    namespace: str
    epoch: int
    proposals: list[ProposalOut]
    state: dict[str, Any] = Field(description="the configuration and policy certificates adopted")


class VoteResultOut(BaseModel):
    namespace: str
    proposal: str
    certificate: dict[str, Any] | None
    state: dict[str, Any]


AUDIT_VALUE_CHARS = 256  # a longer value is audited by its SHA-256 and length only


def audit_detail(params: dict[str, Any]) -> dict[str, Any]:
    """The audit row's detail: every parameter, the value included (its SHA-256 always, the text when short)."""
    detail = {k: v for k, v in params.items() if k != "value"}
    value = params.get("value")
    text = "" if value is None else str(value)
    detail["value_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    if value is None or len(text) <= AUDIT_VALUE_CHARS:
        detail["value"] = value
    else:
        detail["value_chars"] = len(text)
    return detail


def add_vote_routes(
    app: FastAPI,
    ctx: "GatewayContext",
    scoped: Callable[[str], Callable[..., Awaitable[Principal]]],
    audit: Callable[[Principal, str, str, dict[str, Any]], Awaitable[None]],
    responses: dict[int | str, dict[str, Any]],
) -> None:
    registry: list[Registry] = []

    async def invoke(method: str, params: dict[str, Any]) -> Any:
        node = ctx.node
        if node.core is None:
            raise NodeUnavailable("the node is not running")
        if not registry:
            from node.control.methods import build_registry

            registry.append(node.control_server.registry if node.control_server else build_registry(node))
        reg = registry[0]
        m = reg.lookup(method)

        async def no_notify(_method: str, _params: Any) -> None:
            return None

        return await m.handler(reg.bind_params(m, params), no_notify)

    async def status() -> dict[str, Any]:
        try:
            out: dict[str, Any] = await invoke("vote.status", {})
        except RpcError as exc:
            raise NodeUnavailable(f"governance is not available: {exc.message}") from exc
        return out

    def proposals_of(st: dict[str, Any]) -> list[ProposalOut]:
        certs = {c["proposal"]: c for c in st["certificates"]}
        return [
            ProposalOut(
                hash=p["hash"],
                epoch=p.get("epoch", st["epoch"]),
                round=p["round"],
                kind=p["kind"],
                key=p["key"],
                value=p["value"],
                votes=p.get("votes"),
                certificate=certs.get(p["hash"]),
            )
            for p in st["proposals"]
        ]

    async def act(principal: Principal, action: str, target: str, method: str, params: dict[str, Any]) -> Any:
        await audit(principal, action, target, audit_detail(params))
        try:
            return await invoke(method, params)
        except RpcError as exc:
            await audit(principal, "vote.refused", target, {"action": action, "reason": exc.message[:200]})
            raise GatewayError(exc.message, code="vote_rejected") from exc

    @app.get("/v1/proposals", response_model=ProposalsOut, responses=responses)
    async def list_proposals(principal: Annotated[Principal, Depends(scoped(SCOPE_VOTE_READ))]) -> ProposalsOut:
        """The proposals of the current governance (village, else local), their certificates and the state."""
        st = await status()
        return ProposalsOut(namespace=st["namespace"], epoch=st["epoch"], proposals=proposals_of(st), state=st["state"])

    @app.get("/v1/proposals/{proposal}", response_model=ProposalOut, responses={404: {}, **responses})
    async def get_proposal(
        proposal: Annotated[str, Path(pattern=HASH_HEX, description="the proposal's hash (64 hex)")],
        principal: Annotated[Principal, Depends(scoped(SCOPE_VOTE_READ))],
    ) -> ProposalOut:
        """One proposal: its action, votes so far and certificate."""
        for p in proposals_of(await status()):
            if p.hash == proposal:
                return p
        raise NotFound(f"no proposal {proposal}", code="unknown_proposal")

    @app.post("/v1/proposals", response_model=VoteResultOut, status_code=201, responses=responses)
    async def propose(
        body: ProposalIn, principal: Annotated[Principal, Depends(scoped(SCOPE_VOTE_PROPOSE))]
    ) -> VoteResultOut:
        """Propose a typed change; with ``vote``, this node votes yes. It takes effect only with a certificate."""
        params = {
            "kind": body.kind,
            "key": body.key,
            "value": None if body.value is None else json.dumps(body.value),
            "ttl_s": body.ttl_s,
            "vote": body.vote,
        }
        out = await act(principal, "vote.propose", body.key, "vote.propose", params)
        return VoteResultOut(
            namespace=out.get("namespace", "local"),
            proposal=out["proposal"],
            certificate=out["certificate"],
            state=out["state"],
        )

    @app.post(
        "/v1/proposals/{proposal}/votes",
        response_model=VoteResultOut,
        status_code=201,
        responses={404: {}, **responses},
    )
    async def cast(
        proposal: Annotated[str, Path(pattern=HASH_HEX, description="the proposal's hash (64 hex)")],
        body: VoteIn,
        principal: Annotated[Principal, Depends(scoped(SCOPE_VOTE_CAST))],
    ) -> VoteResultOut:
        """Vote yes or no on a village proposal as this node (once: a second vote is refused)."""
        if not any(p.hash == proposal for p in proposals_of(await status())):
            raise NotFound(f"no proposal {proposal}", code="unknown_proposal")
        out = await act(principal, "vote.cast", proposal, "vote.cast", {"proposal": proposal, "value": body.value})
        return VoteResultOut(
            namespace=out["namespace"], proposal=out["proposal"], certificate=out["certificate"], state=out["state"]
        )
