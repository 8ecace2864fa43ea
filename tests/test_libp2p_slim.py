"""node/libp2p_slim.py (issue 17 item 3): py-libp2p loaded in part, in a fresh interpreter each time (the test
process has loaded libp2p already). Real BetaNet links over QUIC (TLS 1.3 with the peer-ID certificate) and TCP
(Noise) still authenticate the remote and carry frames, while AutoTLS, WebSocket, mDNS, UPnP, SECIO, plaintext and
DNS-over-HTTPS stay unloaded; a deferred name still works when used; `from libp2p import new_host` still works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 120.0  # real seconds for a child interpreter; a passing run takes a few

LINKS = """
import sys
import trio
from node.identity import Identity
from node.transports.betanet.settings import BetanetSection
from node.transports.betanet.transport import BetanetTransport
from node.transports.base import Link

BOTH = BetanetSection(listen=("/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0"), mdns=False, dial_timeout_s=10.0)

async def start(nursery, ident, settings=BOTH):
    t = BetanetTransport(ident, settings)
    send, recv = trio.open_memory_channel[Link](16)
    await nursery.start(t.run, send)
    return t, recv

async def main():
    b_id = Identity.generate()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            b, b_links = await start(nursery, b_id)
            for kind in ("/quic-v1/", "/tcp/"):  # one dialler each: a second dial would reuse the connection
                a_id = Identity.generate()
                a, _ = await start(nursery, a_id)
                address = next(x for x in b.listen_addresses() if kind in x)
                out = await a.dial(address)
                inbound = await b_links.receive()
                assert kind in out.remote_address, (kind, out.remote_address)
                assert out.authenticated_signing_key == b_id.signing_public  # QUIC: TLS peer-ID cert; TCP: Noise
                assert inbound.authenticated_signing_key == a_id.signing_public
                await out.send(b"ping " + kind.encode())
                assert await inbound.receive() == b"ping " + kind.encode()
                await inbound.send(b"pong")
                assert await out.receive() == b"pong"
                await out.aclose()
                print("link", kind, "ok")
            nursery.cancel_scope.cancel()

trio.run(main)
import node.libp2p_slim as slim
print("loaded", " ".join(sorted(sys.modules)))
print("real", " ".join(sorted(slim._real)))
"""

DEFERRED = """
import sys
import node.transports.betanet  # installs the finder
from libp2p.discovery.mdns.mdns import MDNSDiscovery, create_mdns_discovery
from libp2p.security.tls.autotls.acme import compute_b36_peer_id
assert "zeroconf" not in sys.modules and "httpx" not in sys.modules
print("stand-in", repr(create_mdns_discovery))
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
peer = ID.from_pubkey(create_new_key_pair().public_key)
b36 = compute_b36_peer_id(peer)  # the first use imports the real module (httpx, requests) and calls it
assert isinstance(b36, str) and b36, b36
assert "httpx" in sys.modules and "requests" in sys.modules
assert MDNSDiscovery.__name__ == "MDNSDiscovery" and "zeroconf" in sys.modules
assert not isinstance(object(), MDNSDiscovery)
import libp2p.security.tls.autotls.acme as acme
assert acme.compute_b36_peer_id(peer) == b36  # the module now answers with its real names
import logging
logging.getLogger("libp2p").propagate = True  # what the daemon's log handler does (node/logs.py)
from libp2p import create_yamux_muxer_option, new_host  # the deferred body of libp2p/__init__.py runs here
assert callable(new_host) and create_yamux_muxer_option()
assert logging.getLogger("libp2p").propagate, "the deferred body re-ran setup_logging"
import libp2p
assert libp2p.__version__
print("ok")
"""

# What a BetaNet node never needs: libraries of options it does not use, and transports it does not offer.
NEVER_LOADED = (
    "httpx",  # AutoTLS ACME client
    "requests",  # AutoTLS broker
    "httpx2",  # dnspython's DNS over HTTPS
    "zeroconf",  # mDNS (betanet.mdns = false here)
    "miniupnpc",  # UPnP
    "trio_websocket",  # WebSocket transport
    "libp2p.transport.websocket",
    "libp2p.security.secio",
    "libp2p.security.insecure",  # plaintext
    "libp2p.peer.persistent",
)


def _run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert r.returncode == 0, r.stderr[-4000:]
    return r.stdout


def _loaded(modules: set[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


def test_quic_and_tcp_links_work_with_the_slim_import_and_load_none_of_the_deferred_modules() -> None:
    out = _run(LINKS)
    assert "link /quic-v1/ ok" in out and "link /tcp/ ok" in out
    lines = {line.split(" ", 1)[0]: line.split(" ")[1:] for line in out.splitlines()}
    modules = set(lines["loaded"])
    assert "aioquic.quic.connection" in modules and "libp2p.security.noise.transport" in modules  # really used
    assert [m for m in NEVER_LOADED if _loaded(modules, m)] == []
    assert lines["real"] == [""] or lines["real"] == []  # no deferred module was needed


def test_a_deferred_name_loads_its_module_when_used_and_libp2p_top_level_names_still_work() -> None:
    out = _run(DEFERRED)
    assert "stand-in <deferred libp2p.discovery.mdns.mdns.create_mdns_discovery>" in out
    assert out.rstrip().endswith("ok")
