"""Circuit relay v2 (py-libp2p's) over real loopback TCP: a client reserves a slot on its bootstrap relay and
advertises a circuit address; a peer dials it through the relay; the relayed link is Noise-secured end to
end, so plaintext offered over the relayed connection is refused. (Three processes that can only reach the
relay: tests/test_relay_netns.py.)"""

from __future__ import annotations

import dataclasses

import multiaddr
import pytest
import trio
from libp2p.abc import INetStream
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.identity.identify_push.identify_push import ID_PUSH
from libp2p.peer.peerinfo import PeerInfo
from libp2p.protocol_muxer.exceptions import MultiselectClientError
from libp2p.protocol_muxer.multiselect_client import MultiselectClient
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID
from libp2p.security.secure_session import SecureSession
from libp2p.utils import varint

from node.errors import ConfigError
from node.transports.base import Link
from node.transports.betanet.relay import is_circuit
from node.transports.betanet.scope import (
    CONNECTION_CLOSE_BOUND_S,
    IDENTIFY_PUSH_CONCURRENCY,
    IDENTIFY_PUSH_CUT_GRACE_S,
)
from node.transports.betanet.transport import BetanetTransport, DialError
from tests.transports.test_betanet import LOOPBACK, WAIT_S, start_transport

HOP = dataclasses.replace(LOOPBACK, relay="hop")
PUSH_TIMEOUT_S = 4.0  # betanet.dial_timeout_s of the reserving client: how long a stalled push holds its pusher
RESERVE_PROMPT_S = 2.0  # a loopback bootstrap dial + reservation takes ms; well under PUSH_TIMEOUT_S


async def relay_and_client(
    nursery: trio.Nursery,
) -> tuple[BetanetTransport, BetanetTransport, trio.MemoryReceiveChannel[Link], str]:
    """A hop relay R and a client E that bootstraps to R; returns (R, E, E's links, E's circuit address)."""
    relay, _ = await start_transport(nursery, settings=HOP)
    client, client_links = await start_transport(
        nursery, settings=dataclasses.replace(LOOPBACK, bootstrap=(relay.listen_addresses()[0],))
    )
    with trio.fail_after(WAIT_S):
        await client.wait_counters(lambda c: c.relay_reservations == 1 and c.links_opened == 1)
    circuit = f"{relay.listen_addresses()[0]}/p2p-circuit/p2p/{client.peer_id}"
    return relay, client, client_links, circuit


async def test_client_reserves_advertises_and_is_reached_through_the_relay(nursery: trio.Nursery) -> None:
    relay, client, client_links, circuit = await relay_and_client(nursery)
    assert circuit in client.listen_addresses()  # advertised (status, identify, the DHT)
    assert relay.counters.relay_reservations == 0  # a hop reserves nothing itself
    dialler, _ = await start_transport(nursery)
    with trio.fail_after(WAIT_S):
        started = trio.current_time()
        link = await dialler.dial(circuit)
        inbound = await client_links.receive()
        while dialler.peer_id not in inbound.remote_address:
            inbound = await client_links.receive()  # the client's link to the relay came first
        await link.send(b"through the relay")
        assert await inbound.receive() == b"through the relay"
        elapsed = trio.current_time() - started
        await inbound.send(b"and back")
        assert await link.receive() == b"and back"
    relay_id = relay.peer_id
    assert link.remote_address == f"/p2p/{relay_id}/p2p-circuit/p2p/{client.peer_id}"
    assert inbound.remote_address == f"/p2p/{relay_id}/p2p-circuit/p2p/{dialler.peer_id}"
    # Noise bound each end's libp2p key through the relay: the mesh identity binding holds on relayed links.
    assert link.authenticated_signing_key == client._identity.signing_public
    assert inbound.authenticated_signing_key == dialler._identity.signing_public
    assert dialler.counters.relay_dials == 1
    # Both ends of the relayed connection are Noise sessions (the relay forwards ciphertext).
    assert dialler.host is not None and client.host is not None
    [conn] = dialler.host.get_network().get_connections(client.host.get_id())
    assert isinstance(conn.muxed_conn.secured_conn, SecureSession)  # type: ignore[attr-defined]
    print(f"relayed dial + mesh stream + first frame: {elapsed * 1000:.0f} ms")


