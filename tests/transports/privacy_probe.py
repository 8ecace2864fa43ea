"""Run inside a network namespace made by tests/transports/test_betanet_privacy.py (an interface holding a
public-looking address PUBLIC_IP and a private one LAN_IP, and loopback): real BetaNet hosts, one process.

``python -m tests.transports.privacy_probe tell``: node A (a DHT server) listens on every interface, and a
neighbour connects to it over the LAN; three peers reach A over its public, LAN and loopback address and read, raw,
what A tells them (identify's listen addresses, identify's signed record, the signed record of a DHT answer, and
the DHT answer's addresses for the neighbour). Prints JSON.

``python -m tests.transports.privacy_probe answers``: a hostile DHT server H answers every FIND_NODE with a target
and many peers at addresses of its choosing; V1 reaches H over its public address, V2 over its LAN address; each
looks the target up. Prints JSON: what entered each one's peerstore.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.identity.identify.identify import ID as IDENTIFY_PROTOCOL
from libp2p.identity.identify.identify import parse_identify_response
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.envelope import consume_envelope
from libp2p.peer.id import ID
from libp2p.utils import varint
from libp2p.utils.varint import read_varint_prefixed_bytes_limited
from multiaddr import Multiaddr

from node.identity import Identity
from node.transports.base import Link
from node.transports.betanet.scope import MAX_DHT_ADDRS_PER_PEER, GuardedPeerStore
from node.transports.betanet.settings import BetanetSection
from node.transports.betanet.transport import BetanetTransport

PUBLIC_IP, LAN_IP = "11.231.0.1", "10.231.80.1"
ANNOUNCED = "/dns4/node.example/tcp/4001"
BASE = BetanetSection(listen=("/ip4/127.0.0.1/tcp/0",), mdns=False, dial_timeout_s=5.0, auto_connect="off")
WAIT_S = 20.0
# peers the hostile server names in each answer besides the target: 2k in all, the most an answer may name (dht.py
# MAX_ANSWER_PEERS refuses more unread); the node keeps the k (20) closest to the key it asked for
NAMED_PEERS = 39


async def start(nursery: trio.Nursery, settings: BetanetSection) -> BetanetTransport:
    t = BetanetTransport(Identity.generate(), settings)
    send, _recv = trio.open_memory_channel[Link](64)
    await nursery.start(t.run, send)
    return t


def _at(t: BetanetTransport, ip: str) -> str:
    return next(a for a in t.listen_addresses() if a.startswith(f"/ip4/{ip}/"))


async def _read_all(stream: Any) -> bytes:
    data = b""
    while True:
        try:
            chunk = await stream.read()
        except StreamEOF:
            return data
        if not chunk:
            return data
        data += chunk


def _text(addr: Multiaddr) -> str:
    try:
        return str(addr)
    except Exception:  # noqa: BLE001 - libp2p parses a binary multiaddr lazily: garbage fails here
        return "<garbage>"


def _record_addrs(envelope_bytes: bytes) -> list[str]:
    _envelope, record = consume_envelope(envelope_bytes, "libp2p-peer-record")
    return sorted(str(a).rsplit("/p2p/", 1)[0] for a in record.addrs)  # (records carry /p2p/<id>)


async def what_a_tells(observer: BetanetTransport, a: BetanetTransport, neighbour: ID) -> dict[str, Any]:
    assert observer.host is not None
    a_id = ID.from_base58(a.peer_id)
    stream = await observer.host.new_stream(a_id, [IDENTIFY_PROTOCOL])
    ident = parse_identify_response(await _read_all(stream))
    kad = await observer.host.new_stream(a_id, [KAD_PROTOCOL])
    ask = Message(type=Message.MessageType.FIND_NODE, key=neighbour.to_bytes())
    body = ask.SerializeToString()
    await kad.write(bytes(varint.encode_uvarint(len(body))) + body)
    answer = Message()
    answer.ParseFromString(await read_varint_prefixed_bytes_limited(kad, 1 << 20))
    await kad.close()
    [named] = [p for p in answer.closerPeers if p.id == neighbour.to_bytes()]
    return {
        "identify": sorted(str(Multiaddr(b)) for b in ident.listen_addrs),
        "identify_record": _record_addrs(ident.signedPeerRecord),
        "dht_record": _record_addrs(answer.senderRecord),
        "neighbour": sorted(str(Multiaddr(b)).rsplit("/p2p/", 1)[0] for b in named.addrs),
        "neighbour_record": _record_addrs(named.signedRecord) if named.HasField("signedRecord") else None,
    }


async def tell() -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        listen = ("/ip4/0.0.0.0/tcp/0", "/ip4/127.0.0.1/tcp/0")
        settings = dataclasses.replace(BASE, listen=listen, announce_addrs=(ANNOUNCED,), dht_mode="server")
        a = await start(nursery, settings)
        out: dict[str, Any] = {"all": sorted(a.listen_addresses())}
        # A neighbour on A's LAN (it connects over the LAN address, so it tells A its LAN address too).
        neighbour = await start(nursery, dataclasses.replace(BASE, listen=("/ip4/0.0.0.0/tcp/0",)))
        with trio.fail_after(WAIT_S):
            await neighbour.dial(_at(a, LAN_IP))
            await a.wait_counters(lambda c: c.identified >= 1)
        out["neighbour_all"] = sorted(x.rsplit("/p2p/", 1)[0] for x in neighbour.listen_addresses())
        loopback = next(x for x in a.listen_addresses() if x.startswith("/ip4/127.0.0.1/"))
        for name, addr in (("public", _at(a, PUBLIC_IP)), ("lan", _at(a, LAN_IP)), ("loopback", loopback)):
            observer = await start(nursery, BASE)
            with trio.fail_after(WAIT_S):
                await observer.dial(addr)
                out[name] = await what_a_tells(observer, a, ID.from_base58(neighbour.peer_id))
        nursery.cancel_scope.cancel()
    return out


def hostile_answer(target: ID, named: list[ID]) -> bytes:
    """A FIND_NODE answer naming ``target`` at loopback, LAN, link-local, unspecified, multicast, unsupported and
    public addresses (public ones refuse at once: a closed port of PUBLIC_IP), and each of ``named`` at three
    public ones."""
    answer = Message(type=Message.MessageType.FIND_NODE)
    bad = [
        "/ip4/127.0.0.1/tcp/22",
        f"/ip4/{LAN_IP}/tcp/22",
        "/ip4/169.254.1.1/tcp/22",
        "/ip4/0.0.0.0/tcp/1",
        "/ip4/224.0.0.1/tcp/1",
        f"/ip4/{PUBLIC_IP}/udp/53",
        f"/ip4/{PUBLIC_IP}/tcp/1/ws",
        "/ip6/::1/tcp/22",
        "/dns4/localhost/tcp/22",
    ]
    good = [f"/ip4/{PUBLIC_IP}/tcp/{9 + i}" for i in range(20)] + [f"/ip4/{PUBLIC_IP}/udp/9/quic-v1"]
    peer = answer.closerPeers.add()
    peer.id = target.to_bytes()
    peer.addrs.extend([Multiaddr(a).to_bytes() for a in bad + good] + [b"\xff\x00garbage"])
    for n, other in enumerate(named):
        p = answer.closerPeers.add()
        p.id = other.to_bytes()
        p.addrs.extend(Multiaddr(f"/ip4/{PUBLIC_IP}/tcp/{10000 + n % 50000 + k}").to_bytes() for k in range(3))
    return answer.SerializeToString()


async def answers() -> dict[str, Any]:
    target = ID.from_pubkey(create_new_key_pair().public_key)
    named = [ID.from_pubkey(create_new_key_pair().public_key) for _ in range(NAMED_PEERS)]
    body = hostile_answer(target, named)

    async def hostile(stream: Any) -> None:
        try:
            while True:
                await read_varint_prefixed_bytes_limited(stream, 1 << 20)
                await stream.write(bytes(varint.encode_uvarint(len(body))) + body)
        except Exception:  # noqa: BLE001 - the asker closed the stream
            return

    out: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        h = await start(nursery, dataclasses.replace(BASE, listen=("/ip4/0.0.0.0/tcp/0",)))
        assert h.host is not None
        h.host.set_stream_handler(KAD_PROTOCOL, hostile)  # served (and so in identify) like a DHT server
        for name, ip in (("public", PUBLIC_IP), ("lan", LAN_IP)):
            v = await start(nursery, dataclasses.replace(BASE, dial_timeout_s=3.0))
            assert v.host is not None and v.routing is not None
            with trio.fail_after(WAIT_S):
                await v.dial(_at(h, ip))
                await v.wait_counters(lambda c: c.dht_routing_added >= 1)
                try:
                    found = [_text(a) for a in await v.routing.find(target)]
                except Exception as exc:  # noqa: BLE001 - unchecked answers used to break the lookup itself
                    found = [f"lookup failed: {exc!r}"]
            store = v.host.get_peerstore()
            assert isinstance(store, GuardedPeerStore)
            known = set(store.peer_ids())
            out[name] = {
                "found": sorted(found),
                "target": sorted(_text(a) for a in store.addrs(target)) if target in known else [],
                "named_stored": sum(1 for p in named if p in known),
                "most_addrs_per_named": max((len(store.addrs(p)) for p in named if p in known), default=0),
                "refused": v.counters.peer_addrs_refused,
                "limit": MAX_DHT_ADDRS_PER_PEER,
            }
        nursery.cancel_scope.cancel()
    return out


if __name__ == "__main__":
    result = trio.run({"tell": tell, "answers": answers}[sys.argv[1]])
    print(json.dumps(result))
