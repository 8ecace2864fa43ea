"""What a peer's words can make a BetaNet node store and show, bounded (review findings on priv8): a peer's own
addresses are capped however many it sends, a third party's record is capped too, the places of DHT-named peers are
reclaimed and shared between answerers, and a task serving an inbound stream keeps its asker's audience."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
from collections.abc import Iterator

import multiaddr
import pytest
import trio
import trio.testing
from libp2p.abc import INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.identity.identify.identify import AGENT_VERSION, PROTOCOL_VERSION
from libp2p.identity.identify.identify import ID as IDENTIFY
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.envelope import Envelope, seal_record
from libp2p.peer.id import ID
from libp2p.peer.peer_record import PeerRecord
from libp2p.peer.peerdata import PeerData
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import PeerStoreError, create_signed_peer_record
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.utils import varint

from node.transports.betanet import scope
from node.transports.betanet.scope import (
    LAN,
    MAX_DHT_ADDRS_PER_PEER,
    MAX_DHT_PEERS,
    MAX_DHT_PEERS_PER_ANSWERER,
    MAX_OWN_ADDRS,
    PUBLIC,
    Audience,
    GuardedPeerStore,
    current_scope,
    dialable,
)
from tests.transports.test_betanet import LOOPBACK, WAIT_S, start_transport


def _public(n: int, base: int = 0) -> list[multiaddr.Multiaddr]:
    ips = (f"8.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(base, base + n))
    return [multiaddr.Multiaddr(f"/ip4/{ip}/tcp/4001") for ip in ips]


def _peer() -> tuple[ID, object]:
    pair = create_new_key_pair()
    return ID.from_pubkey(pair.public_key), pair.private_key


@contextlib.contextmanager
def _words_of(speaker: ID, scope_: int = PUBLIC) -> Iterator[None]:
    """Within: what is stored is ``speaker``'s words, as in the task serving its inbound stream."""
    token = scope._audience.set(Audience(scope_, speaker, None, inbound=True))
    try:
        yield
    finally:
        scope._audience.reset(token)


def _name(store: GuardedPeerStore, answerer: ID, n: int) -> list[ID]:
    """``answerer``'s DHT answer names ``n`` new peers (as py-libp2p stores them: add_addrs, TTL 3600)."""
    named = [_peer()[0] for _ in range(n)]
    with _words_of(answerer):
        for i, peer in enumerate(named):
            store.add_addrs(peer, _public(1, i), 3600)
    return named


async def test_a_huge_identify_is_capped_not_stored_whole(nursery: trio.Nursery) -> None:
    """A peer answers our identify with N listen addresses and a signed record of N addresses (py-libp2p's
    PeerData.add_addrs is quadratic: 12k addresses stalled the event loop 18.8 s). At most MAX_OWN_ADDRS are
    stored, the record is refused, and the refusals are counted. (Unchecked: all N stored, the record kept.)"""
    n = 400
    victim, _ = await start_transport(nursery)
    attacker, _ = await start_transport(nursery)
    ah = attacker.host
    assert ah is not None and victim.host is not None
    addrs = _public(n)
    envelope = create_signed_peer_record(ah.get_id(), addrs, ah.get_private_key()).marshal_envelope()

    async def evil_identify(stream: INetStream) -> None:
        msg = Identify(
            protocol_version=PROTOCOL_VERSION,
            agent_version=AGENT_VERSION,
            public_key=ah.get_public_key().serialize(),
            listen_addrs=[a.to_bytes() for a in addrs],
            protocols=[str(IDENTIFY)],
            signedPeerRecord=envelope,
        )
        body = msg.SerializeToString()
        await stream.write(bytes(varint.encode_uvarint(len(body))) + body)
        await stream.close()

    ah.set_stream_handler(IDENTIFY, evil_identify)
    with trio.fail_after(WAIT_S):
        await attacker.dial(victim.listen_addresses()[0])
        await victim.wait_counters(lambda c: c.peer_addrs_refused >= 2 * n - MAX_OWN_ADDRS)
    store = victim.host.get_peerstore()
    assert 0 < len(store.addrs(ah.get_id())) <= MAX_OWN_ADDRS
    assert store.get_peer_record(ah.get_id()) is None


