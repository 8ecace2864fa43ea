"""MCP against a real daemon (`village run` in a subprocess): `village mcp` over stdio and Streamable HTTP on
loopback through the SDK's mcp.Client in both protocol eras, the MCP Inspector CLI, `village mcp token|status`,
`village memory export|forget`, memory surviving a restart, and the clear error when no daemon runs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp_types
import pytest
import trio
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # no stubs installed
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters

from tests.mcp.helpers import http_client, text_of
from tests.mcp.reference import inspector_cli_script

ROOT = Path(__file__).resolve().parents[2]
VILLAGE = [sys.executable, "-m", "node.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CONFIG = '[betanet]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\nmdns = false\n\n[mcp]\nhttp_listen = "127.0.0.1:0"\n'
WAIT_S = 60.0


def village(*args: str, timeout: float = WAIT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VILLAGE, *args], capture_output=True, text=True, timeout=timeout, env=ENV, check=False)


class Daemon:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.dd = ["--data-dir", str(data_dir)]
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        notify_path = self.data_dir.parent / "notify.sock"
        notify_path.unlink(missing_ok=True)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.settimeout(WAIT_S)
        env = {**ENV, "NOTIFY_SOCKET": str(notify_path), "VILLAGE_DATA_DIR": str(self.data_dir)}
        self.proc = subprocess.Popen(
            [*VILLAGE, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            assert notify.recv(64) == b"READY=1"  # the daemon's own readiness signal
        finally:
            notify.close()

    def stop(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=WAIT_S)
        assert self.proc.returncode == 0, err
        return err

    def stdio(self, mode: str = "auto", message_handler: Any = None) -> Client:
        return Client(
            StdioServerParameters(command=VILLAGE[0], args=[*VILLAGE[1:], "mcp", *self.dd], env=ENV),
            mode=mode,
            message_handler=message_handler,
        )

    def http(self, mode: str = "auto") -> Client:
        status = json.loads(village("mcp", "status", "--json", *self.dd).stdout)
        token = village("mcp", "token", *self.dd).stdout.strip()
        return http_client(status["http_url"], token, mode=mode)


@contextlib.contextmanager
def running(config: str) -> Iterator[Daemon]:
    tmp = Path(tempfile.mkdtemp(prefix="vlg-", dir="/tmp"))  # short: Unix socket paths are limited
    data = tmp / "data"
    data.mkdir(mode=0o700)
    (data / "config.toml").write_text(config)
    assert village("init", "--data-dir", str(data)).returncode == 0
    d = Daemon(data)
    d.start()
    try:
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    with running(CONFIG) as d:
        yield d


# Issue 14 item 1: every tool family it names, each declared once in the one registry and served on every transport.
REFERENCE_MEMORY_TOOLS = {
    "create_entities",
    "create_relations",
    "add_observations",
    "delete_entities",
    "delete_observations",
    "delete_relations",
    "read_graph",
    "search_nodes",
    "open_nodes",
}
ISSUE_14_TOOLS = {
    *("messages_send", "messages_broadcast", "inbox_list", "messages_status"),
    *("peers_list", "routes_list", "betanet_connect", "node_status"),
    *("rag_query", "rag_add", "rag_remove", "rag_share", "rag_feedback", "rag_stats"),
    *REFERENCE_MEMORY_TOOLS,
    *("scratch_set", "scratch_get", "scratch_list", "scratch_clear"),
    *("ask", "twin_suggest", "twin_status", "agents_list", "agents_trace"),
    *("vote_propose", "vote_cast", "vote_status", "vote_evidence"),
}
ISSUE_14_RESOURCES = {"node://status", "node://peers", "node://inbox", "memory://knowledge-graph"}


def structured(result: Any) -> Any:
    assert not result.is_error, text_of(result)
    return result.structured_content


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_stdio_and_http_clients_use_the_daemons_tools(daemon: Daemon, mode: str) -> None:
    peer_id = json.loads(village("id", "--json", *daemon.dd).stdout)["peer_id"]
    async with daemon.stdio(mode) as stdio, daemon.http(mode) as http:
        assert stdio.protocol_version == http.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
        for client in (stdio, http):
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) >= ISSUE_14_TOOLS, ISSUE_14_TOOLS - set(tools)
            for tool in tools.values():  # typed input (JSON Schema from the type hints), described
                assert tool.description and tool.input_schema["type"] == "object", tool.name
            for tool in tools.values():  # typed output too (JSON Schema from the output model's type hints)
                assert tool.output_schema and tool.output_schema["type"] == "object", tool.name
            assert "mesh" in tools["rag_query"].input_schema["properties"]  # `rag query --mesh`
            uris = {str(r.uri) for r in (await client.list_resources()).resources}
            assert uris >= ISSUE_14_RESOURCES, ISSUE_14_RESOURCES - uris
            assert structured(await client.call_tool("node_status", {}))["peer_id"] == peer_id
            assert structured(await client.call_tool("peers_list", {})) == {"peers": []}
        ent = {"name": "Ada", "entityType": "person", "observations": ["wrote notes on the engine"]}
        assert structured(await stdio.call_tool("create_entities", {"entities": [ent]})) == {"entities": [ent]}
        assert structured(await http.call_tool("search_nodes", {"query": "ENGINE"}))["entities"] == [ent]  # one memory
        sent = structured(await stdio.call_tool("messages_broadcast", {"text": "hello mesh"}))
        assert len(sent["id"]) == 32
        # Scratch is per client: the HTTP client does not see what the stdio client keeps.
        structured(await stdio.call_tool("scratch_set", {"key": "plan", "value": {"step": 1}}))
        assert structured(await stdio.call_tool("scratch_get", {"key": "plan"}))["value"] == {"step": 1}
        assert structured(await http.call_tool("scratch_get", {"key": "plan"}))["found"] is False
        bad = await stdio.call_tool("messages_send", {"peer": "nobody", "text": "hi"})
        assert bad.is_error and "no known peer matches 'nobody'" in text_of(bad)
        unknown = await stdio.call_tool("no_such_tool", {})
        assert unknown.is_error and "Traceback" not in text_of(unknown)
        res = await stdio.read_resource("node://status")
        assert json.loads(res.contents[0].text)["peer_id"] == peer_id  # type: ignore[union-attr]
    audit = (daemon.data_dir / "mcp" / "audit.jsonl").read_text().splitlines()
    audited = [json.loads(line)["tool"] for line in audit]
    assert {"create_entities", "search_nodes", "messages_broadcast", "no_such_tool"} <= set(audited)
    assert oct((daemon.data_dir / "mcp" / "audit.jsonl").stat().st_mode & 0o777) == "0o600"


def conforms(tool: mcp_types.Tool, result: Any) -> dict[str, Any]:
    """The call's structuredContent, checked against the tool's outputSchema by jsonschema (not our pydantic)."""
    got = structured(result)
    assert tool.output_schema is not None, tool.name
    Draft202012Validator.check_schema(tool.output_schema)
    errors = [e.message for e in Draft202012Validator(tool.output_schema).iter_errors(got)]
    assert not errors, (tool.name, errors)
    if tool.name not in REFERENCE_MEMORY_TOOLS:  # those answer in text as the reference server does
        assert json.loads(text_of(result)) == got  # the text block says the same
    return dict(got)


# Arguments for a real call of each read-only tool (after the setup calls below, so the answers are not empty).
READ_ONLY_CALLS: dict[str, dict[str, Any]] = {
    "node_status": {},
    "peers_list": {},
    "routes_list": {},
    "inbox_list": {},
    "rag_query": {"text": "engine notes"},
    "rag_stats": {},
    "read_graph": {},
    "search_nodes": {"query": "engine"},
    "open_nodes": {"names": ["Ada"]},
    "scratch_get": {"key": "plan"},
    "scratch_list": {},
    "twin_suggest": {"text": "the eng"},
    "twin_status": {},
    "agents_list": {},
    "agents_trace": {},
    "vote_status": {},
    "vote_evidence": {},
}


async def test_every_tool_declares_its_output_and_real_answers_match_it() -> None:
    """Issue 14 item 1 (typed output): over stdio and HTTP every listed tool has an outputSchema, and real calls of
    every read-only tool (and of the state-changing ones the setup makes) return structuredContent that a JSON
    Schema validator accepts."""
    tmp = Path(tempfile.mkdtemp(prefix="vlg-docs-", dir="/tmp"))
    try:
        docs = tmp / "docs"
        docs.mkdir()
        (docs / "engine.md").write_text("# Engine\n\nAda wrote notes on the analytical engine and its mill.\n")
        with running(CONFIG + f'rag_roots = ["{docs}"]\n') as daemon:
            async with daemon.stdio() as stdio, daemon.http() as http:
                for client in (stdio, http):
                    tools = {t.name: t for t in (await client.list_tools()).tools}
                    assert set(READ_ONLY_CALLS) <= set(tools)
                    missing = [n for n, t in tools.items() if t.output_schema is None]
                    assert not missing, missing
                    read_only = {n for n, t in tools.items() if t.annotations and t.annotations.read_only_hint}
                    assert read_only <= set(READ_ONLY_CALLS) | {"messages_status"}, read_only - set(READ_ONLY_CALLS)

                    async def call(name: str, args: dict[str, Any], tools: Any = tools, client: Any = client) -> Any:
                        return conforms(tools[name], await client.call_tool(name, args))

                    added = await call("rag_add", {"paths": [str(docs)], "shared": False})
                    assert added["files"] == 1 and added["outcomes"][0]["status"] in ("added", "unchanged")
                    doc_id = added["outcomes"][0]["doc_id"]
                    assert (await call("rag_share", {"id": doc_id}))["doc_ids"] == [doc_id]
                    await call(
                        "create_entities",
                        {"entities": [{"name": "Ada", "entityType": "person", "observations": ["engine"]}]},
                    )
                    sent = await call("messages_broadcast", {"text": "engine notes for everyone"})
                    assert (await call("messages_status", {"id": sent["id"]}))["state"] == "sent"
                    await call("scratch_set", {"key": "plan", "value": {"step": 1}})
                    answers = {name: await call(name, args) for name, args in READ_ONLY_CALLS.items()}
                    assert answers["rag_query"]["results"][0]["doc_id"] == doc_id
                    merged = await call("rag_query", {"text": "engine notes", "mesh": True})  # no peers: local only
                    assert merged["mesh"] is True and merged["results"][0]["ref"] == str(merged["results"][0]["id"])
                    assert answers["scratch_get"]["value"] == {"step": 1}
                    assert answers["agents_list"]["agents"] and answers["search_nodes"]["entities"]
                    hit = answers["rag_query"]["results"][0]["id"]
                    assert (await call("rag_feedback", {"verdict": "good", "ref": str(hit)}))["good"] is True
                    assert (await call("scratch_clear", {}))["cleared"] == 1
                    assert (await call("rag_remove", {"id": doc_id}))["doc_ids"] == [doc_id]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_stdio_client_hears_of_each_message_the_daemon_receives(daemon: Daemon, mode: str) -> None:
    """bob's daemon dials alice's over BetaNet; a client of alice's `village mcp` (2026-07-28:
    subscriptions/listen; 2025-11-25: resources/subscribe) is told node://inbox changed when bob's broadcast
    arrives, and reads it with inbox_list."""
    status = json.loads(village("status", "--json", *daemon.dd).stdout)
    boot = '[node]\nnickname = "bob"\n[betanet]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\nmdns = false\n'
    boot += f'bootstrap = ["{status["listen_addrs"][0]}"]\n'
    with running(boot) as bob:
        r = village("peers", "--wait", status["peer_id"], "--timeout", str(WAIT_S), *bob.dd, timeout=WAIT_S + 15)
        assert r.returncode == 0, r.stderr
        send, heard = trio.open_memory_channel[str](16)

        async def on_message(message: Any) -> None:
            if isinstance(message, mcp_types.ResourceUpdatedNotification):
                await send.send(message.params.uri)

        async with daemon.stdio(mode, message_handler=on_message) as client:

            async def broadcast(text: str) -> None:
                r = await trio.to_thread.run_sync(lambda: village("broadcast", text, *bob.dd))
                assert r.returncode == 0, r.stderr

            with trio.fail_after(WAIT_S):
                if mode == "legacy":
                    assert client.server_capabilities.resources is not None
                    assert client.server_capabilities.resources.subscribe is True
                    with warnings.catch_warnings():  # the SDK warns that 2026-07-28 removed it; this is 2025-11-25
                        warnings.simplefilter("ignore")
                        await client.session.subscribe_resource("node://inbox")
                    await broadcast("hello over stdio")
                    assert await heard.receive() == "node://inbox"
                else:
                    async with client.listen(resource_subscriptions=["node://inbox"]) as sub:
                        await broadcast("hello over stdio")
                        async for event in sub:
                            assert getattr(event, "uri", None) == "node://inbox"
                            break
            listed = structured(await client.call_tool("inbox_list", {}))
            assert [m["text"] for m in listed["messages"]] == ["hello over stdio"]
            # With a real peer and a real message, the answers still match their output schemas (closed models).
            tools = {t.name: t for t in (await client.list_tools()).tools}
            conforms(tools["inbox_list"], await client.call_tool("inbox_list", {}))
            peers = conforms(tools["peers_list"], await client.call_tool("peers_list", {}))["peers"]
            assert any(p["nickname"] == "bob" and p["reachable"] for p in peers)
            assert conforms(tools["routes_list"], await client.call_tool("routes_list", {}))["routes"]
            assert conforms(tools["node_status"], await client.call_tool("node_status", {}))["peers"] >= 1


async def test_memory_survives_a_restart_and_the_user_can_export_and_erase_it(daemon: Daemon) -> None:
    ent = {"name": "Bob", "entityType": "cat", "observations": ["sleeps"]}
    async with daemon.stdio() as client:
        structured(await client.call_tool("create_entities", {"entities": [ent]}))
    daemon.stop()
    daemon.start()
    async with daemon.stdio() as client:
        assert structured(await client.call_tool("read_graph", {})) == {"entities": [ent], "relations": []}
    exported = json.loads(village("memory", "export", *daemon.dd).stdout)
    assert exported["knowledge_graph"]["entities"] == [ent]
    r = village("memory", "forget", *daemon.dd)
    assert r.returncode == 2 and "--yes" in r.stderr
    r = village("memory", "forget", "--yes", *daemon.dd)
    assert r.returncode == 0 and "erased 1 entities" in r.stdout
    assert json.loads(village("memory", "export", *daemon.dd).stdout)["knowledge_graph"]["entities"] == []


async def test_the_twin_learns_the_users_cli_messages_not_mcp_clients(daemon: Daemon) -> None:
    """MCP clients (stdio, HTTP; the gateway uses the same tools) reach the node's methods in-process or through
    mcp.call: what they send is not the user's text, so the twin must not learn it; `village broadcast` is."""
    async with daemon.stdio() as stdio, daemon.http() as http:
        for client in (stdio, http):
            assert len(structured(await client.call_tool("messages_broadcast", {"text": "the zorbling escrow"}))["id"])
    assert village("broadcast", "the quokkafied lunch", *daemon.dd).returncode == 0
    # The learner took the event before this new process could ask: the twin's worker serves requests in order.
    r = village("twin", "export", "--json", *daemon.dd, timeout=120)
    assert r.returncode == 0, r.stderr
    exported = json.loads(r.stdout)
    assert exported["status"]["messages_learned"] == 1
    assert "quokkafied" in exported["personal_words"] and "zorbling" not in json.dumps(exported)


