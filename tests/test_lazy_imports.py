"""Footprint (issue 17 item 3): a real `village run` with the knowledge base, the twin, the agents (LLM) and MCP
off, and no anchor, never imports their heavy libraries (onnxruntime, hnswlib, numpy, llama_cpp, the anchor's
servers, pydantic through the MCP registry), and with BetaNet on (TCP + QUIC) none of the py-libp2p parts that
node/libp2p_slim.py defers. The daemon writes its ``sys.modules`` when it exits cleanly; ``bench/footprint.py``
measures the RSS."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_libp2p_slim import NEVER_LOADED

WAIT_S = 60.0  # real seconds; a passing start takes a few
CONFIG = (
    '[betanet]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\nmdns = false\n'
    "[rag]\nenabled = false\n[twin]\nenabled = false\n[agents]\nenabled = false\n[mcp]\nenabled = false\n"
)
RUN_AND_LIST = (
    "import atexit, sys\n"
    "atexit.register(lambda: open(sys.argv[1], 'w').write('\\n'.join(sorted(sys.modules))))\n"
    "from node.cli import main\n"
    "sys.exit(main(['run']))\n"
)
HEAVY = (
    "onnxruntime",
    "hnswlib",
    "numpy",
    "llama_cpp",
    "tokenizers",
    "hypercorn",
    "psycopg",
    "redis",
    "anchor.gateway.app",
    "anchor.stores",
    "anchor.mailbox",
    "pydantic",  # the MCP registry, loaded by the first mcp.* or ask call
    "node.mcp.service",
    "node.twin.ask",
)  # anchor.plugin and its settings load (the entry point): the anchor's servers do not


@pytest.fixture
def data_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vlazy-", dir="/tmp"))  # short: Unix socket paths are limited
    data = d / "data"
    data.mkdir(mode=0o700)
    yield data
    subprocess.run(["rm", "-rf", str(d)], check=False)


def _modules_of_a_run(data: Path, config: str) -> set[str]:
    (data / "config.toml").write_text(config)
    env = {**os.environ, "VILLAGE_DATA_DIR": str(data), "NOTIFY_SOCKET": str(data.parent / "notify.sock")}
    init = subprocess.run([sys.executable, "-m", "node.cli", "init"], env=env, capture_output=True, check=False)
    assert init.returncode == 0, init.stderr
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(data.parent / "notify.sock"))
    notify.settimeout(WAIT_S)
    listing = data.parent / "modules.txt"
    cmd = [sys.executable, "-c", RUN_AND_LIST, str(listing)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert notify.recv(64) == b"READY=1"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
    assert proc.returncode == 0, err
    return set(listing.read_text().split())


def _loaded(modules: set[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


def test_a_node_with_rag_llm_and_anchor_off_imports_none_of_their_libraries(data_dir: Path) -> None:
    modules = _modules_of_a_run(data_dir, CONFIG)
    assert "node.node" in modules and "trio" in modules  # it really ran a node
    assert [p for p in HEAVY if _loaded(modules, p)] == []


def test_a_node_serving_mcp_over_http_does_import_pydantic(data_dir: Path) -> None:
    """The check above can see an import: the same run with MCP served over HTTP on loopback (served from the start,
    so the MCP layer loads at start, node/mcp/plugin_service.py) loads pydantic."""
    config = CONFIG.replace("[mcp]\nenabled = false\n", '[mcp]\nhttp_listen = "127.0.0.1:0"\n')
    modules = _modules_of_a_run(data_dir, config)
    assert _loaded(modules, "pydantic") and "node.mcp.service" in modules


def test_a_node_with_betanet_on_loads_none_of_the_libp2p_parts_it_defers(data_dir: Path) -> None:
    """TCP and QUIC listeners, mDNS off: AutoTLS (httpx, requests), WebSocket, UPnP, SECIO, plaintext, py-libp2p's
    own QUIC transport and DNS over HTTPS are never imported (node/libp2p_slim.py); Noise and aioquic are."""
    quic = CONFIG.replace(
        'listen = ["/ip4/127.0.0.1/tcp/0"]', 'listen = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]'
    )
    modules = _modules_of_a_run(data_dir, quic)
    assert "libp2p.security.noise.transport" in modules and "aioquic.quic.connection" in modules  # BetaNet ran
    assert [m for m in NEVER_LOADED if _loaded(modules, m)] == []