def test_a_third_partys_record_is_capped_and_not_kept() -> None:
    """A DHT answer carries another peer's signed record of 20 public addresses: it is not kept (a DHT server
    would pass it on whole), and at most MAX_DHT_ADDRS_PER_PEER of its addresses are. (Unchecked: kept whole.)"""
    store = GuardedPeerStore()
    answerer = _peer()[0]
    named, key = _peer()
    record = create_signed_peer_record(named, _public(20), key)  # type: ignore[arg-type]
    with _words_of(answerer):
        assert store.consume_peer_record(record, 7200)  # accepted (a lookup goes on), not kept
    assert store.get_peer_record(named) is None
    assert 0 < len(store.addrs(named)) <= MAX_DHT_ADDRS_PER_PEER
    own, own_key = _peer()  # a peer's own record of MAX_OWN_ADDRS addresses is kept
    with _words_of(own):
        assert store.consume_peer_record(create_signed_peer_record(own, _public(MAX_OWN_ADDRS), own_key), 7200)  # type: ignore[arg-type]
    assert isinstance(store.get_peer_record(own), Envelope) and len(store.addrs(own)) == MAX_OWN_ADDRS


def test_named_peer_places_are_shared_between_answerers_and_reclaimed() -> None:
    """One answerer holds at most MAX_DHT_PEERS_PER_ANSWERER places: at its quota it gives up its own oldest (it
    goes on naming new peers: a node with one anchor keeps finding peers through it); when the MAX_DHT_PEERS
    places are full an expired named peer's place is reclaimed first, else the oldest of the answerer holding most
    is evicted, so a later answerer's peer still gets in. (Unchecked: the first 256 named held every place for
    the daemon's life; a refusal at the quota: one anchor's 65th named peer was never stored.)"""
    store = GuardedPeerStore()
    answerers = [_peer()[0] for _ in range(MAX_DHT_PEERS // MAX_DHT_PEERS_PER_ANSWERER + 1)]
    flood = _name(store, answerers[0], MAX_DHT_PEERS_PER_ANSWERER + 10)  # one answer naming more than its quota
    assert all(p in store.peer_ids() for p in flood[:MAX_DHT_PEERS_PER_ANSWERER])  # its first (the one looked up)
    assert not any(p in store.peer_ids() for p in flood[MAX_DHT_PEERS_PER_ANSWERER:])  # the rest refused
    for p in flood[:MAX_DHT_PEERS_PER_ANSWERER]:
        store._named_at[p] -= scope.DHT_PLACE_RENEW_S  # a later lookup through the same answerer
    first = flood[:MAX_DHT_PEERS_PER_ANSWERER] + _name(store, answerers[0], 10)
    assert all(p in store.peer_ids() for p in first[10:])  # the newest: its quota
    assert not any(p in store.peer_ids() for p in first[:10])  # its own oldest made room
    assert store.dht_named() == MAX_DHT_PEERS_PER_ANSWERER
    stale = first[20]
    store.peer_data_map[stale].last_identified -= 7200  # its TTL (3600 s) ran out
    (renewed,) = _name(store, answerers[0], 1)
    assert renewed in store.peer_ids() and stale not in store.peer_ids() and first[10] in store.peer_ids()
    others = [_name(store, answerer, MAX_DHT_PEERS_PER_ANSWERER) for answerer in answerers[1:-1]]
    assert store.dht_named() == MAX_DHT_PEERS
    expired = first[15]
    store.peer_data_map[expired].last_identified -= 7200
    (late,) = _name(store, answerers[-1], 1)
    assert late in store.peer_ids() and expired not in store.peer_ids()  # the expired place was reclaimed
    assert first[10] in store.peer_ids()
    (later,) = _name(store, answerers[-1], 1)
    assert later in store.peer_ids() and store.dht_named() == MAX_DHT_PEERS
    assert others[0][0] not in store.peer_ids()  # none expired: the oldest of a biggest answerer made room
    assert first[10] in store.peer_ids() and others[0][1] in store.peer_ids()


async def test_a_stream_opened_while_serving_an_asker_keeps_the_askers_audience(nursery: trio.Nursery) -> None:
    """A DHT server adding a public asker to a full bucket pings the bucket's oldest peer (here on loopback) from
    the task serving the asker: what it then sends the asker is still for a public audience (no loopback
    address). (Unpinned: the ping's stream made the task's audience loopback, and the answer's signed record
    and closer peers followed.)"""
    server, _ = await start_transport(nursery, settings=dataclasses.replace(LOOPBACK, dht_mode="server"))
    oldest, _ = await start_transport(nursery)
    assert server.host is not None and oldest.host is not None and server.routing is not None
    with trio.fail_after(WAIT_S):
        await oldest.dial(server.listen_addresses()[0])
        asker = _peer()[0]
        with _words_of(asker):
            assert server.host.get_addrs() == []  # a public asker is shown no loopback address
            bucket = server.routing.dht.routing_table.buckets[0]
            assert await bucket._ping_peer(oldest.host.get_id())  # what add_peer does with a full bucket
            assert current_scope() == PUBLIC
            assert server.host.get_addrs() == []
            # A nested stream whose answers name addresses (identify) makes its peer the speaker, judged by the
            # more public scope of the two, and what the task shows stays public.
            stream = await server.host.new_stream(oldest.host.get_id(), [IDENTIFY])
            await stream.reset()
            speaker = scope._audience.get()
            assert speaker is not None and speaker.peer == oldest.host.get_id() and speaker.scope == PUBLIC
            assert server.host.get_addrs() == []


def test_relay_answers_are_checked_like_dht_answers() -> None:
    """A relay's reservation / CONNECT answer carries a signed record (its own, or the destination's), read on
    our hop stream to it: a relay reached over a public address cannot plant a loopback or DNS address. (The hop
    protocol unguarded: the record was stored whole, and `village connect` / the auto-connector dialled it.)"""
    store = GuardedPeerStore()
    relay = _peer()[0]
    dest, key = _peer()
    planted = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4001"), multiaddr.Multiaddr("/dns4/localhost/tcp/4001")]
    record = create_signed_peer_record(dest, [*planted, *_public(1)], key)  # type: ignore[arg-type]
    token = scope._audience.set(Audience(PUBLIC, relay, str(HOP_PROTOCOL), inbound=False))  # as new_stream sets it
    try:
        store.consume_peer_record(record, 7200)
    finally:
        scope._audience.reset(token)
    assert store.addrs(dest) == _public(1) and store.get_peer_record(dest) is None


def test_mdns_announcements_are_lan_words_and_bounded() -> None:
    """py-libp2p's mDNS listener stores what a LAN host announces from zeroconf's thread (no audience): only LAN
    or public addresses are kept, never loopback ones or names, and at most MAX_DHT_PEERS_PER_ANSWERER announced
    peers; a withdrawn one frees its place. (Unchecked: any LAN host planted loopback addresses and
    up to 1000 fake peers; a withdrawal kept the place, so after 64 LAN peers no new one was stored.)"""
    store = GuardedPeerStore()
    target = _peer()[0]
    fakes = [_peer()[0] for _ in range(MAX_DHT_PEERS_PER_ANSWERER + 20)]
    lan = multiaddr.Multiaddr("/ip4/192.168.1.7/tcp/4001")
    planted = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4001"), multiaddr.Multiaddr("/dns4/localhost/tcp/4001")]

    def announce() -> None:  # what MDNSListener.add_service does, on its own thread
        store.add_addrs(target, [*planted, lan], 120)
        for fake in fakes:
            store.add_addrs(fake, [lan], 120)

    worker = threading.Thread(target=announce)
    worker.start()
    worker.join(WAIT_S)
    assert store.addrs(target) == [lan]
    assert sum(1 for p in fakes if p in store.peer_ids()) == MAX_DHT_PEERS_PER_ANSWERER - 1
    known, kept = _peer()[0], _public(1)
    store.add_addrs(known, kept, 0)  # a peer we reached ourselves

    def withdraw() -> None:
        store.clear_addrs(known)
        store.clear_addrs(target)

    worker = threading.Thread(target=withdraw)
    worker.start()  # a LAN host withdraws services naming both (MDNSListener.remove_service)
    worker.join(WAIT_S)
    assert store.addrs(known) == kept and target not in store.peer_ids()  # withdrawn: gone with its place
    assert store.dht_named() == MAX_DHT_PEERS_PER_ANSWERER - 1  # the withdrawn peer's place is free ...
    newcomer = _peer()[0]
    worker = threading.Thread(target=lambda: store.add_addrs(newcomer, [lan], 120))
    worker.start()
    worker.join(WAIT_S)
    assert store.addrs(newcomer) == [lan]  # ... for the next LAN peer announced

    def churn() -> None:  # a LAN host updating each fake once (py-libp2p: clear_addrs, then add_addrs again)
        for _ in range(3 * MAX_DHT_PEERS_PER_ANSWERER):
            fake = _peer()[0]
            store.add_addrs(fake, [lan], 120)
            store.clear_addrs(fake)
            store.add_addrs(fake, [lan], 120)

    worker = threading.Thread(target=churn)
    worker.start()
    worker.join(WAIT_S)
    with_addrs = [p for p in store.peer_ids() if p not in (known,) and store.addrs(p)]
    assert len(with_addrs) <= MAX_DHT_PEERS_PER_ANSWERER  # an update takes a place again: still bounded


async def test_mdns_does_not_dial_a_loopback_address_a_lan_host_announces(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A discovery naming only a loopback address (or a name) is not dialled: a LAN host must not make the node
    connect to a service on this machine. (Unfiltered: the node dialled it.) The dial itself is recorded, not
    made: no test traffic leaves loopback."""
    node, _ = await start_transport(nursery)
    dialled: list[str] = []

    async def record_dial(addr: str, key: str) -> None:
        dialled.append(addr)
        node._discovered_dialling.discard(key)

    monkeypatch.setattr(node, "_dial_discovered", record_dial)
    stranger = _peer()[0]
    node._on_discovered(PeerInfo(stranger, [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4001")]))
    node._on_discovered(PeerInfo(stranger, [multiaddr.Multiaddr("/dns4/localhost/tcp/4001")]))
    node._on_discovered(PeerInfo(stranger, [multiaddr.Multiaddr("/ip4/192.0.2.7/tcp/4001")]))
    await trio.testing.wait_all_tasks_blocked()
    assert dialled == [f"/ip4/192.0.2.7/tcp/4001/p2p/{stranger}"] and node.counters.mdns_discovered == 1


async def test_a_relay_answers_lookups_by_default(nursery: trio.Nursery) -> None:
    """An anchor runs relay = "hop" and others bootstrap to it: with the default dht_mode (auto) it serves the
    DHT, so its relayed clients are found by peer ID through it (`village connect /p2p/<id>`) with no extra
    setting. (dht_mode defaulting to client: the relay refused the DHT protocol and lookups through it found
    nobody.)"""
    relay, _ = await start_transport(nursery, settings=dataclasses.replace(LOOPBACK, relay="hop"))
    asker, _ = await start_transport(nursery)
    assert relay.routing is not None and asker.routing is not None and relay.host is not None
    with trio.fail_after(WAIT_S):
        await asker.dial(relay.listen_addresses()[0])
        await asker.wait_counters(lambda c: c.dht_routing_added >= 1)  # the relay serves the DHT: in the table
    assert relay.host.get_id() in asker.routing.dht.routing_table.get_peer_ids()


def test_a_third_partys_record_does_not_replace_what_a_peer_said_itself() -> None:
    """A LAN neighbour told us its LAN address in its own record; a stranger's DHT answer then carries a newer
    record of the neighbour with only a public address. The neighbour's own record and LAN address stay. (Before:
    the newer record replaced them, and the node could no longer reach its neighbour over the LAN.)"""
    store = GuardedPeerStore()
    neighbour, key = _peer()
    lan = multiaddr.Multiaddr("/ip4/192.168.1.7/tcp/4001")
    own = seal_record(PeerRecord(neighbour, [lan], seq=1), key)  # type: ignore[arg-type]
    with _words_of(neighbour, LAN):
        assert store.consume_peer_record(own, 7200)
    newer = seal_record(PeerRecord(neighbour, _public(1), seq=2), key)  # type: ignore[arg-type]
    with _words_of(_peer()[0]):
        store.consume_peer_record(newer, 7200)
    assert lan in store.addrs(neighbour)
    kept = store.get_peer_record(neighbour)
    assert kept is not None and kept.record().seq == 1


@pytest.mark.parametrize(
    "addr",
    [
        "/ip6/::127.0.0.1/tcp/4001",  # IPv4-compatible: loopback
        "/ip6/64:ff9b::7f00:1/tcp/4001",  # NAT64 of loopback
        "/ip6/2002:7f00:1::1/tcp/4001",  # 6to4 of loopback
        "/ip6/64:ff9b::c0a8:107/tcp/4001",  # NAT64 of a LAN address
        "/ip4/255.255.255.255/tcp/4001",  # broadcast (refused from a LAN peer too, below)
        "/ip4/8.8.8.8/tcp/0",  # port 0
        "/ip4/8.8.8.8/udp/0/quic-v1",
    ],
)
def test_disguised_private_or_useless_addresses_are_refused_from_a_public_peer(addr: str) -> None:
    """An IPv6 address that carries a loopback or LAN IPv4 address is as private as it; the broadcast address
    and port 0 are nobody's. (Before: all were stored as public.)"""
    assert not dialable(multiaddr.Multiaddr(addr), PUBLIC)
    assert not dialable(multiaddr.Multiaddr(addr), LAN) or "64:ff9b::c0a8" in addr  # a LAN peer's LAN address
    assert dialable(multiaddr.Multiaddr("/ip6/64:ff9b::808:808/tcp/4001"), PUBLIC)  # NAT64 of a public address


async def test_loopback_peers_count_as_lan_when_loopback_is_not_local(nursery: trio.Nursery) -> None:
    """With betanet.loopback_is_local = false (a local forwarder brings strangers in over loopback) a peer on
    loopback is shown no loopback address in identify, and may not name one. (Before: no such setting; a
    stranger through ssh -R or tor was told and could plant everything.)"""
    guarded, _ = await start_transport(nursery, settings=dataclasses.replace(LOOPBACK, loopback_is_local=False))
    trusting, _ = await start_transport(nursery)
    assert guarded.host is not None and trusting.host is not None
    with trio.fail_after(WAIT_S):
        await trusting.dial(guarded.listen_addresses()[0])
        stream = await trusting.host.new_stream(guarded.host.get_id(), [IDENTIFY])
        raw = b""
        with contextlib.suppress(StreamEOF):  # the answer ends at the stream's end
            while chunk := await stream.read():
                raw += chunk
        await guarded.wait_counters(lambda c: c.peer_addrs_refused > 0)  # it refused the loopback ones we named
    length, used = varint.decode_varint_with_size(raw)
    shown = Identify.FromString(raw[used : used + length])
    assert list(shown.listen_addrs) == []  # shown no loopback address: a "LAN" peer
    assert trusting.counters.peer_addrs_refused == 0  # (the trusting node stores loopback words from loopback)


def test_the_mdns_thread_and_the_event_loop_do_not_race_on_the_named_places() -> None:
    """py-libp2p's mDNS listener stores from zeroconf's thread while the event loop stores DHT answers: both change
    the named places (and py-libp2p's maps) one at a time. (Unlocked: 'dictionary changed size during iteration'
    on either thread within a few hundred adds.) Bounded: 3,000 adds on the event loop's side."""
    store = GuardedPeerStore()
    lan = multiaddr.Multiaddr("/ip4/192.168.1.5/tcp/4001")
    stop = threading.Event()
    errors: list[BaseException] = []
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: the race shows within a few hundred adds

    def mdns() -> None:
        while not stop.is_set():
            try:
                store.add_addrs(_peer()[0], [lan], 0)  # (TTL 0 never expires: its 64 places fill, then refusals)
            except Exception as exc:  # noqa: BLE001 - what the test looks for
                errors.append(exc)
                return

    worker = threading.Thread(target=mdns)
    worker.start()
    try:
        answerers = [_peer()[0] for _ in range(8)]
        for i in range(3000):
            if errors:
                break
            with _words_of(answerers[i % 8]):
                store.add_addrs(_peer()[0], _public(1, i % 200), 0)
    finally:
        stop.set()
        worker.join(WAIT_S)
        sys.setswitchinterval(old_interval)
    assert not errors, errors
    assert store.dht_named() <= MAX_DHT_PEERS


def test_our_own_key_pair_is_never_evicted_from_a_full_peerstore() -> None:
    """Peers speaking for themselves (identify: no per-answerer quota) fill the peerstore past py-libp2p's
    1000-peer limit; its eviction (empty entries first, then the oldest) never takes our own key pair's entry, and
    the store still ends at its limit. (Unguarded: our entry, with no address, was the first evicted, and identify
    and DHT signing failed on it.)"""
    store = GuardedPeerStore()
    pair = create_new_key_pair()
    us = ID.from_pubkey(pair.public_key)
    store.add_key_pair(us, pair)  # what the transport does first
    for i in range(store.max_peers + 50):
        peer = _peer()[0]
        with _words_of(peer):  # its own identify, over a public connection
            store.add_addrs(peer, _public(1, i), 7200)
    assert len(store.peer_ids()) == store.max_peers and us in store.peer_ids()
    assert store.privkey(us) == pair.private_key and store.pubkey(us) == pair.public_key
    store.peer_data_map[next(p for p in store.peer_ids() if p != us)].last_identified -= 7200 * 2  # one expired
    store.peer_data_map[us].set_ttl(3600)  # as if a peer's words had given our entry addresses with a TTL
    store.peer_data_map[us].last_identified -= 7200
    store._cleanup_expired_records()  # py-libp2p's periodic cleanup drops expired entries
    assert len(store.peer_ids()) == store.max_peers - 1 and store.privkey(us) == pair.private_key


def test_our_own_entry_stays_while_zeroconfs_thread_evicts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full peerstore: an mDNS announcement, stored from zeroconf's thread, runs py-libp2p's eviction in that
    thread; paused inside it (as a thread switch may), the event loop still reads our key pair, our signed record
    and our place among the peer IDs, and what it writes to our entry (protocols) stays. (Set aside during the
    eviction: privkey raised 'peer ID not found', and the protocols written meanwhile were lost.)"""
    store = GuardedPeerStore()
    pair = create_new_key_pair()
    us = ID.from_pubkey(pair.public_key)
    store.add_key_pair(us, pair)
    assert store.consume_peer_record(create_signed_peer_record(us, _public(1), pair.private_key), 7200)
    for i in range(store.max_peers):
        peer = _peer()[0]
        with _words_of(peer):
            store.add_addrs(peer, _public(1, i % 200), 7200)
    inside, resume = threading.Event(), threading.Event()
    plain_is_expired = PeerData.is_expired

    def is_expired(data: PeerData) -> bool:  # read by the eviction's ordering, in the thread that evicts
        if threading.current_thread() is announcer and not inside.is_set():
            inside.set()
            resume.wait(WAIT_S)
        return plain_is_expired(data)

    monkeypatch.setattr(PeerData, "is_expired", is_expired)
    lan = [multiaddr.Multiaddr("/ip4/192.168.1.5/tcp/4001")]
    announcer = threading.Thread(target=lambda: store.add_addrs(_peer()[0], lan, 0))  # py-libp2p's mDNS listener
    announcer.start()
    try:
        assert inside.wait(WAIT_S)
        seen: list[object] = []
        for read in (store.privkey, store.pubkey, store.get_peer_record):
            try:
                seen.append(read(us))
            except PeerStoreError as exc:
                seen.append(exc)
        seen.append(us in store.peer_ids())
        store.add_protocols(us, ["/village/test/1"])  # the event loop writes to our entry meanwhile
    finally:
        resume.set()
        announcer.join(WAIT_S)
    assert seen[:2] == [pair.private_key, pair.public_key] and seen[2] is not None and seen[3] is True
    assert store.privkey(us) == pair.private_key and "/village/test/1" in store.get_protocols(us)
    assert len(store.peer_ids()) == store.max_peers
