"""From outside: a hostile libp2p peer (js-libp2p, not our transport code) dials a real `village run` over TCP
(Noise, yamux), opens /aivillage/mesh/1.0.0 and writes crafted frames; the daemon survives, counts what it
refused, and keeps serving an honest daemon connected to it.

Each case ends with a barrier: a well-formed directed PING, answered with a PONG on the same stream, which the
daemon can only send after it has handled every frame written before it (one stream, in order)."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from node.wire import (
    FragmentPayload,
    MessageType,
    Packet,
    Ping,
    decode_packet_untrusted,
    encode_fragment,
    encode_packet,
    encode_ping,
)
from tests.interop.jspeer import JsPeer, js_peer
from tests.test_multiprocess import WAIT, Daemon, free_port, root  # noqa: F401 - root is a fixture

MESH_LIMIT = 4  # betanet.max_mesh_streams_per_connection for the daemon under attack
WAIT_S = 60.0


def framed(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def packet(ptype: int, payload: bytes, recipient: bytes | None = None, version: int = 1) -> bytes:
    """A BitChat packet from a throwaway sender ID (nobody announced it)."""
    return encode_packet(
        Packet(
            version=version,
            type=ptype,
            ttl=7,
            timestamp_ms=int(time.time() * 1000),
            sender_id=os.urandom(8),
            recipient_id=recipient,
            payload=payload,
        ),
        compress=False,
    )


def nested_fragments(levels: int) -> bytes:
    """One frame: a fragment (total 1) whose chunk is a fragment whose chunk is ... ``levels`` deep."""
    inner = packet(MessageType.MESSAGE, b"x")
    for _ in range(levels):
        frag = FragmentPayload(os.urandom(8), 0, 1, MessageType.FRAGMENT, inner)
        inner = packet(MessageType.FRAGMENT, encode_fragment(frag))
    return inner


@dataclass
class Village:
    target: Daemon
    honest: Daemon
    target_id: str
    honest_id: str
    js: JsPeer

    async def cli(self, d: Daemon, *args: str) -> Any:
        r = await trio.to_thread.run_sync(lambda: d.cli(*args, "--json"))
        return json.loads(r.stdout)

    async def status(self) -> dict[str, Any]:
        data: dict[str, Any] = await self.cli(self.target, "status")
        return data

    async def attach(self) -> tuple[int, int]:
        """The hostile peer dials the daemon and opens one mesh stream: (connection, stream)."""
        addr = next(a for a in (await self.status())["listen_addrs"] if "/tcp/" in a)
        conn = await self.js.call("dial", addr=addr)
        (stream,) = (await self.js.call("open", cid=conn["cid"]))["streams"]
        assert "sid" in stream, stream
        return conn["cid"], stream["sid"]

    async def barrier(self, sid: int) -> None:
        """A directed PING; wait for its PONG (every earlier frame on the stream has been handled)."""
        nonce = os.urandom(8)
        await self.js.call(
            "write",
            sid=sid,
            hex=framed(packet(MessageType.PING, encode_ping(Ping(nonce, 7)), bytes.fromhex(self.target_id))).hex(),
        )
        while True:
            got = await self.js.call("read_frame", sid=sid, timeout_ms=int(WAIT_S * 1000), timeout_s=WAIT_S + 5)
            assert "hex" in got, f"the daemon closed the stream instead of answering: {got}; {self.log_tail()}"
            pkt = decode_packet_untrusted(bytes.fromhex(got["hex"]))
            if pkt.type == MessageType.PONG and pkt.payload.startswith(nonce):
                return

    def log_tail(self) -> str:
        log = self.target.root / f"{self.target.name}.log"
        proc = self.target.proc
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)  # a failure path only: let a dying daemon finish writing its log
        alive = proc is not None and proc.poll() is None
        return f"daemon alive: {alive}; log: " + (log.read_text(errors="replace")[-6000:] if log.exists() else "(none)")

    async def still_serving(self, text: str) -> None:
        assert self.target.proc is not None and self.target.proc.poll() is None, f"the daemon died; {self.log_tail()}"
        sent = await self.cli(self.honest, "send", self.target_id, text, "--wait", WAIT)
        assert sent["state"] == "delivered"
        status = await self.status()
        assert status["counters"]["contained_bugs"] == 0, f"a frame hit a bug (contained): {status['contained']}"


@pytest.fixture
async def village(root: Path) -> AsyncIterator[Village]:  # noqa: F811 - the imported fixture
    port = free_port()
    target = Daemon(
        root,
        "target",
        f"/ip4/127.0.0.1/tcp/{port}, /ip4/127.0.0.1/udp/{port}/quic-v1",
        extra_config=f"max_mesh_streams_per_connection = {MESH_LIMIT}\n",  # continues [betanet]
    )
    honest = Daemon(root, "honest", "/ip4/127.0.0.1/tcp/0", bootstrap=[])
    try:
        await trio.to_thread.run_sync(target.start)
        status = json.loads((await trio.to_thread.run_sync(lambda: target.cli("status", "--json"))).stdout)
        honest.bootstrap = [next(a for a in status["listen_addrs"] if "/tcp/" in a)]
        await trio.to_thread.run_sync(honest.start)
        honest_id = json.loads((await trio.to_thread.run_sync(lambda: honest.cli("status", "--json"))).stdout)
        await trio.to_thread.run_sync(lambda: target.cli("peers", "--wait", honest_id["peer_id"], "--timeout", WAIT))
        async with js_peer(root / "js.log") as js:
            v = Village(target, honest, status["peer_id"], honest_id["peer_id"], js)
            await v.still_serving("before the attack")
            yield v
    finally:
        for d in (honest, target):
            await trio.to_thread.run_sync(d.stop)


async def test_garbage_oversize_frames_and_streams_beyond_the_limit(village: Village) -> None:
    cid, sid = await village.attach()
    before = await village.status()
    # Garbage: random bytes in well-formed length prefixes, and truncated/invalid packets.
    junk = [os.urandom(n) for n in (1, 13, 14, 100, 4096)] + [packet(MessageType.MESSAGE, b"y")[:20], b"\x02" * 40]
    await village.js.call("write", sid=sid, hex=b"".join(framed(j) for j in junk).hex())
    await village.barrier(sid)
    status = await village.status()
    assert status["counters"]["malformed"] >= before["counters"]["malformed"] + 5
    # Streams beyond betanet.max_mesh_streams_per_connection on this connection: reset and counted.
    extra = (await village.js.call("open", cid=cid, n=MESH_LIMIT + 6))["streams"]
    for s in extra[MESH_LIMIT - 1 :]:  # one stream was open already: the first MESH_LIMIT - 1 are links
        if "sid" in s:  # (js-libp2p may report the reset as a failed open instead)
            closed = await village.js.call("wait_closed", sid=s["sid"], timeout_ms=int(WAIT_S * 1000))
            assert closed["closed"], closed
    status = await village.status()
    assert status["transport_counters"]["betanet"]["mesh_streams_refused"] == 7
    # An oversize length prefix ends that link (counted), not the daemon.
    await village.js.call("write", sid=sid, hex=struct.pack(">I", 64 * 1_048_576).hex())
    assert (await village.js.call("wait_closed", sid=sid))["closed"]
    status = await village.status()
    assert status["transport_counters"]["betanet"]["oversize_frames"] == 1
    await village.still_serving("after garbage, oversize frames and too many streams")


async def test_nested_fragments(village: Village) -> None:
    """600 fragments nested in one 21 KB frame (each a whole packet of total 1): once a RecursionError that
    ended the daemon."""
    _, sid = await village.attach()
    frame = nested_fragments(600)
    assert len(frame) < 32_000
    await village.js.call("write", sid=sid, hex=framed(frame).hex())
    await village.barrier(sid)
    await village.still_serving("after nested fragments")


async def test_oversized_directed_ping(village: Village) -> None:
    """A 70 KB directed PING (v2 packet): its PONG echo cannot be encoded as v1; once an EncodeError that ended
    the daemon."""
    _, sid = await village.attach()
    ping = packet(MessageType.PING, os.urandom(70_000), bytes.fromhex(village.target_id), version=2)
    await village.js.call("write", sid=sid, hex=framed(ping).hex())
    await village.barrier(sid)
    await village.still_serving("after a huge ping")