def test_village_mcp_says_clearly_when_no_node_runs(tmp_path: Path) -> None:
    r = village("mcp", "--data-dir", str(tmp_path))
    assert r.returncode == 1
    assert "no node is running" in r.stderr and "village run" in r.stderr
    assert r.stdout == ""  # stdout is the protocol channel: nothing else is written there


def test_the_mcp_inspector_cli_lists_and_calls_a_tool(daemon: Daemon) -> None:
    cli = inspector_cli_script()
    # The server command is the target; its own options come after `--` (the Inspector would take them).
    target = [VILLAGE[0], "--", *VILLAGE[1:], "mcp", *daemon.dd]
    node = shutil.which("node") or "node"
    listed = subprocess.run(
        [node, str(cli), *target[:1], "--method", "tools/list", *target[1:]],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env=ENV,
    )
    assert listed.returncode == 0, listed.stderr
    assert "search_nodes" in {t["name"] for t in json.loads(listed.stdout)["tools"]}
    called = subprocess.run(
        [
            node,
            str(cli),
            *target[:1],
            "--method",
            "tools/call",
            "--tool-name",
            "scratch_set",
            "--tool-arg",
            "key=k",
            "--tool-arg",
            "value=v",
            *target[1:],
        ],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env=ENV,
    )
    assert called.returncode == 0, called.stderr
    out = json.loads(called.stdout)
    assert out.get("isError") in (None, False) and out["structuredContent"]["key"] == "k"
