"""Governance tools (``vote_propose``, ``vote_cast``, ``vote_status``, ``vote_evidence``): each a thin call of one
``vote.*`` control method (node/agents/vote.py), like the CLI. Reading needs ``vote:read``; proposing
``vote:propose`` and casting ``vote:cast`` (both state-changing: [mcp] allow/deny and the rate limit apply)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from node.mcp import outputs as o
from node.mcp.node_tools import Invoke
from node.mcp.registry import Caller, Tool

VOTE_READ_SCOPE = "vote:read"
VOTE_PROPOSE_SCOPE = "vote:propose"
VOTE_CAST_SCOPE = "vote:cast"


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VoteStatusArgs(_Args):
    namespace: Literal["village", "local"] | None = Field(
        None, description="village or local (default: village when configured, else local)."
    )


class VoteProposeArgs(_Args):
    kind: Literal["config", "policy", "admit", "remove"] = Field(description="What the proposal changes.")
    key: str = Field(
        max_length=128, description="SECTION.KEY (config), a policy key, or the member's public key in hex."
    )
    value: str | None = Field(None, max_length=1024, description="The value as JSON text; the power for admit.")
    ttl_s: float = Field(3600.0, ge=1, le=30 * 86400, description="Seconds until the proposal expires.")
    namespace: Literal["village", "local"] | None = Field(None, description="village or local.")


class VoteCastArgs(_Args):
    proposal: str = Field(
        pattern="^[0-9a-f]{64}$", description="The proposal's full hash (64 hex): a prefix could be ground."
    )
    value: Literal["yes", "no"] = Field(description="The vote.")


def vote_tools(invoke: Invoke) -> list[Tool]:
    def passthrough(method: str, wrap: str | None = None) -> Any:
        async def handler(p: BaseModel, caller: Caller) -> Any:
            result = await invoke(method, p.model_dump(exclude_none=True))
            return {wrap: result} if wrap else result

        return handler

    return [
        Tool(
            "vote_status",
            "Governance state: epoch, electorate, open proposals, certificates, adopted config and policy.",
            VoteStatusArgs,
            VOTE_READ_SCOPE,
            False,
            passthrough("vote.status"),
            output_model=o.VoteStatusOut,
        ),
        Tool(
            "vote_evidence",
            "Equivocation evidence: pairs of conflicting votes signed by one voter for one slot.",
            VoteStatusArgs,
            VOTE_READ_SCOPE,
            False,
            passthrough("vote.evidence", "evidence"),
            output_model=o.VoteEvidenceOut,
        ),
        Tool(
            "vote_propose",
            "Propose a typed change (config key on the whitelist, shared policy, admit/remove a member) and vote "
            "yes for it as this node; it takes effect only with a > 2/3 certificate.",
            VoteProposeArgs,
            VOTE_PROPOSE_SCOPE,
            True,
            passthrough("vote.propose"),
            output_model=o.VoteProposeOut,
        ),
        Tool(
            "vote_cast",
            "Vote yes or no on a village proposal as this node (once per proposal: never a second vote).",
            VoteCastArgs,
            VOTE_CAST_SCOPE,
            True,
            passthrough("vote.cast"),
            output_model=o.VoteCastOut,
        ),
    ]