async def test_the_relay_drops_and_the_advert_goes(nursery: trio.Nursery) -> None:
    """When the link to the relay is lost its circuit address is withdrawn; the bootstrap redial reserves
    again and it comes back."""
    relay, client, _, circuit = await relay_and_client(nursery)
    assert client.host is not None and relay.host is not None
    with trio.fail_after(WAIT_S):
        await client.host.get_network().close_peer(relay.host.get_id())
        await client.wait_counters(lambda _: circuit not in client.listen_addresses())
        await client.wait_counters(lambda c: c.relay_reservations == 2)
    assert circuit in client.listen_addresses()


async def test_stalling_peers_do_not_hold_the_reservation_nor_the_push_to_others(nursery: trio.Nursery) -> None:
    """A client holds connections to IDENTIFY_PUSH_CONCURRENCY peers (connected first: pushed first) that accept
    every stream and never answer, and to one that reads; it then reserves slots on three relays in a row (the
    bootstrap path). Each bootstrap dial returns without waiting on the identify push; the reading peer is
    pushed our circuit addresses; each stalled push is cut at betanet.dial_timeout_s and counted; the three
    reservations push in two rounds (the first, then one for the two made while it ran), not three.
    (Unfixed: the reservation waited dial_timeout_s, its outer deadline cut every push uncounted, the reader was
    never pushed.)"""
    client, _ = await start_transport(nursery, settings=dataclasses.replace(LOOPBACK, dial_timeout_s=PUSH_TIMEOUT_S))
    stallers = [(await start_transport(nursery))[0] for _ in range(IDENTIFY_PUSH_CONCURRENCY)]
    reader, _ = await start_transport(nursery)
    relays = [(await start_transport(nursery, settings=HOP))[0] for _ in range(3)]
    assert client.relay is not None and client.host is not None and reader.host is not None
    with trio.fail_after(WAIT_S):
        for peer in [*stallers, reader]:
            await peer.dial(client.listen_addresses()[0])
        await client.wait_counters(lambda c: c.identified >= len(stallers) + 1)
    assert client.host.get_connected_peers()[: len(stallers)] == [s.host.get_id() for s in stallers if s.host]

    stalled = 0  # streams the stallers were opened (each holds a pusher until betanet.dial_timeout_s)

    async def never_read(stream: INetStream) -> None:
        nonlocal stalled
        stalled += 1
        await trio.sleep_forever()  # holds the stream open, never answers multistream-select

    for staller in stallers:
        assert staller.host is not None
        staller.host.get_network().set_stream_handler(never_read)
    pushes = trio.Semaphore(0, max_value=10)  # one release per push the reader takes

    async def take_push(stream: INetStream) -> None:
        pushes.release()
        await stream.close()

    reader.host.set_stream_handler(ID_PUSH, take_push)
    for relay in relays:
        with trio.fail_after(RESERVE_PROMPT_S):
            await client._dial(relay.listen_addresses()[0], reserve=True)  # what bootstrap runs
    assert client.counters.relay_reservations == len(relays)
    with trio.fail_after(WAIT_S):
        await pushes.acquire()  # the first round reaches the reader once the stalled pushes are cut
        assert stalled == len(stallers)  # no other round ran beside it
        await pushes.acquire()  # the second round, asked for by the reservations made while the first ran
        await client.wait_counters(lambda c: c.identify_push_timeouts >= 2 * len(stallers))
    assert client.counters.identify_push_timeouts == stalled == 2 * len(stallers)


async def test_plaintext_is_refused_over_the_relayed_connection(nursery: trio.Nursery) -> None:
    """A dialler that reaches the relay (over Noise) and gets a relayed stream to the client, then offers
    plaintext for the relayed connection, is refused by the client: it secures relayed connections with
    Noise only, as direct ones."""
    relay, client, client_links, circuit = await relay_and_client(nursery)
    first = await client_links.receive()  # the client's own link to the relay
    dialler, _ = await start_transport(nursery)
    assert dialler.relay is not None and relay.host is not None and client.host is not None
    with trio.fail_after(WAIT_S):
        await dialler.dial(relay.listen_addresses()[0])
        raw = await dialler.relay._circuits.dial_peer_info(  # the relayed byte stream, before any upgrade
            PeerInfo(client.host.get_id(), [multiaddr.Multiaddr(circuit)]),
            relay_info=PeerInfo(relay.host.get_id(), []),
        )
        with pytest.raises(MultiselectClientError):
            await MultiselectClient().select_one_of([PLAINTEXT_PROTOCOL_ID], MultiselectCommunicator(raw))
    assert client.counters.links_opened == 1 and first.remote_address.endswith(relay.peer_id)
    with pytest.raises(trio.WouldBlock):
        client_links.receive_nowait()
    assert not client.host.get_network().get_connections(dialler.host.get_id())  # type: ignore[union-attr]


