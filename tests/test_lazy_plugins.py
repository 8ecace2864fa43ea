"""Footprint (issue 17 item 3): a node with the default plugins (knowledge base, twin, MCP, agents) on imports none
of their heavy modules while idle — numpy, hnswlib, pydantic, the knowledge base's service, the twin's engine, the
MCP layer, the King — and each loads on its first use, which works: a real `village run` in a fresh interpreter
writes its ``sys.modules`` when it exits cleanly (``bench/footprint.py`` measures the RSS). In-process tests cover
what a real run cannot show cheaply: a peer's federated query as the knowledge base's first use (after a restart
with documents on disk), and a clear error when the MCP layer cannot load."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from node.control.client import ControlClient
from tests.test_lazy_imports import RUN_AND_LIST, _loaded

WAIT_S = 60.0  # real seconds; a passing start takes a few
BETANET = '[betanet]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\nmdns = false\n'
RAG_BM25 = '[rag]\nmode = "bm25"\n'  # first uses without the MiniLM model (fast)
BM25 = RAG_BM25 + "[twin]\nactions = false\n"
TWIN_OFF = "[twin]\nenabled = false\n"  # the twin learns every control call: off, a call is no twin event
# Loaded only when a plugin is used (the plugins themselves run: their services are in sys.modules).
DEFERRED = (
    "numpy",
    "hnswlib",
    "threadpoolctl",
    "pydantic",
    "onnxruntime",
    "tokenizers",
    "node.rag.service",
    "node.rag.index",
    "node.twin.engine",
    "node.twin.prior",
    "node.mcp.service",
    "node.mcp.registry",
    "node.agents.king",
    "node.agents.router",
    "node.agents.toolbridge",
)
RUNNING = ("node.rag.node_service", "node.twin.service", "node.mcp.plugin_service", "node.agents.service")


@contextmanager
def daemon(data: Path, config: str) -> Iterator[tuple[ControlClient, list[str]]]:
    """A real `village run` on ``data`` (initialised on first use), ready (READY=1); yields a control client and a
    list that holds the daemon's imported modules once the block ends (SIGTERM, clean exit)."""
    (data / "config.toml").write_text(BETANET + config)
    notify_path = data.parent / "notify.sock"
    env = {**os.environ, "VILLAGE_DATA_DIR": str(data), "NOTIFY_SOCKET": str(notify_path)}
    if not (data / "identity").exists():
        init = subprocess.run([sys.executable, "-m", "node.cli", "init"], env=env, capture_output=True, check=False)
        assert init.returncode == 0, init.stderr
    notify_path.unlink(missing_ok=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(1.0)  # a wait for READY=1 that notices a daemon that failed to start
    listing = data.parent / "modules.txt"
    listing.unlink(missing_ok=True)
    log = data.parent / "daemon.log"  # a file, not a pipe: a talkative daemon never blocks on a full pipe
    with log.open("w") as err:
        cmd = [sys.executable, "-c", RUN_AND_LIST, str(listing)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    modules: list[str] = []
    try:
        for _ in range(int(WAIT_S)):
            try:
                assert notify.recv(64) == b"READY=1"
                break
            except TimeoutError:
                assert proc.poll() is None, log.read_text()
        else:
            raise AssertionError("the daemon did not report READY=1")
        with ControlClient(data / "control.sock", timeout_s=WAIT_S) as client:
            yield client, modules
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT_S) == 0, log.read_text()
        modules.extend(listing.read_text().split())
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vlazyp-", dir="/tmp"))  # short: Unix socket paths are limited
    data = d / "data"
    data.mkdir(mode=0o700)
    yield data
    subprocess.run(["rm", "-rf", str(d)], check=False)


def _deferred_loaded(modules: list[str]) -> list[str]:
    return [m for m in DEFERRED if _loaded(set(modules), m)]


def test_an_idle_node_with_the_default_plugins_loads_none_of_their_heavy_modules(data_dir: Path) -> None:
    with daemon(data_dir, "") as (_client, modules):
        pass
    assert [m for m in RUNNING if m not in modules] == []  # every default plugin's service ran
    assert _deferred_loaded(modules) == []


def test_status_is_answered_without_loading_them(data_dir: Path) -> None:
    """The knowledge base, MCP and the agents stay unloaded through `status` and `rpc.methods` calls (the twin is
    off here: it learns each control call as an event of the user's, its first use)."""
    with daemon(data_dir, TWIN_OFF) as (client, modules):
        status = client.call("node.status")  # what `village status` calls
        assert status["peer_id"] and status["transports"] == ["betanet"]
        assert "rag.query" in {m["name"] for m in client.call("rpc.methods")}
    assert _deferred_loaded(modules) == []


def test_each_plugin_works_on_first_use_and_a_restart_still_serves_the_knowledge_base(
    data_dir: Path, tmp_path: Path
) -> None:
    doc = tmp_path / "walrus.txt"
    doc.write_text("The walrus-canary colony nests on the northern ice shelf every spring.\n")
    with daemon(data_dir, BM25) as (client, modules):
        added = client.call("rag.add", paths=[str(doc)])
        assert added["added"] == 1, added
        hits = client.call("rag.query", text="walrus-canary colony")
        assert hits["results"][0]["source"] == str(doc), hits
        tools = {t["name"] for t in client.call("mcp.tools", transport="stdio")}
        assert "read_graph" in tools  # the MCP layer loaded on its first call
        assert len(client.call("agents.list")) >= 20
        for _ in range(3):
            client.call("messages.broadcast", text="the walrus colony meets at dawn")
        # Every socket call above but mcp.* was a twin event (rag.add, rag.query, agents.list, 3 broadcasts), the
        # first one loading the engine: none is lost; the query and the messages are the texts learned.
        twin = client.call("twin.status", wait_s=25)
        assert (twin["events"], twin["messages_learned"]) == (6, 4), twin
        assert client.call("twin.suggest", text="the walrus colony meets at ")[0]["token"] == "dawn"
    assert [m for m in ("numpy", "node.rag.service", "node.mcp.service", "node.twin.engine") if m not in modules] == []
    # A restart with the knowledge base on disk: nothing loads at start, the first query serves the document.
    with daemon(data_dir, RAG_BM25 + TWIN_OFF) as (client, modules):
        hits = client.call("rag.query", text="walrus-canary colony")
        assert hits["results"][0]["source"] == str(doc), hits


async def test_a_peers_federated_query_is_a_first_use_after_a_restart(tmp_path: Path) -> None:
    """A node that has not touched its knowledge base since it started answers a peer's federated query from the
    shared documents on disk (the service is built by the query); a malformed query builds nothing."""
    from node.rag import federated
    from node.rag.node_service import RagNodeService
    from node.rag.service import RagService
    from node.rag.settings import RagSection

    settings = RagSection(mode="bm25")
    first = RagService(settings, tmp_path / "rag", wall_s=lambda: 1_700_000_000.0)
    await first.add_text("lab-notes", "Metformin lowers blood glucose through AMPK activation.", shared=True)
    await first.add_text("diary", "Metformin and my private glucose readings.", shared=False)
    await first.aclose()

    handlers: dict[str, Callable[[bytes, bytes], Awaitable[bytes]]] = {}
    node = SimpleNamespace(
        config=SimpleNamespace(data_dir=tmp_path),
        persistent=True,
        clock=SimpleNamespace(wall_ms=lambda: 1_700_000_000_000),
        register_app_handler=handlers.__setitem__,
    )
    svc = RagNodeService(settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(svc.run, node)
        handle = handlers[federated.SERVICE]
        with pytest.raises(Exception, match="malformed"):
            await handle(b"\x01" * 32, b"not json")
        assert not svc.loaded
        body = await handle(b"\x01" * 32, federated.encode_request("metformin", 5))
        answer = federated.decode_answer_untrusted(body, 5)
        assert svc.loaded
        assert [h.source for h in answer] == ["lab-notes"]
        nursery.cancel_scope.cancel()


async def test_the_mcp_layer_failing_to_load_is_a_clear_error_and_the_node_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    from node.mcp import plugin_service
    from node.mcp.errors import McpLoadFailed
    from node.mcp.settings import McpSettings

    real = importlib.import_module

    def broken(name: str, package: str | None = None) -> Any:
        if name == "node.mcp.service":
            raise ImportError("No module named 'pydantic_core._pydantic_core'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", broken)  # what the service loads the layer with
    svc = plugin_service.McpPluginService(McpSettings())
    node: Any = SimpleNamespace(services=[svc], service=lambda name: svc if name == "mcp" else None)
    async with trio.open_nursery() as nursery:
        await nursery.start(svc.run, node)
        assert not svc.ready.is_set()  # nothing loads before a caller asks
        with pytest.raises(McpLoadFailed, match="could not be loaded on this node") as seen:
            await plugin_service.running_service(node)
        assert "pydantic_core" not in str(seen.value)  # why is for the node's log (a gateway client may be asking)
        with pytest.raises(McpLoadFailed):  # every later call says so too, at once
            await plugin_service.running_service(node)
        nursery.cancel_scope.cancel()
    # Served from the start (an HTTP listener): it loads at start, and a failure fails the start, as before.
    eager = plugin_service.McpPluginService(McpSettings(http_listen="127.0.0.1:0"))
    node = SimpleNamespace(services=[eager], service=lambda name: eager if name == "mcp" else None)
    with pytest.raises(BaseExceptionGroup) as failed:
        async with trio.open_nursery() as nursery:
            await nursery.start(eager.run, node)
    assert failed.group_contains(ImportError, match="pydantic_core")


async def test_a_knowledge_base_or_twin_that_cannot_load_says_why_and_the_node_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken install (a module that cannot be imported) is found on first use now, not at start: the caller gets
    a generic NodeError (it may be a gateway client: the ImportError names installed paths), the node's log says
    why, once; never an internal error."""
    from node.rag.errors import RagError
    from node.rag.node_service import RagNodeService
    from node.rag.settings import RagSection
    from node.twin.service import TwinService
    from node.twin.settings import TwinSettings

    monkeypatch.setitem(sys.modules, "node.rag.service", None)  # `import` of it raises ImportError
    monkeypatch.setitem(sys.modules, "node.twin.engine", None)
    node = SimpleNamespace(
        config=SimpleNamespace(data_dir=tmp_path),
        persistent=True,
        clock=SimpleNamespace(wall_ms=lambda: 1_700_000_000_000),
        register_app_handler=lambda _name, _handler: None,
        service=lambda _name: None,
    )
    rag = RagNodeService(RagSection(mode="bm25"))
    twin = TwinService(TwinSettings(neural=False, actions=False), tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(rag.run, node)
        await nursery.start(twin.run, node)
        caplog.set_level(logging.WARNING, logger="village.rag")
        for _ in range(2):
            with pytest.raises(RagError, match="knowledge base could not be loaded on this node") as seen:
                _ = rag.rag
            assert "node.rag" not in str(seen.value)
        said = [r.getMessage() for r in caplog.records if r.name == "village.rag"]
        assert len(said) == 1 and "import of node.rag" in said[0], said
        status = await twin.status()
        assert status["loaded"] is False
        assert "twin's model could not be loaded on this node: import of node.twin.engine" in status["load_error"]
        nursery.cancel_scope.cancel()
