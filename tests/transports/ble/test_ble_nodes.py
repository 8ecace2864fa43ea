"""Real Nodes over Bumble virtual radios: multi-hop private messages over BLE, and a node bridging BLE to another
transport (a memory link standing in for BetaNet) by routing's rules. Real time: Bumble's controllers run on
asyncio's clock in their own thread."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import nacl.signing
import trio

from node.identity import Identity
from node.node import Node
from node.settings import Config, NodeSection
from node.transports.base import Transport
from node.transports.betanet.settings import BetanetSection
from node.transports.betanet.transport import BetanetTransport
from node.transports.ble.bumble_adapter import BumbleAdapter, BumbleWorld, open_bumble_world
from node.transports.ble.core import BleSettings
from node.transports.ble.transport import BleTransport
from node.transports.memory import MemoryNetwork
from tests.transports.ble.harness import bridge_threads

TIMEOUT_S = 60.0
SPACING_M = 3.0  # neighbours hear each other at -69 dBm; two apart (6 m) at -75 dBm
RSSI_GATE_DBM = -72
# A failed connect is retried after 1 s here (10 s by default): on the virtual link a connect can land the
# instant the peripheral pauses advertising to dial itself, and is then given up on after 8 s of silent GATT.
RETRY_S = 1.0


def identity(i: int) -> Identity:
    rng = random.Random(100 + i)
    return Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))


def make_node(tmp_path: Path, i: int, transports: Sequence[Transport], ident: Identity | None = None) -> Node:
    cfg = Config(data_dir=tmp_path / f"n{i}", node=NodeSection(nickname=f"n{i}"))
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    return Node(cfg, ident or identity(i), transports=transports, control=False, rng=random.Random(200 + i))


def ble(world: BumbleWorld, x_m: float) -> BleTransport:
    return BleTransport(
        BumbleAdapter(world, position=(x_m, 0.0)), BleSettings(rssi_min_dbm=RSSI_GATE_DBM, connect_backoff_s=RETRY_S)
    )


@asynccontextmanager
async def running(nodes: Sequence[Node]) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        for n in nodes:
            await nursery.start(n.run)
        yield
        for n in nodes:
            n.request_stop()


def texts(node: Node) -> list[str]:
    assert node.inbox is not None
    return [m.text for m in node.inbox.list(limit=100)]


async def delivered(sender: Node, message_id: str) -> None:
    await sender.wait_until(lambda: sender.outgoing[message_id].state == "delivered")


async def test_private_message_across_three_ble_hops(tmp_path: Path) -> None:
    async with open_bumble_world() as world:
        nodes = [make_node(tmp_path, i, [ble(world, i * SPACING_M)]) for i in range(4)]
        async with running(nodes):
            a, d = nodes[0], nodes[3]
            with trio.fail_after(TIMEOUT_S):
                await a.wait_until(lambda: a.core is not None and a.core.peers.get(d.identity.peer_id) is not None)
                mid = a.send_private(d.identity.peer_id_hex, "three radio hops away")
                await d.wait_until(lambda: "three radio hops away" in texts(d))
                await delivered(a, mid)
            # The RSSI gate kept the line a line: the ends never linked directly.
            for n in (a, d):
                assert all(lk.transport_name == "ble" for lk in n.links.values())
            assert a.core is not None
            route = a.core.paths.route(d.identity.peer_id, trio.current_time())
            assert route is not None and route.hops == 3
            ble_a = a.transports[0]
            assert isinstance(ble_a, BleTransport)
            assert ble_a.counters.below_rssi_gate > 0
    assert bridge_threads() == []


async def test_node_bridges_ble_and_another_transport(tmp_path: Path) -> None:
    """phone (BLE only) — bridge (BLE + memory link standing in for BetaNet) — remote (memory only)."""
    net = MemoryNetwork(seed=3)
    async with open_bumble_world() as world, trio.open_nursery() as nursery:
        await nursery.start(net.run)
        bridge_mem, remote_mem = net.transport("bridge"), net.transport("remote")
        phone = make_node(tmp_path, 0, [ble(world, 0.0)])
        bridge = make_node(tmp_path, 1, [ble(world, SPACING_M), bridge_mem])
        remote = make_node(tmp_path, 2, [remote_mem])
        async with running([phone, bridge, remote]):
            net.connect(bridge_mem, remote_mem)
            with trio.fail_after(TIMEOUT_S):
                await phone.wait_until(
                    lambda: phone.core is not None and phone.core.peers.get(remote.identity.peer_id) is not None
                )
                to_remote = phone.send_private(remote.identity.peer_id_hex, "from the BLE mesh")
                await remote.wait_until(lambda: "from the BLE mesh" in texts(remote))
                await delivered(phone, to_remote)
                to_phone = remote.send_private(phone.identity.peer_id_hex, "from across the internet")
                await phone.wait_until(lambda: "from across the internet" in texts(phone))
                await delivered(remote, to_phone)
                bridge.broadcast("hello both sides")
                await phone.wait_until(lambda: "hello both sides" in texts(phone))
                await remote.wait_until(lambda: "hello both sides" in texts(remote))
            assert {lk.transport_name for lk in bridge.links.values()} == {"ble", "memory"}
            assert {lk.transport_name for lk in phone.links.values()} == {"ble"}
        nursery.cancel_scope.cancel()


async def test_phone_on_ble_reaches_a_node_across_betanet(tmp_path: Path) -> None:
    """phone (BLE only) — bridge (BLE + BetaNet on loopback TCP, Noise) — remote (BetaNet only)."""
    loopback = BetanetSection(listen=("/ip4/127.0.0.1/tcp/0",), mdns=False, dial_timeout_s=5.0)
    async with open_bumble_world() as world:
        bridge_id, remote_id = identity(1), identity(2)
        remote_net = BetanetTransport(remote_id, loopback)
        phone = make_node(tmp_path, 0, [ble(world, 0.0)])
        bridge = make_node(tmp_path, 1, [ble(world, SPACING_M), BetanetTransport(bridge_id, loopback)], bridge_id)
        remote = make_node(tmp_path, 2, [remote_net], remote_id)
        async with running([phone, bridge, remote]):
            with trio.fail_after(TIMEOUT_S):
                await bridge.connect(remote_net.listen_addresses()[0])
                await phone.wait_until(
                    lambda: phone.core is not None and phone.core.peers.get(remote.identity.peer_id) is not None
                )
                to_remote = phone.send_private(remote.identity.peer_id_hex, "phone to the internet")
                await remote.wait_until(lambda: "phone to the internet" in texts(remote))
                await delivered(phone, to_remote)
                to_phone = remote.send_private(phone.identity.peer_id_hex, "internet to the phone")
                await phone.wait_until(lambda: "internet to the phone" in texts(phone))
                await delivered(remote, to_phone)
            assert {lk.transport_name for lk in bridge.links.values()} == {"ble", "betanet"}
