"""Typed tool outputs (issue 14 item 1): every tool of the node declares an output model, and an answer that does not
match it reaches the MCP client as a tool error (logged with the details on the node), never as a traceback nor as
structuredContent that breaks the client's own schema check."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import trio
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # no stubs installed
from mcp.client.client import Client
from pydantic import ValidationError

from node.inbox import JSON_NAMES, Inbox, InboxMessage
from node.mcp import outputs
from node.mcp.audit import AuditLog
from node.mcp.errors import InvalidArguments, ToolError
from node.mcp.graph import GraphStore
from node.mcp.memory_tools import memory_tools, scratch_tools
from node.mcp.node_tools import node_tools
from node.mcp.registry import Caller, Outcome, Registry, Tool, json_schema
from node.mcp.server import LocalBackend, build_server
from node.mcp.vote_tools import vote_tools
from node.mcp.working import WorkingMemory
from tests.mcp.helpers import mcp_settings, text_of

PEER = {
    "peer_id": "3f2a9c01aabbccdd",
    "nickname": "bob",
    "fingerprint": "ab" * 32,
    "reachable": True,
    "last_seen_s_ago": 1.5,
    "hops": 1,
    "transport": "betanet",
    "address": "/ip4/127.0.0.1/tcp/4001",
    "session": False,
    "rtt_ms": None,
}


def registry_answering(answers: dict[str, Any]) -> Registry:
    """The node's own tools over a control layer that answers ``answers[method]`` (what a buggy method might)."""

    async def invoke(method: str, params: dict[str, Any]) -> Any:
        return answers[method]

    reg = Registry(mcp_settings(), now=trio.current_time)
    reg.extend(node_tools(invoke, rag_roots=()))
    reg.extend(vote_tools(invoke))
    reg.extend(scratch_tools(WorkingMemory(max_bytes_per_client=4096, max_clients=4, max_ttl_s=60.0), lambda: 0.0))
    return reg


def test_every_tool_of_the_node_declares_an_output_schema() -> None:
    reg = registry_answering({})
    reg.extend(memory_tools(GraphStore(None, mcp_settings())))
    for tool in reg.tools.values():
        assert tool.output_model is not None and tool.output_schema is not None, tool.name
        Draft202012Validator.check_schema(tool.output_schema)
        assert tool.output_schema["type"] == "object" and "properties" in tool.output_schema, tool.name
        assert "$ref" not in str(tool.output_schema), tool.name  # inlined for clients


async def test_a_matching_answer_passes_unchanged() -> None:
    reg = registry_answering({"peers.list": [PEER]})
    out = await reg.call("peers_list", {}, caller=Caller("stdio", "c"))
    assert out.structured == {"peers": [PEER]}
    Draft202012Validator(reg.tools["peers_list"].output_schema or {}).validate(out.structured)


