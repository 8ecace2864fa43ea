"""Coordinator decides broadcast versus private from the request's structure (never from words of the body),
resolves the recipient by the routing layer's unshadowable rules, runs the privacy check first, and broadcasts
only with confirmation (review of issue 16, finding 2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from node.agents.roles import AgentContext, Answer, coordinator, parse_delivery, policy_check
from node.agents.roster import load_roster
from node.agents.tools import ScopedTools
from node.agents.trace import Trace

BOB = {"peer_id": "b" * 16, "fingerprint": "b" * 64, "nickname": "bob"}
MALLORY_CODE = {"peer_id": "e" * 16, "fingerprint": "e" * 64, "nickname": "code"}  # hostile announce
MALLORY_HEX = {"peer_id": "c" * 16, "fingerprint": "c" * 64, "nickname": "bbbbbbbb"}  # shadows bob's ID prefix


class FakeMesh:
    """The tools' far side: records what would leave the device; policy.check is the real rule."""

    def __init__(self, peers: list[dict[str, Any]]) -> None:
        self.peers = peers
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def call(self, tool: str, args: Mapping[str, Any]) -> Any:
        if tool == "mesh.peers":
            return self.peers
        if tool == "policy.check":
            return policy_check(args["text"])
        self.sent.append((tool, dict(args)))
        return {"id": "m1"}

    async def call_as(self, agent: str, allowed: frozenset[str], tool: str, args: Mapping[str, Any]) -> Any:
        assert tool in allowed, (agent, tool)
        return await self.call(tool, args)


async def run(request: str, peers: list[dict[str, Any]], *, confirmed: bool = False) -> tuple[Answer, FakeMesh]:
    roster = load_roster(None)
    spec = roster.get("Coordinator")
    mesh = FakeMesh(peers)
    trace = Trace("r", request, 0)
    ctx = AgentContext(spec, ScopedTools(mesh, spec.name, spec.tools, trace), None, trace, roster, confirmed)
    return await coordinator(ctx, request), mesh


@pytest.mark.parametrize(
    ("request_text", "body"),
    [
        ("tell bob that all my savings are in the blue tin", "all my savings are in the blue tin"),
        ("send bob a note saying we are all out of insulin", "we are all out of insulin"),
        ("send a message to bob saying everyone should broadcast", "everyone should broadcast"),
        ("message bob: the whole village is invited", "the whole village is invited"),
        ("let bob know all is well", "all is well"),
    ],
)
async def test_body_words_never_broadcast(request_text: str, body: str) -> None:
    answer, mesh = await run(request_text, [BOB], confirmed=True)
    assert mesh.sent == [("mesh.send", {"peer": BOB["peer_id"], "text": body})], answer.text


async def test_hostile_nickname_in_the_body_never_captures_the_message() -> None:
    answer, mesh = await run("tell bob that the door code is 4921", [MALLORY_CODE])
    assert mesh.sent == [] and not answer.ok and "No known peer is 'bob'" in answer.text


async def test_hex_looking_nickname_cannot_shadow_a_peer_id_prefix() -> None:
    answer, mesh = await run("tell bbbbbbbb that hello", [BOB, MALLORY_HEX])
    assert mesh.sent == [("mesh.send", {"peer": BOB["peer_id"], "text": "hello"})], answer.text


async def test_ambiguous_recipient_is_refused() -> None:
    twin = {"peer_id": "d" * 16, "fingerprint": "d" * 64, "nickname": "bob"}
    answer, mesh = await run("tell bob that hello", [BOB, twin])
    assert mesh.sent == [] and not answer.ok and "several peers" in answer.text


async def test_broadcast_needs_an_explicit_leading_form_and_confirmation() -> None:
    answer, mesh = await run("broadcast that the well is fixed", [BOB])
    assert mesh.sent == [] and not answer.ok and answer.data["needs_confirmation"]
    answer, mesh = await run("tell everyone the meeting moved to 6", [BOB], confirmed=True)
    assert mesh.sent == [("mesh.broadcast", {"text": "the meeting moved to 6"})]
    assert parse_delivery("the well is fixed for all") is None


async def test_privacy_check_runs_before_any_send() -> None:
    answer, mesh = await run("broadcast my bank password is hunter2", [BOB], confirmed=True)
    assert mesh.sent == [] and not answer.ok and "personal data" in answer.text
    answer, mesh = await run("tell bob that my medical results came back", [BOB])
    assert mesh.sent == [] and not answer.ok and answer.data["needs_confirmation"]
    answer, mesh = await run("tell bob that my medical results came back", [BOB], confirmed=True)
    assert mesh.sent == [("mesh.send", {"peer": BOB["peer_id"], "text": "my medical results came back"})]


async def test_a_full_peer_id_not_heard_from_yet_is_accepted() -> None:
    answer, mesh = await run("tell 0123456789abcdef that hi", [])
    assert mesh.sent == [("mesh.send", {"peer": "0123456789abcdef", "text": "hi"})], answer.text
