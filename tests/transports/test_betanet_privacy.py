"""What BetaNet tells strangers, and what strangers can make it store: addresses by scope, the DHT role, DHT
answers' addresses checked and bounded. The scope tests run real hosts in a network namespace this test creates
(an interface with a public-looking and a private address; no traffic leaves the namespace), through
tests/transports/privacy_probe.py; skipped with a reason where `ip netns` cannot be used."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL

from node.errors import ConfigError
from node.transports.betanet.settings import BetanetSection
from node.transports.betanet.transport import DialError
from tests.transports.privacy_probe import ANNOUNCED, LAN_IP, NAMED_PEERS, PUBLIC_IP
from tests.transports.test_betanet import LOOPBACK, WAIT_S, start_transport

ROOT = Path(__file__).resolve().parents[2]


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace with loopback and a veth pair (both ends inside) holding PUBLIC_IP/24 and LAN_IP/24."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2's `ip`")
    ns = f"vlgp{os.getpid()}"
    if _ip("netns", "add", ns).returncode != 0:
        pytest.skip("`ip netns add` is not permitted here")
    try:
        for cmd in (
            ["link", "add", "d0", "type", "veth", "peer", "name", "d1"],  # both ends inside: a closed network
            ["addr", "add", f"{PUBLIC_IP}/24", "dev", "d0"],
            ["addr", "add", f"{LAN_IP}/24", "dev", "d1"],  # (the node reads one IPv4 address per interface)
            ["link", "set", "d0", "up"],
            ["link", "set", "d1", "up"],
            ["link", "set", "lo", "up"],
        ):
            done = _ip("-n", ns, *cmd)
            assert done.returncode == 0, done.stderr
        yield ns
    finally:
        _ip("netns", "del", ns)


def probe(ns: str, what: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.transports.privacy_probe", what],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _scope_of(addr: str) -> str:
    if addr.startswith("/ip4/127."):
        return "loopback"
    if addr.startswith(f"/ip4/{LAN_IP}/"):
        return "lan"
    return "public"


def test_each_peer_is_told_only_the_addresses_of_its_scope(namespace: str) -> None:
    """Node A listens on every interface (a public, a LAN and the loopback address) and announces a DNS name.
    A peer that reached it over the public address is told the public address and the announced one only, in
    identify and in the signed records of identify and of DHT answers; one that came over the LAN is told the LAN
    address too; one on loopback everything. Likewise for a LAN neighbour A's DHT answers name. (Unscoped, every
    peer was told every address.)"""
    told = probe(namespace, "tell")
    every = {a.rsplit("/p2p/", 1)[0] for a in told["all"]}  # type: ignore[attr-defined]
    assert {_scope_of(a) for a in every} == {"public", "lan", "loopback"} and ANNOUNCED in every
    allowed = {"public": {"public"}, "lan": {"public", "lan"}, "loopback": {"public", "lan", "loopback"}}
    for peer, scopes in allowed.items():
        view = told[peer]
        assert isinstance(view, dict)
        expected = sorted(a for a in every if _scope_of(a) in scopes)
        for where in ("identify", "identify_record", "dht_record"):
            assert view[where] == expected, (peer, where, view[where])
    assert not any(_scope_of(a) != "public" for a in told["public"]["identify"])  # type: ignore[index]
    # A's DHT answer names its LAN neighbour: to the public peer at public addresses only, without the neighbour's
    # signed record (which lists its LAN address); to the others at both.
    neighbour = set(told["neighbour_all"])  # type: ignore[call-overload]
    assert {_scope_of(a) for a in neighbour} == {"public", "lan"}
    public = told["public"]
    assert isinstance(public, dict)
    assert public["neighbour"] == sorted(a for a in neighbour if _scope_of(a) == "public")
    assert public["neighbour_record"] is None
    for peer in ("lan", "loopback"):
        view = told[peer]
        assert isinstance(view, dict)
        assert view["neighbour"] == sorted(neighbour) and view["neighbour_record"] == sorted(neighbour), view


def test_dht_answers_cannot_plant_private_or_malformed_addresses(namespace: str) -> None:
    """A hostile DHT server answers a lookup with the target at loopback, LAN, link-local, unspecified, multicast,
    DNS (localhost) and unsupported addresses among public ones, and names NAMED_PEERS other peers (2k in all, the
    most an answer may name). A node that reached it over its public address stores only well-formed public TCP/QUIC
    addresses, at most MAX_DHT_ADDRS_PER_PEER for the target, and not every named peer (the k closest to the key it
    asked for are read; MAX_DHT_PEERS bounds the rest); one that reached it over the
    LAN also takes LAN and link-local ones, never loopback ones or names. (Unchecked, all of them entered the
    peerstore, and the lookup itself broke on a malformed one.)"""
    seen = probe(namespace, "answers")
    for via in ("public", "lan"):
        got = seen[via]
        assert isinstance(got, dict)
        target = got["target"]
        assert target and len(target) <= got["limit"], got
        assert set(target) >= set(got["found"]), got
        for addr in target:
            assert not addr.startswith(("/ip4/127.", "/ip6/::1", "/ip4/0.0.0.0", "/ip4/224.", "/dns")), addr
            assert addr.endswith("/quic-v1") or ("/tcp/" in addr and "/ws" not in addr), addr
            lan = addr.startswith((f"/ip4/{LAN_IP}/", "/ip4/169.254."))
            assert not lan or via == "lan", (via, addr)
        assert 0 < got["named_stored"] < NAMED_PEERS and got["most_addrs_per_named"] <= got["limit"], got
        assert got["refused"] > 0
    assert any(a.startswith(f"/ip4/{LAN_IP}/") for a in seen["lan"]["target"])  # type: ignore[index]
    assert all(a.startswith(f"/ip4/{PUBLIC_IP}/") for a in seen["public"]["target"])  # type: ignore[index]


async def test_a_client_serves_no_dht_and_a_server_answers_with_its_contacts(nursery: trio.Nursery) -> None:
    """By default (dht_mode = "auto", relay = "client") a node refuses the DHT protocol, so nobody can ask it whom
    it is connected to; a server (an anchor) answers, and its answers name the DHT servers it is connected to.
    auto makes a relay (relay = "hop", what others bootstrap to) a server."""
    assert not BetanetSection().dht_server and BetanetSection().relay == "client"
    assert BetanetSection(relay="hop").dht_server and not BetanetSection(relay="hop", dht_mode="client").dht_server
    client, _ = await start_transport(nursery)
    server, _ = await start_transport(nursery, settings=dataclasses.replace(LOOPBACK, dht_mode="server"))
    contact, _ = await start_transport(nursery, settings=dataclasses.replace(LOOPBACK, dht_mode="server"))
    asker, _ = await start_transport(nursery)
    with trio.fail_after(WAIT_S):
        for hub in (client, server):
            await contact.dial(hub.listen_addresses()[0])
        await server.wait_counters(lambda c: c.dht_routing_added >= 1)
        with pytest.raises(DialError, match=r"protocol not supported|failed"):
            await asker.open_stream(client.listen_addresses()[0], TProtocol(str(KAD_PROTOCOL)))
        await asker.dial(server.listen_addresses()[0])
        await asker.wait_counters(lambda c: c.dht_routing_added >= 1)
        assert asker.routing is not None and asker.host is not None and contact.host is not None
        closest = await asker.routing.dht.peer_routing.find_closest_peers_network(asker.host.get_id().to_bytes())
    assert contact.host.get_id() in closest  # what a server tells any connected peer


@pytest.mark.parametrize(
    "bad",
    ["/ip4/0.0.0.0/tcp/4001", "/ip4/1.2.3.4/udp/4001", "/ip4/1.2.3.4/tcp/0", "not an address", "/unix/tmp/x"],
)
def test_a_bad_announce_address_names_the_key(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"^betanet\.announce_addrs: "):
        BetanetSection(announce_addrs=(bad,))
    assert BetanetSection(announce_addrs=("/dns4/node.example/tcp/4001", "/ip6/2001:db8::1/udp/1/quic-v1"))
