"""The tool registry: schemas from type hints, scopes, allow/deny per transport, rate limits, audit, errors."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import trio
from pydantic import BaseModel, Field

from node.errors import MeshError
from node.mcp.audit import AuditLog, args_digest
from node.mcp.confine import read_confined
from node.mcp.errors import AuditUnavailable, InvalidArguments, NotAllowed, ToolError, ToolRateLimited, UnknownTool
from node.mcp.registry import Caller, Registry, Tool
from node.mcp.working import WorkingMemory
from node.rag.extract import SUPPORTED_SUFFIXES
from tests.mcp.helpers import mcp_settings


class EchoArgs(BaseModel):
    text: str = Field(description="What to say back.")
    times: int = Field(1, ge=1, le=3)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(tmp_path: Path, **settings: Any) -> tuple[Registry, Clock, AuditLog]:
    clock = Clock()
    audit = AuditLog(tmp_path / "audit.jsonl", max_bytes=4096, wall_ms=lambda: 1)
    reg = Registry(mcp_settings(**settings), now=clock, audit=audit)

    async def echo(p: EchoArgs, caller: Caller) -> dict[str, Any]:
        return {"said": p.text * p.times, "by": caller.client_id}

    async def post(p: EchoArgs, caller: Caller) -> dict[str, Any]:
        return {"posted": p.text}

    async def broken(p: EchoArgs, caller: Caller) -> Any:
        raise KeyError("a bug")

    async def refused(p: EchoArgs, caller: Caller) -> Any:
        raise MeshError("peer 'zed' is unknown")

    reg.add(Tool("echo", "Say it back.", EchoArgs, "demo:read", False, echo))
    reg.add(Tool("post", "Change something.", EchoArgs, "demo:write", True, post))
    reg.add(Tool("broken", "Always fails.", EchoArgs, "demo:read", False, broken))
    reg.add(Tool("refused", "A node error.", EchoArgs, "demo:read", False, refused))
    return reg, clock, audit


async def test_schema_validation_and_results(tmp_path: Path) -> None:
    reg, _, _ = make(tmp_path)
    schema = reg.tools["echo"].input_schema
    assert schema["properties"]["text"] == {"type": "string", "description": "What to say back."}
    assert schema["required"] == ["text"]
    out = await reg.call("echo", {"text": "hi", "times": 2}, caller=Caller("local", "twin"))
    assert out.structured == {"said": "hihi", "by": "twin"}
    assert json.loads(out.text) == out.structured
    with pytest.raises(InvalidArguments, match="times"):
        await reg.call("echo", {"text": "hi", "times": 9}, caller=Caller("local", "twin"))
    with pytest.raises(UnknownTool):
        await reg.call("nope", {}, caller=Caller("local", "twin"))


async def test_errors_reach_the_caller_as_messages_never_tracebacks(tmp_path: Path) -> None:
    reg, _, _ = make(tmp_path)
    with pytest.raises(ToolError) as info:
        await reg.call("broken", {"text": "x"}, caller=Caller("stdio", "c"))
    assert str(info.value) == "internal error in broken; the node's log has the details"
    with pytest.raises(ToolError, match="peer 'zed' is unknown"):
        await reg.call("refused", {"text": "x"}, caller=Caller("stdio", "c"))
    assert reg.failures == {"ToolError": 2}


async def test_scopes(tmp_path: Path) -> None:
    reg, _, _ = make(tmp_path)
    reader = Caller("gateway", "k1", frozenset({"demo:read"}))
    assert (await reg.call("echo", {"text": "a"}, caller=reader)).structured["said"] == "a"
    with pytest.raises(NotAllowed, match="demo:write"):
        await reg.call("post", {"text": "a"}, caller=reader)
    assert {t.name for t in reg.listed(reader)} == {"echo", "broken", "refused"}
    everything = Caller("gateway", "k2", frozenset({"demo:*"}))
    assert (await reg.call("post", {"text": "a"}, caller=everything)).structured == {"posted": "a"}


async def test_allow_and_deny_per_transport_govern_state_changing_tools_only(tmp_path: Path) -> None:
    reg, _, _ = make(tmp_path, allow=("stdio:*", "local:*"), deny=("stdio:po*",))
    for transport in ("stdio", "http"):
        with pytest.raises(NotAllowed, match=f"not allowed over {transport}"):
            await reg.call("post", {"text": "a"}, caller=Caller(transport, "c"))
        assert (await reg.call("echo", {"text": "a"}, caller=Caller(transport, "c"))).structured["said"] == "a"
        assert "post" not in {t.name for t in reg.listed(Caller(transport, "c"))}
    assert (await reg.call("post", {"text": "a"}, caller=Caller("local", "twin"))).structured == {"posted": "a"}


async def test_state_changing_calls_are_rate_limited_per_client(tmp_path: Path) -> None:
    reg, clock, _ = make(tmp_path, state_calls_per_min=60.0, state_calls_burst=3)
    me, other = Caller("stdio", "me"), Caller("stdio", "other")
    for _ in range(3):
        await reg.call("post", {"text": "a"}, caller=me)
    with pytest.raises(ToolRateLimited, match=r"retry in 1\.0 s"):
        await reg.call("post", {"text": "a"}, caller=me)
    for _ in range(10):  # reads are not limited
        await reg.call("echo", {"text": "a"}, caller=me)
    await reg.call("post", {"text": "a"}, caller=other)  # another client has its own bucket
    clock.t += 1.0
    await reg.call("post", {"text": "a"}, caller=me)


async def test_every_call_is_audited_without_its_arguments_in_a_private_file(tmp_path: Path) -> None:
    reg, _, audit = make(tmp_path, allow=("local:*",))
    await reg.call("echo", {"text": "secret words"}, caller=Caller("local", "twin"))
    with pytest.raises(NotAllowed):
        await reg.call("post", {"text": "x"}, caller=Caller("http", "session:1"))
    audit.close()
    path = tmp_path / "audit.jsonl"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert "secret words" not in text
    first, second = (json.loads(line) for line in text.splitlines())
    assert first["tool"] == "echo" and first["ok"] and first["transport"] == "local" and first["client"] == "twin"
    assert not first["changes_state"] and len(first["args_sha256"]) == 64
    assert second["tool"] == "post" and not second["ok"] and second["error"] == "NotAllowed"
    assert second["changes_state"] is True


def test_the_audit_log_rotates_at_its_bound(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "a.jsonl", max_bytes=4096, wall_ms=lambda: 1)
    for _ in range(40):
        audit.record(tool="t", caller=Caller("local", "x"), changes_state=False, args={}, error=None, duration_s=0)
    audit.close()
    assert (tmp_path / "a.jsonl").stat().st_size <= 4096
    assert (tmp_path / "a.jsonl.1").stat().st_size <= 4096
    lines = (tmp_path / "a.jsonl").read_text().count("\n") + (tmp_path / "a.jsonl.1").read_text().count("\n")
    assert 20 < lines <= 40


def test_rag_add_reads_only_what_it_checked_and_never_follows_a_symlink(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "note.md").write_text("# Note\ninside the root")
    (root / "sub" / "skip.bin").write_bytes(b"\0")  # unsupported suffix: not read when walking
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "keys.txt").write_text("the door code is 4921")
    (root / "escape").symlink_to(tmp_path / "secret")  # a folder symlink under the root, pointing outside
    (root / "sub" / "leak.txt").symlink_to(tmp_path / "secret" / "keys.txt")  # a file symlink pointing outside
    (root / "sub" / "alias.md").symlink_to(root / "sub" / "note.md")  # pointing inside: not followed either

    def read(*paths: str, roots: tuple[str, ...] = (str(root),)) -> Any:
        return read_confined(list(paths), list(roots), suffixes=SUPPORTED_SUFFIXES, max_file_bytes=1 << 20)

    note = str((root / "sub" / "note.md").resolve())
    assert read(str(root / "sub" / "note.md")).files == [(note, b"# Note\ninside the root")]
    walked = read(str(root))
    assert walked.files == [(note, b"# Note\ninside the root")]
    assert sorted(e["path"].rsplit("/", 1)[1] for e in walked.errors) == ["alias.md", "escape", "leak.txt"]
    assert all("symlink" in e["error"] for e in walked.errors)
    for bad in (
        str(root / "escape" / "keys.txt"),  # a symlink component under the root
        str(root / "escape"),
        str(root / "sub" / "leak.txt"),
        str(tmp_path / "secret" / "keys.txt"),
        str(root / ".." / "secret" / "keys.txt"),
        "docs/sub/note.md",
        str(root / "sub" / "note.md\0x"),
    ):
        with pytest.raises(NotAllowed):
            read(bad)
    with pytest.raises(NotAllowed, match=r"mcp\.rag_roots"):
        read(str(root), roots=())
    big = root / "big.txt"
    big.write_bytes(b"x" * 2048)
    out = read_confined([str(big)], [str(root)], suffixes=SUPPORTED_SUFFIXES, max_file_bytes=1024)
    assert out.files == [] and "larger than rag.max_file_bytes" in out.errors[0]["error"]


def test_a_folder_swapped_for_a_symlink_during_rag_add_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race made deterministic: right after the root is opened (the check has passed: the path is under the
    root), an attacker replaces ``sub`` with a symlink to a secret folder. The next open (relative to the root's
    descriptor, O_NOFOLLOW) refuses it; a path-based reopen would have read the secret."""
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "keys.txt").write_text("harmless")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "keys.txt").write_text("the door code is 4921")
    real_open = os.open
    swapped: list[bool] = []

    def open_and_swap(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        if not swapped:
            swapped.append(True)
            (root / "sub").rename(root / "sub.old")
            (root / "sub").symlink_to(tmp_path / "secret")
        return fd

    monkeypatch.setattr(os, "open", open_and_swap)  # the module calls os.open
    with pytest.raises(NotAllowed, match="does not follow symlinks"):
        read_confined(
            [str(root / "sub" / "keys.txt")], [str(root)], suffixes=SUPPORTED_SUFFIXES, max_file_bytes=1 << 20
        )
    assert swapped


async def test_rag_add_ingests_through_the_registry_and_not_the_symlinked_secret(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    from node.identity import create_identity
    from node.mcp.plugin import PLUGIN as MCP_PLUGIN
    from node.mcp.service import McpService
    from node.node import Node
    from node.plugin import Service
    from node.rag.node_service import RagNodeService
    from node.rag.plugin import PLUGIN as RAG_PLUGIN
    from node.rag.plugin import rag_service
    from node.rag.settings import RagSection
    from node.settings import Config

    root = tmp_path / "docs"
    root.mkdir()
    (root / "garden.md").write_text("# Garden\ntomatoes planted in May")
    (tmp_path / "keys.txt").write_text("the door code is 4921")
    (root / "keys.txt").symlink_to(tmp_path / "keys.txt")
    data = tmp_path / "data"
    data.mkdir()
    rag_settings = RagSection(mode="bm25")
    cfg = Config(data_dir=data, rag=rag_settings)
    service = McpService(mcp_settings(rag_roots=(str(root),)))
    services: list[Service] = [RagNodeService(rag_settings), service]
    node = Node(cfg, create_identity(data), control=False, services=services, plugins=[MCP_PLUGIN, RAG_PLUGIN])
    await nursery.start(node.run)
    await service.wait_ready()
    assert service.registry is not None
    with trio.fail_after(60):
        out = await service.registry.call("rag_add", {"paths": [str(root)]}, caller=Caller("local", "t"))
    assert out.structured["files"] == 1 and out.structured["added"] == 1, out.structured
    assert [e["path"] for e in out.structured["errors"]] == [str(root.resolve() / "keys.txt")]
    rag = rag_service(node)
    assert rag is not None
    found = await rag.query("door code", k=5)
    assert "4921" not in json.dumps(found, default=str)
    hits = await rag.query("tomatoes", k=5)
    assert "garden.md" in json.dumps(hits, default=str)


def test_working_memory_ttl_bytes_and_clients() -> None:
    wm = WorkingMemory(max_bytes_per_client=100, max_clients=2, max_ttl_s=60)
    wm.set("a", "k", "v" * 10, 5, now=0)
    assert wm.get("a", "k", now=4.9)["value"] == "v" * 10
    assert wm.get("b", "k", now=1)["found"] is False  # per client
    assert wm.get("a", "k", now=5.0)["found"] is False  # expired
    wm.set("a", "k", "x", 10_000, now=10)
    assert wm.list("a", now=10)["keys"][0]["expires_in_s"] == 60  # capped at the max TTL
    with pytest.raises(ToolError, match="working memory is full"):
        wm.set("a", "big", "y" * 200, None, now=10)
    wm.set("b", "k", 1, None, now=10)
    wm.set("c", "k", 2, None, now=10)  # a third client evicts the least recently used (a)
    assert wm.get("a", "k", now=11)["found"] is False and wm.evicted_clients == 1
    assert wm.export(now=11) == {"b": {"k": 1}, "c": {"k": 2}}
    assert wm.clear("b", None, now=11) == {"cleared": 1}
    assert wm.forget() == {"entries": 1}


async def test_a_callers_pre_audit_gates_state_changing_calls(tmp_path: Path) -> None:
    reg, _, _ = make(tmp_path)
    written: list[tuple[str, str, int]] = []
    fail = False

    async def pre_audit(tool: str, digest: str, size: int) -> None:
        if fail:
            raise MeshError("postgres unavailable: connection refused")
        written.append((tool, digest, size))

    caller = Caller("gateway", "key:k1", frozenset({"demo:*"}), pre_audit=pre_audit)
    assert (await reg.call("post", {"text": "hi"}, caller=caller)).structured == {"posted": "hi"}
    assert (await reg.call("echo", {"text": "hi"}, caller=caller)).structured["said"] == "hi"  # a read: no row
    assert written == [("post", *args_digest({"text": "hi"}))]
    fail = True
    with pytest.raises(AuditUnavailable, match="post was not run") as e:
        await reg.call("post", {"text": "again"}, caller=caller)
    assert "connection refused" not in str(e.value)  # the store's details stay in the node's log
    assert reg.failures == {"AuditUnavailable": 1}


async def test_scratch_is_keyed_by_the_authenticated_client_and_its_session(tmp_path: Path) -> None:
    from node.mcp.memory_tools import scratch_tools

    reg, clock, _ = make(tmp_path)
    reg.extend(scratch_tools(WorkingMemory(max_bytes_per_client=4096, max_clients=8, max_ttl_s=60.0), clock))
    alice = Caller("http", "token:aaaa", session="s1")
    await reg.call("scratch_set", {"key": "k", "value": 1}, caller=alice)
    assert (await reg.call("scratch_get", {"key": "k"}, caller=alice)).structured["value"] == 1
    for other in (
        Caller("http", "token:bbbb", session="s1"),  # another client presenting alice's session id
        Caller("http", "token:aaaa", session="s2"),  # alice's other session
        Caller("http", "token:aaaa"),  # alice without a session (a stateless client)
    ):
        assert (await reg.call("scratch_get", {"key": "k"}, caller=other)).structured["found"] is False
