"""POST /v1/ask and POST /v1/twin/suggest over the real gateway (real PostgreSQL/Redis, a real node with its
knowledge base, twin and agents), and the ask/twin/agents tools through /mcp with mcp.Client: scopes (401/403),
audit rows before the effect, no personal context or unshared document for a key without the owner's scopes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
import trio
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from node.rag.plugin import rag_service
from node.rag.settings import RagSection
from node.twin.service import TwinService
from tests.anchor.gateway.conftest import Gateway, StartGateway

pytestmark = pytest.mark.timeout(300)


async def _teach_twin(gateway: Gateway) -> TwinService:
    """The owner's own activity (what the control-socket observer hands the twin): messages they wrote."""
    twin = gateway.node.service("twin")
    assert isinstance(twin, TwinService)
    await twin.ready.wait()
    for _ in range(3):
        twin.record("message", "the goats are in the upper meadow", action="messages.send")
    await twin.wait_learned(3)
    return twin


async def _auth(gateway: Gateway, client: httpx.AsyncClient, role: str, scopes: set[str] | None) -> dict[str, str]:
    _key, secret = await gateway.key(role, frozenset(scopes) if scopes is not None else None)
    return {"Authorization": f"Bearer {await gateway.token(client, secret)}"}


async def test_ask_and_suggest_scopes_audit_and_privacy(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(rag=RagSection(mode="bm25"))
    await _teach_twin(gateway)
    rag = rag_service(gateway.node)
    assert rag is not None
    await rag.add_text("note:diary", "Diary: the spare key is under the blue flowerpot.", title="diary")
    await rag.add_text("note:well", "The village well: the spare pump is in the shed.", title="well", shared=True)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=120.0) as client:
        # 401 without a token, 403 without the route's scope.
        assert (await client.post("/v1/ask", json={"text": "hi"})).status_code == 401
        assert (await client.post("/v1/twin/suggest", json={"text": "the"})).status_code == 401
        narrow = await _auth(gateway, client, "user", {"node:read"})
        r = await client.post("/v1/ask", headers=narrow, json={"text": "hi"})
        assert r.status_code == 403 and "agents:ask" in r.text
        user_key, user_secret = await gateway.key("user")  # default user scopes: agents:ask, never twin:owner
        user = {"Authorization": f"Bearer {await gateway.token(client, user_secret)}"}
        r = await client.post("/v1/twin/suggest", headers=user, json={"text": "the goats are in the upper"})
        assert r.status_code == 403 and "twin:owner" in r.text
        with pytest.raises(Exception, match="cannot hold scope"):
            await gateway.key("user", frozenset({"agents:ask", "twin:owner"}))

        # A user key: the agents answer from shared documents only, no personal context.
        r = await client.post("/v1/ask", headers=user, json={"text": "where is the spare key", "agent": "Sage"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["via"] == "agents" and body["personal_context"] is None
        assert "flowerpot" not in r.text
        r = await client.post("/v1/ask", headers=user, json={"text": "where is the spare pump", "agent": "Sage"})
        assert "shed" in r.json()["answer"]
        r = await client.post("/v1/ask", headers=user, json={"text": "show the audit log", "agent": "Auditor"})
        assert r.status_code == 200 and "owner only" in r.json()["answer"]
        rows = [a for a in await gateway.audit_of(user_key) if a.action == "ask"]
        assert len(rows) == 3 and rows[0].target == "Sage"
        assert "spare" not in str(rows) and rows[0].detail["chars"] == len("where is the spare key")

        # The owner (an admin key created with twin:owner and rag:private): suggestions and the private document.
        owner_key, owner_secret = await gateway.key(
            "admin", frozenset({"agents:ask", "twin:owner", "rag:query", "rag:private"})
        )
        owner = {"Authorization": f"Bearer {await gateway.token(client, owner_secret)}"}
        r = await client.post("/v1/twin/suggest", headers=owner, json={"text": "the goats are in the upper ", "k": 3})
        assert r.status_code == 200, r.text
        assert "meadow" in [s["token"] for s in r.json()["suggestions"]]
        r = await client.post("/v1/ask", headers=owner, json={"text": "where is the spare key", "agent": "Sage"})
        assert "flowerpot" in r.json()["answer"] and r.json()["personal_context"] == {}
        assert [a.action for a in await gateway.audit_of(owner_key)] == ["auth.token", "twin.suggest", "ask"]
        for bad in ({"text": ""}, {"text": "x" * 4001}, {"text": "x", "agent": "y" * 65}):
            assert (await client.post("/v1/ask", headers=owner, json=bad)).status_code == 422, bad
        r = await client.post("/v1/ask", headers=owner, json={"text": "hi", "agent": "Nobody"})
        assert (r.status_code, r.json()["error"]) == (400, "ask_rejected")


@asynccontextmanager
async def _mcp(gateway: Gateway, token: str) -> AsyncIterator[Any]:
    # A long read timeout: the first ask builds the King's router (MiniLM over the roster), seconds on a busy machine.
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120.0)
    async with Client(streamable_http_client(gateway.url + "/mcp", http_client=http)) as client:
        yield client


async def test_ask_and_twin_tools_over_gateway_mcp(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(rag=RagSection(mode="bm25"))
    await _teach_twin(gateway)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60.0) as client:
        _k, user_secret = await gateway.key("user")
        user_token = await gateway.token(client, user_secret)
        _k, owner_secret = await gateway.key("admin", frozenset({"agents:ask", "twin:owner"}))
        owner_token = await gateway.token(client, owner_secret)
    with trio.fail_after(240):
        async with _mcp(gateway, user_token) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert {"ask", "agents_list"} <= names
            assert not names & {"twin_suggest", "twin_status", "agents_trace"}  # never for a non-owner key
            r = await c.call_tool("twin_suggest", {"text": "the goats are in the upper"})
            assert r.is_error and "twin:read" in r.content[0].text
            r = await c.call_tool("ask", {"text": "which peers can I reach"})
            assert not r.is_error, r.content
            assert r.structured_content["via"] == "agents" and "personal_context" not in r.structured_content
            ask_tool = next(t for t in (await c.list_tools()).tools if t.name == "ask")
            assert ask_tool.annotations is not None and ask_tool.annotations.read_only_hint is False
            r = await c.call_tool("agents_list", {})
            assert len(r.structured_content["agents"]) == 23
        async with _mcp(gateway, owner_token) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert {"ask", "twin_suggest", "twin_status", "agents_trace"} <= names
            r = await c.call_tool("twin_suggest", {"text": "the goats are in the upper ", "k": 3})
            assert "meadow" in [s["token"] for s in r.structured_content["suggestions"]]
            r = await c.call_tool("twin_status", {})
            assert r.structured_content["messages_learned"] == 3
            r = await c.call_tool("ask", {"text": "which peers can I reach"})
            assert r.structured_content["personal_context"] == {}
            rid = r.structured_content["id"]
            r = await c.call_tool("agents_trace", {"id": rid})
            assert r.structured_content["request"] == "which peers can I reach"