async def test_relay_off_is_a_clear_error(nursery: trio.Nursery) -> None:
    relay, _ = await start_transport(nursery, settings=HOP)
    circuit = f"{relay.listen_addresses()[0]}/p2p-circuit/p2p/{relay.peer_id}"
    off, _ = await start_transport(nursery, settings=dataclasses.replace(LOOPBACK, relay="off"))
    with pytest.raises(DialError, match=r"betanet\.relay is off"):
        await off.dial(circuit)
    with pytest.raises(ConfigError, match=r"betanet\.bootstrap: .* relayed address but betanet\.relay is off"):
        dataclasses.replace(LOOPBACK, relay="off", bootstrap=(circuit,))


async def pushed_addrs(stream: INetStream) -> list[str]:
    """The listen addresses of the identify push on ``stream`` (varint length, then the Identify message)."""
    msg = Identify()
    msg.ParseFromString(await varint.read_varint_prefixed_bytes(stream))
    return [str(multiaddr.Multiaddr(a)) for a in msg.listen_addrs]


async def test_a_lost_relay_is_pushed(nursery: trio.Nursery) -> None:
    """When a relay slot is lost, connected peers are pushed our addresses without its circuit address (as they
    were pushed it when it was reserved). (Unfixed: release() pushed nothing; peers kept a dead address.)"""
    relay, _ = await start_transport(nursery, settings=HOP)
    client, _ = await start_transport(nursery)
    reader, _ = await start_transport(nursery)
    assert client.relay is not None and reader.host is not None and relay.host is not None
    pushes: trio.MemorySendChannel[list[str]]
    pushes, pushed = trio.open_memory_channel[list[str]](8)

    async def take_push(stream: INetStream) -> None:
        await pushes.send(await pushed_addrs(stream))
        await stream.close()

    reader.host.set_stream_handler(ID_PUSH, take_push)
    with trio.fail_after(WAIT_S):
        await reader.dial(client.listen_addresses()[0])
        await client.wait_counters(lambda c: c.identified >= 1)
        await client._dial(relay.listen_addresses()[0], reserve=True)
        while not any("/p2p-circuit" in a for a in await pushed.receive()):
            pass  # the reservation's round tells the reader the circuit address
        client.relay.release(relay.host.get_id())
        while any("/p2p-circuit" in a for a in await pushed.receive()):
            pass  # a push read before the release
    assert not any(is_circuit(a) for a in client.relay.circuit_addrs())


STUCK_TIMEOUT_S = 1.0  # betanet.dial_timeout_s of the client whose push gets stuck in its cut
# A push stuck in its cut ends within its timeout, the grace, and the close; plus loopback work on a loaded machine.
STUCK_BOUND_S = STUCK_TIMEOUT_S + IDENTIFY_PUSH_CUT_GRACE_S + CONNECTION_CLOSE_BOUND_S + 2.0


def make_unwritable(client: BetanetTransport, staller: BetanetTransport) -> tuple[trio.Event, trio.Event]:
    """From when ``staller`` has seen a stream of ours (it never answers it), every write of ours on the connection
    to it blocks, as ``send_all`` does to a peer advertising a zero TCP window (our kernel send buffer full), until
    the connection is closed locally; then it returns, as py-libp2p's TCP write does on a locally closed socket.
    Returns (stalled, closed): setting ``closed`` frees the writes (the tests' rescue, so an unfixed run fails
    instead of hanging)."""
    assert client.host is not None and staller.host is not None
    (conn,) = client.host.get_network().get_connections(staller.host.get_id())
    secured = conn.muxed_conn.secured_conn  # type: ignore[attr-defined]
    write, close = secured.write, secured.close
    stalled, closed = trio.Event(), trio.Event()

    async def blocked_write(data: bytes) -> None:
        if stalled.is_set():
            await closed.wait()
            return
        await write(data)

    async def closing() -> None:
        closed.set()
        await close()

    async def never_read(stream: INetStream) -> None:
        stalled.set()
        await trio.sleep_forever()

    staller.host.get_network().set_stream_handler(never_read)
    secured.write, secured.close = blocked_write, closing
    return stalled, closed


