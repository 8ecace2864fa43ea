"""A scripted BitChat peer, written from ``BITCHAT.md`` alone, that talks to our node over a Bumble radio.

It shares nothing with ``node/wire`` or ``node/crypto``: packets are packed and parsed here with ``struct``
(§1), announces are TLVs (§2.1), fragments are cut and joined here (§2.3), signatures use pynacl directly over
the preimage of §1.4, and Noise XX plus transport encryption come from the independent ``noiseprotocol``
package with BitChat's explicit u32 nonce (§3). Only the radio (our Bumble adapter, which moves raw bytes) is
shared, so a mismatch between this file and the node shows up as a failed test, not as agreement with itself.

Like a phone, the peer is a GATT central: it connects to the node's advertised BitChat service, writes one
frame per write-without-response and parses the node's notifications.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
import zlib
from dataclasses import dataclass, field

import nacl.signing
import trio
from noise.connection import Keypair, NoiseConnection

from node.transports.ble.base import Connected, ConnectFailed, DataReceived, DeviceDiscovered, RadioEvent
from node.transports.ble.bumble_adapter import BumbleAdapter, BumbleWorld

# §2 message types
ANNOUNCE, MESSAGE, LEAVE, HANDSHAKE, ENCRYPTED, FRAGMENT = 0x01, 0x02, 0x03, 0x10, 0x11, 0x20
# §2.4 Noise payload types
PRIVATE_MESSAGE, READ_RECEIPT, DELIVERED = 0x01, 0x02, 0x03
F_RECIPIENT, F_SIGNATURE, F_COMPRESSED, F_ROUTE = 0x01, 0x02, 0x04, 0x08
XX = b"Noise_XX_25519_ChaChaPoly_SHA256"
GATT_VALUE_MAX = 512  # one write carries at most one attribute value


def pkcs7_pad(frame: bytes) -> bytes:
    for block in (256, 512, 1024, 2048):
        if len(frame) + 16 <= block:
            k = block - len(frame)
            return frame + bytes([k]) * k if 1 <= k <= 255 else frame
    return frame


def pack(
    ptype: int,
    sender: bytes,
    payload: bytes,
    *,
    ttl: int = 7,
    ts_ms: int,
    recipient: bytes | None = None,
    signature: bytes | None = None,
) -> bytes:
    """A v1 frame (§1.1), uncompressed."""
    flags = (F_RECIPIENT if recipient else 0) | (F_SIGNATURE if signature else 0)
    head = struct.pack(">BBBQBH", 1, ptype, ttl, ts_ms, flags, len(payload))
    return head + sender + (recipient or b"") + payload + (signature or b"")


@dataclass
class Parsed:
    version: int
    type: int
    ttl: int
    ts_ms: int
    flags: int
    sender: bytes
    recipient: bytes | None
    payload: bytes  # inflated
    signature: bytes | None
    signed_part: bytes  # frame bytes up to the end of the payload (for the §1.4 verifier preimage)


def parse(frame: bytes) -> Parsed:
    """§1.1/§1.5 decode; raises ValueError on anything it cannot read."""
    version = frame[0]
    if version == 1:
        ptype, ttl, ts, flags, plen = struct.unpack_from(">BBQBH", frame, 1)
        off = 14
    elif version == 2:
        ptype, ttl, ts, flags, plen = struct.unpack_from(">BBQBI", frame, 1)
        off = 16
    else:
        raise ValueError(f"version {version}")
    sender = frame[off : off + 8]
    off += 8
    recipient = None
    if flags & F_RECIPIENT:
        recipient = frame[off : off + 8]
        off += 8
    if version == 2 and flags & F_ROUTE:
        off += 1 + 8 * frame[off]
    body = frame[off : off + plen]
    if len(body) != plen:
        raise ValueError("short payload")
    off += plen
    signed_part = frame[:off]
    if flags & F_COMPRESSED:
        width = 2 if version == 1 else 4
        original = int.from_bytes(body[:width], "big")
        body = zlib.decompressobj(-15).decompress(body[width:])
        if len(body) != original:
            raise ValueError("bad originalSize")
    signature = frame[off : off + 64] if flags & F_SIGNATURE else None
    return Parsed(version, ptype, ttl, ts, flags, sender, recipient, body, signature, signed_part)


def verifier_preimage(p: Parsed) -> bytes:
    """§1.4 from received bytes: up to the payload end, TTL 0, flags without signature/RSR, padded."""
    b = bytearray(p.signed_part)
    b[2] = 0
    b[11] &= ~0x12 & 0xFF
    return pkcs7_pad(bytes(b))


def sign_frame(signing: nacl.signing.SigningKey, ptype: int, sender: bytes, payload: bytes, ts_ms: int) -> bytes:
    """§1.4: Ed25519 over the TTL-0, unsigned, padded encoding; then the frame with TTL 7 and the signature."""
    preimage = pkcs7_pad(pack(ptype, sender, payload, ttl=0, ts_ms=ts_ms))
    return pack(ptype, sender, payload, ts_ms=ts_ms, signature=signing.sign(preimage).signature)


def announce_tlvs(nickname: str, noise_public: bytes, signing_public: bytes, extra: bytes = b"") -> bytes:
    """§2.1 TLVs 01 nickname, 02 Noise key, 03 signing key (then any optional ones, in order)."""
    nick = nickname.encode()
    return bytes([1, len(nick)]) + nick + bytes([2, 32]) + noise_public + bytes([3, 32]) + signing_public + extra


def tlvs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = 0
    while i + 2 <= len(data):
        t, n = data[i], data[i + 1]
        out[t] = data[i + 2 : i + 2 + n]
        i += 2 + n
    return out


@dataclass
class ScriptedBitChatPeer:
    world: BumbleWorld
    nickname: str = "phone"
    static_private: bytes = field(default_factory=lambda: os.urandom(32))
    signing: nacl.signing.SigningKey = field(default_factory=nacl.signing.SigningKey.generate)

    def __post_init__(self) -> None:
        probe = NoiseConnection.from_name(XX)
        probe.set_keypair_from_private_bytes(Keypair.STATIC, self.static_private)
        self.static_public: bytes = probe.noise_protocol.keypairs["s"].public_bytes
        self.peer_id = hashlib.sha256(self.static_public).digest()[:8]
        self.adapter = BumbleAdapter(self.world, name="scripted-bitchat-peer")
        self.conn_id = ""
        self.link_limit = 0
        self.frames_sent = 0
        self.fragments_received = 0
        self._frames_send, self.frames = trio.open_memory_channel[bytes](1024)
        self._fragments: dict[tuple[bytes, bytes], dict[int, bytes]] = {}
        self.noise: NoiseConnection | None = None
        self.node_id = b""
        self.connected = trio.Event()

    # --- radio ----------------------------------------------------------------------------------------------

    async def adapter_first(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the radio (reported once it is up), then scan and connect, as a phone would, as central, to
        the first BitChat service heard; ``connected`` is set when the link is ready. Then pump frames."""
        events_send, events = trio.open_memory_channel[RadioEvent](1024)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.adapter.run, events_send)
            task_status.started()
            await self.adapter.start_scanning()
            dialled = False
            async for ev in events:
                if isinstance(ev, DeviceDiscovered) and not dialled:
                    dialled = True
                    await self.adapter.stop_scanning()
                    nursery.start_soon(self.adapter.connect, ev.address)
                elif isinstance(ev, ConnectFailed):  # e.g. the node's advertising paused that instant: retry
                    dialled = False
                    await self.adapter.start_scanning()
                elif isinstance(ev, Connected):
                    self.conn_id = ev.conn_id
                    self.link_limit = min(ev.att_mtu - 3, GATT_VALUE_MAX)
                    self.connected.set()
                elif isinstance(ev, DataReceived) and ev.conn_id == self.conn_id:
                    self._on_bytes(ev.data)

    def _on_bytes(self, frame: bytes) -> None:
        # Our node sends one whole frame per notification, so no stream reassembly is needed here.
        p = parse(frame)
        if p.type == FRAGMENT:
            fid, index, total, _otype = struct.unpack_from(">8sHHB", p.payload)
            parts = self._fragments.setdefault((p.sender, fid), {})
            parts[index] = p.payload[13:]
            self.fragments_received += 1
            if len(parts) == total:
                del self._fragments[(p.sender, fid)]
                self._frames_send.send_nowait(b"".join(parts[i] for i in range(total)))
            return
        self._frames_send.send_nowait(frame)

    async def send_frame(self, frame: bytes) -> None:
        """One write per frame; frames over the link limit go out as §2.3 fragments (v1, directed or not)."""
        if len(frame) <= self.link_limit:
            await self.adapter.send(self.conn_id, frame)
            self.frames_sent += 1
            return
        p = parse(frame)
        overhead = 14 + 8 + (8 if p.recipient else 0) + 13
        chunk = self.link_limit - overhead
        pieces = [frame[i : i + chunk] for i in range(0, len(frame), chunk)]
        fid = os.urandom(8)
        for i, piece in enumerate(pieces):
            payload = struct.pack(">8sHHB", fid, i, len(pieces), p.type) + piece
            await self.adapter.send(
                self.conn_id, pack(FRAGMENT, self.peer_id, payload, ttl=p.ttl, ts_ms=p.ts_ms, recipient=p.recipient)
            )
            self.frames_sent += 1

    async def next_of(self, ptype: int, *, sender: bytes | None = None) -> Parsed:
        """The next frame of ``ptype`` (from ``sender``); others are skipped."""
        while True:
            p = parse(await self.frames.receive())
            if p.type == ptype and (sender is None or p.sender == sender):
                return p

    # --- BitChat --------------------------------------------------------------------------------------------

    @staticmethod
    def now_ms() -> int:
        # A phone's wall clock (the node checks ±120 s); independent of the node's clock module on purpose.
        return time.time_ns() // 1_000_000

    def signed(self, ptype: int, payload: bytes, ts_ms: int) -> bytes:
        return sign_frame(self.signing, ptype, self.peer_id, payload, ts_ms)

    def announce(self) -> bytes:
        payload = announce_tlvs(self.nickname, self.static_public, bytes(self.signing.verify_key))
        return self.signed(ANNOUNCE, payload, self.now_ms())

    def public_message(self, text: str) -> bytes:
        return self.signed(MESSAGE, text.encode(), self.now_ms())

    def leave(self) -> bytes:
        return self.signed(LEAVE, b"", self.now_ms())

    @staticmethod
    def check_announce(p: Parsed) -> dict[int, bytes]:
        """§2.1 acceptance: ID from the Noise key, signature by the announced signing key."""
        fields = tlvs(p.payload)
        assert p.sender == hashlib.sha256(fields[2]).digest()[:8], "sender ID is not SHA-256(noise key)[0:8]"
        assert p.signature is not None
        nacl.signing.VerifyKey(fields[3]).verify(verifier_preimage(p), p.signature)
        return fields

    async def handshake(self, node_id: bytes) -> None:
        """XX as initiator (§3): 32-byte → e; ← 96 bytes; → 64 bytes; 0x10 frames padded on air."""
        self.node_id = node_id
        noise = NoiseConnection.from_name(XX)
        noise.set_as_initiator()
        noise.set_keypair_from_private_bytes(Keypair.STATIC, self.static_private)
        noise.start_handshake()
        msg1 = bytes(noise.write_message())
        assert len(msg1) == 32
        await self.send_frame(pkcs7_pad(pack(HANDSHAKE, self.peer_id, msg1, ts_ms=self.now_ms(), recipient=node_id)))
        reply = await self.next_of(HANDSHAKE, sender=node_id)
        assert len(reply.payload) == 96 and reply.recipient == self.peer_id
        noise.read_message(reply.payload)
        # §3: the remote static (learnt from message 2) must hash to the node's peer ID.
        remote = noise.noise_protocol.handshake_state.rs.public_bytes
        assert hashlib.sha256(remote).digest()[:8] == node_id
        msg3 = bytes(noise.write_message())
        assert len(msg3) == 64 and noise.handshake_finished
        await self.send_frame(pkcs7_pad(pack(HANDSHAKE, self.peer_id, msg3, ts_ms=self.now_ms(), recipient=node_id)))
        self.noise = noise

    async def answer_handshake(self, node_id: bytes) -> None:
        """XX as responder: ← 32 bytes; → 96 bytes (e, ee, s, es); ← 64 bytes (s, se)."""
        self.node_id = node_id
        noise = NoiseConnection.from_name(XX)
        noise.set_as_responder()
        noise.set_keypair_from_private_bytes(Keypair.STATIC, self.static_private)
        noise.start_handshake()
        first = await self.next_of(HANDSHAKE, sender=node_id)
        assert len(first.payload) == 32 and first.recipient == self.peer_id
        noise.read_message(first.payload)
        msg2 = bytes(noise.write_message())
        assert len(msg2) == 96
        await self.send_frame(pkcs7_pad(pack(HANDSHAKE, self.peer_id, msg2, ts_ms=self.now_ms(), recipient=node_id)))
        third = await self.next_of(HANDSHAKE, sender=node_id)
        assert len(third.payload) == 64
        noise.read_message(third.payload)
        assert noise.handshake_finished
        self.noise = noise

    async def send_encrypted(self, ptype: int, data: bytes) -> None:
        """§2.4/§3: plaintext [type][data] → nonce u32 BE ‖ ciphertext ‖ tag, in a padded 0x11 to the node."""
        assert self.noise is not None
        nonce = self.noise.noise_protocol.cipher_state_encrypt.n
        ct = self.noise.encrypt(bytes([ptype]) + data)
        frame = pack(
            ENCRYPTED, self.peer_id, struct.pack(">I", nonce) + ct, ts_ms=self.now_ms(), recipient=self.node_id
        )
        await self.send_frame(pkcs7_pad(frame))

    async def receive_encrypted(self) -> tuple[int, bytes]:
        assert self.noise is not None
        p = await self.next_of(ENCRYPTED, sender=self.node_id)
        assert p.recipient == self.peer_id
        (nonce,) = struct.unpack_from(">I", p.payload)
        self.noise.noise_protocol.cipher_state_decrypt.n = nonce  # explicit nonce, little-endian in the AEAD
        plain = bytes(self.noise.decrypt(p.payload[4:]))
        return plain[0], plain[1:]

    @staticmethod
    def private_message(message_id: str, content: str) -> bytes:
        mid, text = message_id.encode(), content.encode()
        return bytes([0, len(mid)]) + mid + bytes([1, len(text)]) + text