@pytest.mark.parametrize(
    ("tool", "method", "answer"),
    [
        ("peers_list", "peers.list", [{**PEER, "hops": "1"}]),  # a string where an integer belongs: not coerced
        ("peers_list", "peers.list", [{k: v for k, v in PEER.items() if k != "reachable"}]),  # a field missing
        ("peers_list", "peers.list", [{**PEER, "secret": "x"}]),  # a field a closed model does not declare
        ("node_status", "node.status", {"peer_id": "3f2a9c01aabbccdd"}),  # open model: stable fields still required
        ("vote_status", "vote.status", ["not", "an", "object"]),
    ],
)
async def test_an_answer_outside_the_model_is_a_tool_error(
    tool: str, method: str, answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    reg = registry_answering({method: answer})
    with caplog.at_level(logging.ERROR, logger="village.mcp"), pytest.raises(ToolError) as info:
        await reg.call(tool, {}, caller=Caller("stdio", "c"))
    assert str(info.value) == f"internal error in {tool}: its answer did not match its output schema"
    assert f"tool {tool} answered outside its output schema" in caplog.text  # the details stay on the node
    assert reg.failures == {"ToolError": 1}


async def test_a_state_changing_tool_answering_outside_its_model_is_answered_and_audited_as_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The message was sent: an error now would make the client (or an agent) send it again."""
    answer = {"id": 7, "to": "3f2a9c01aabbccdd", "state": "pending"}  # the model's other fields are missing
    reg = registry_answering({"messages.send": answer})
    reg.audit = AuditLog(None, max_bytes=4096, wall_ms=lambda: 1)
    with caplog.at_level(logging.ERROR, logger="village.mcp"):
        out = await reg.call("messages_send", {"peer": "bob", "text": "hi"}, caller=Caller("stdio", "c"))
    assert out.structured == answer
    assert reg.failures == {} and reg.output_mismatches == {"messages_send": 1}
    assert reg.audit.last is not None and reg.audit.last["ok"] is True and reg.audit.last["tool"] == "messages_send"
    assert "tool messages_send answered outside its output schema" in caplog.text and "answered anyway" in caplog.text


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


async def test_an_answer_nested_deeper_than_a_json_parser_allows_is_validated() -> None:
    """Validated as a Python structure: pydantic-core's JSON parser gives up at ~200 levels (a value that was
    accepted and certified would have made vote_status an error on every node, forever)."""
    state = {"epoch": 0, "config": {}, "policy": {"x.y": _nested(250)}}
    answer = {"namespace": "local", "epoch": 0, "electorate": [], "proposals": [], "certificates": []}
    reg = registry_answering({"vote.status": {**answer, "state": state}})
    out = await reg.call("vote_status", {}, caller=Caller("stdio", "c"))
    assert out.structured["state"]["policy"]["x.y"] == _nested(250) and reg.output_mismatches == {}


async def test_a_scratch_value_nested_deeper_than_the_cap_is_refused_by_name() -> None:
    reg = registry_answering({})
    caller = Caller("stdio", "c")
    await reg.call("scratch_set", {"key": "k", "value": _nested(32)}, caller=caller)
    got = await reg.call("scratch_get", {"key": "k"}, caller=caller)
    assert got.structured["value"] == _nested(32)
    with pytest.raises(InvalidArguments, match=r"value: .*nested deeper than 32 levels"):
        await reg.call("scratch_set", {"key": "deep", "value": _nested(33)}, caller=caller)
    missing = await reg.call("scratch_get", {"key": "deep"}, caller=caller)
    assert missing.structured["found"] is False


async def test_a_mismatching_answer_reaches_an_mcp_client_as_a_tool_error_not_a_traceback() -> None:
    reg = registry_answering({"peers.list": [{**PEER, "rtt_ms": "fast"}], "node.status": {}})

    async def outcome_handler(p: Any, caller: Caller) -> Outcome:  # a handler that builds its Outcome itself
        return Outcome({"cleared": "all"}, "cleared all")

    scratch = reg.tools["scratch_clear"]
    reg.tools["scratch_clear"] = Tool(
        scratch.name,
        scratch.description,
        scratch.input_model,
        scratch.scope,
        False,
        outcome_handler,
        output_model=scratch.output_model,
    )  # fmt: skip (read-only here: a state-changing tool's mismatched answer is returned, see above)
    server = build_server(LocalBackend(reg, lambda ctx: Caller("stdio", "client")))
    async with Client(server) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        assert listed["peers_list"].output_schema == reg.tools["peers_list"].output_schema
        for name in ("peers_list", "node_status", "scratch_clear"):
            result = await client.call_tool(name, {})
            assert result.is_error and result.structured_content is None, name
            text = text_of(result)
            assert text == f"internal error in {name}: its answer did not match its output schema"
            assert "Traceback" not in text and "fast" not in text
        ok = await client.call_tool("scratch_list", {})  # a matching answer still flows, schema-checked by the SDK
        assert not ok.is_error and ok.structured_content == {"keys": [], "bytes": 0, "max_bytes": 4096}


async def test_tuples_in_an_answer_are_json_arrays_as_on_the_wire() -> None:
    """A control method answering with tuples (e.g. the electorate's pairs) is valid: the client gets arrays."""
    state = {"epoch": 0, "config": {}, "policy": {}}
    answer = {"namespace": "local", "epoch": 0, "electorate": [("ab" * 32, 1)], "proposals": (), "certificates": []}
    reg = registry_answering({"vote.status": {**answer, "state": state}})
    out = await reg.call("vote_status", {}, caller=Caller("stdio", "c"))
    assert out.structured["electorate"] == [("ab" * 32, 1)]
    server = build_server(LocalBackend(reg, lambda ctx: Caller("stdio", "client")))
    async with Client(server) as client:
        got = await client.call_tool("vote_status", {})
        assert not got.is_error and got.structured_content is not None
        assert got.structured_content["electorate"] == [["ab" * 32, 1]] and got.structured_content["proposals"] == []


async def test_an_answer_that_is_not_json_is_refused_or_reported_done() -> None:
    """NaN is not JSON and a structure nested past json's recursion limit cannot be encoded (review of fix8: the
    encoder sat outside the guard — a bare RecursionError, audited ok, and NaN sent to clients): a read-only tool
    answers a ToolError; a state-changing one says it is done without the answer (no retry invited)."""
    answer = {"namespace": "local", "epoch": 0, "electorate": [], "proposals": [], "certificates": []}
    reg = registry_answering(
        {
            "vote.status": {**answer, "state": {"epoch": 0, "config": {"k": float("nan")}, "policy": {}}},
            "messages.send": {"id": 7, "deep": _nested(1200)},
        }
    )
    with pytest.raises(ToolError, match="could not be encoded"):
        await reg.call("vote_status", {}, caller=Caller("stdio", "c"))
    out = await reg.call("messages_send", {"peer": "bob", "text": "hi"}, caller=Caller("stdio", "c"))
    assert "done" in out.text and reg.output_mismatches == {"vote_status": 1, "messages_send": 1}


def test_the_inbox_answer_is_typed_once_by_the_inbox_record(tmp_path: Path) -> None:
    """inbox_list's outputSchema is derived from node.inbox's record (one typing of the inbox answer): a stored
    message's answer passes it unchanged, its keys are the record's fields under their answer names, and a field a
    record gains is in the derived model too."""
    inbox = Inbox(tmp_path / "state.db", max_messages=10)
    inbox.add(id="m1", sender="ab" * 8, nickname="ann", text="hi", private=True, received_at_ms=5, sent_at_ms=4, hops=2)
    answer = {"messages": [m.to_json() for m in inbox.list()]}
    inbox.close()
    assert answer["messages"][0]["from"] == "ab" * 8 and "sender" not in answer["messages"][0]
    assert outputs.InboxOut.model_validate(answer).model_dump(mode="json", by_alias=True) == answer
    schema = json_schema(outputs.InboxOut)["properties"]["messages"]["items"]
    names = {JSON_NAMES.get(f.name, f.name) for f in dataclasses.fields(InboxMessage)}
    assert set(schema["properties"]) == names == set(schema["required"]) == set(answer["messages"][0])
    assert schema["additionalProperties"] is False

    @dataclasses.dataclass(frozen=True)
    class Grown(InboxMessage):
        ttl_s: float

    grown = outputs.record_model("Grown", Grown, JSON_NAMES)
    assert grown.model_json_schema(by_alias=True)["properties"]["ttl_s"]["type"] == "number"
    with pytest.raises(ValidationError, match="ttl_s"):
        grown.model_validate(answer["messages"][0])


_INBOX_MESSAGE_TYPES = {
    "seq": "integer",
    "id": "string",
    "from": "string",
    "nickname": "string",
    "text": "string",
    "private": "boolean",
    "received_at_ms": "integer",
    "sent_at_ms": "integer",
    "hops": "integer",
}
INBOX_LIST_OUTPUT_SCHEMA = {  # what MCP clients of inbox_list were promised (session 6); change it on purpose only
    "additionalProperties": False,
    "properties": {
        "messages": {
            "items": {
                "additionalProperties": False,
                "properties": {name: {"type": kind} for name, kind in _INBOX_MESSAGE_TYPES.items()},
                "required": list(_INBOX_MESSAGE_TYPES),
                "type": "object",
            },
            "type": "array",
        }
    },
    "required": ["messages"],
    "type": "object",
}
# sha256 of json.dumps(InboxOut.model_json_schema(by_alias=True)) before the inbox answer was typed by its record
INBOX_OUT_SCHEMA_SHA256 = "48034798ea98444e268b34c96cb81f616aab1cd33fd6170173dbdbb9299c5697"


def test_the_inbox_list_output_schema_is_pinned_byte_for_byte() -> None:
    """inbox_list's outputSchema follows node.inbox's record: a field added to the record (personal data, say) would
    reach every MCP client's schema. Pinned here, keys and order as published, so no such change goes unnoticed."""
    published = registry_answering({}).tools["inbox_list"].describe()["outputSchema"]
    assert json.dumps(published) == json.dumps(INBOX_LIST_OUTPUT_SCHEMA), json.dumps(published, indent=1)
    raw = json.dumps(outputs.InboxOut.model_json_schema(by_alias=True)).encode()
    assert hashlib.sha256(raw).hexdigest() == INBOX_OUT_SCHEMA_SHA256