async def test_a_push_stuck_in_its_cut_does_not_hold_the_round(nursery: trio.Nursery) -> None:
    """A push cut at its timeout whose stream reset (py-libp2p resets it in a shielded scope) cannot be written, the
    peer having stopped reading, ends a grace later: that peer's connection is closed and counted, the round ends,
    and the next reservation's push reaches a reading peer. (Unfixed: the round never ended, the relay's push stayed
    'running' forever, and no peer was told any later circuit address.)"""
    client, _ = await start_transport(nursery, settings=dataclasses.replace(LOOPBACK, dial_timeout_s=STUCK_TIMEOUT_S))
    staller, _ = await start_transport(nursery)
    reader, _ = await start_transport(nursery)
    relays = [(await start_transport(nursery, settings=HOP))[0] for _ in range(2)]
    assert client.host is not None and reader.host is not None and staller.host is not None
    with trio.fail_after(WAIT_S):
        for peer in (staller, reader):
            await peer.dial(client.listen_addresses()[0])
        await client.wait_counters(lambda c: c.identified >= 2)
    stalled, closed = make_unwritable(client, staller)
    pushes: trio.MemorySendChannel[list[str]]
    pushes, pushed = trio.open_memory_channel[list[str]](8)

    async def take_push(stream: INetStream) -> None:
        await pushes.send(await pushed_addrs(stream))
        await stream.close()

    reader.host.set_stream_handler(ID_PUSH, take_push)
    try:
        with trio.fail_after(WAIT_S):
            await client._dial(relays[0].listen_addresses()[0], reserve=True)
            await stalled.wait()
        started = trio.current_time()  # the push to the staller started a moment ago
        with trio.fail_after(STUCK_BOUND_S):
            await client.wait_counters(lambda c: c.identify_push_timeouts == 1 and c.identify_push_closes == 1)
        print(f"stuck push ended {trio.current_time() - started:.2f} s after the staller saw it")
        with trio.fail_after(WAIT_S):
            await client._dial(relays[1].listen_addresses()[0], reserve=True)
            while not any(relays[1].peer_id in a for a in await pushed.receive()):
                pass  # rounds before the second reservation
    finally:
        closed.set()  # frees an unfixed run's stuck write: the test fails instead of hanging
    assert not client.host.get_network().get_connections(staller.host.get_id())
    assert client.counters.identify_push_closes == 1


async def test_shutdown_does_not_wait_on_a_push_stuck_in_its_cut(nursery: trio.Nursery) -> None:
    """The transport stops within a bound while a push is stuck in its shielded stream reset. (Unfixed: the relay's
    nursery waited on it forever: shutdown hung.)"""
    staller, _ = await start_transport(nursery)
    relay, _ = await start_transport(nursery, settings=HOP)
    rescued = False
    stopped = trio.Event()

    async def rescue(closed: trio.Event) -> None:
        nonlocal rescued
        with trio.move_on_after(STUCK_BOUND_S):
            await stopped.wait()
            return
        rescued = True
        closed.set()  # the stuck write ends: an unfixed run fails below instead of hanging

    async with trio.open_nursery() as own:
        client, _ = await start_transport(own, settings=dataclasses.replace(LOOPBACK, dial_timeout_s=STUCK_TIMEOUT_S))
        with trio.fail_after(WAIT_S):
            await staller.dial(client.listen_addresses()[0])
            await client.wait_counters(lambda c: c.identified >= 1)
        stalled, closed = make_unwritable(client, staller)
        with trio.fail_after(WAIT_S):
            await client._dial(relay.listen_addresses()[0], reserve=True)  # starts a push round
            await stalled.wait()
        nursery.start_soon(rescue, closed)
        started = trio.current_time()
        own.cancel_scope.cancel()  # stop the client
    stopped.set()
    elapsed = trio.current_time() - started
    print(f"stopped {elapsed:.2f} s after the cancel")
    assert not rescued and elapsed < STUCK_BOUND_S
