"""Hostile frames against one node, from identities that cost nothing (issue 13).

:class:`Forger` builds the frames an attacker within radio range (or on a BetaNet stream) can send a node: floods of
announces from fresh identities, signed and unsigned; announces that steal an honest peer's Noise key; fragments
within fragments; partial fragment sets; courier envelopes with absurd copy counts; pings with huge payloads;
Noise handshake message 1 floods from throwaway senders and forged in an honest peer's name; ciphertext from
nobody; signed leaves for replay; oversized public messages; random bytes. Everything random comes from the
``rng`` passed in, so a seed reproduces an attack.

Used by the stateful adversary (``tests/routing/test_adversary.py``), the simulator's hostile node kinds
(:mod:`node.sim.engine` ``hostile``) and ``bench/hostile.py``. Building a frame never raises for any argument a
caller passes within the documented ranges; what the target does with it is the point of the exercise.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from collections import OrderedDict
from dataclasses import dataclass

import nacl.signing

from node.identity import Identity
from node.wire import (
    Announce,
    FragmentPayload,
    MessageType,
    Packet,
    encode_announce,
    encode_fragment,
    encode_packet,
    sign_packet,
)
from node.wire.packet import FLAG_HAS_SIGNATURE, pad

PUBLIC_TEMPLATES = 16  # public-message (and nested-fragment) frames kept built, by text size (depth)
NESTED_SENDER = bytes.fromhex("a5c3e1f00f1e3c5a")  # placeholders in nested-fragment templates (replaced; no other
NESTED_TS = 0x5A5AC3C3E1E1F0F0  # 8 bytes of such a frame match them)
IDENTITY_CACHE = 4096  # identities kept built (an Ed25519 + X25519 key pair costs ~0.1 ms to derive)
NOISE_MSG1_BYTES = 32  # XX message 1: a bare ephemeral key


@dataclass
class Forger:
    """Frames addressed to ``target`` (a peer ID), stamped with ``wall_ms`` (the target's wall clock in ms)."""

    target: bytes
    rng: random.Random
    seed: int = 0

    def __post_init__(self) -> None:
        self._idents: OrderedDict[int, Identity] = OrderedDict()
        self._publics: OrderedDict[int, bytes] = OrderedDict()  # text size -> unsigned frame with zero time/sender
        self._nested: OrderedDict[int, bytes] = OrderedDict()  # depth -> frame with the placeholders below

    # ---------------------------------------------------------------- identities
    def identity(self, i: int) -> Identity:
        """Throwaway identity number ``i`` (deterministic in (seed, i))."""
        ident = self._idents.get(i)
        if ident is None:
            d = hashlib.sha256(b"hostile %d %d" % (self.seed, i)).digest()
            ident = Identity(nacl.signing.SigningKey(d), hashlib.sha256(d).digest())
            self._idents[i] = ident
            if len(self._idents) > IDENTITY_CACHE:
                self._idents.popitem(last=False)
        else:
            self._idents.move_to_end(i)
        return ident

    def random_id(self) -> bytes:
        return self.rng.randbytes(8)

    # ---------------------------------------------------------------- announces
    def announce(
        self,
        ident: Identity,
        ts_ms: int,
        *,
        ttl: int = 7,
        signed: bool = True,
        nickname: str | None = None,
        neighbours: tuple[bytes, ...] = (),
        noise_key: bytes | None = None,
        signer: Identity | None = None,
    ) -> bytes:
        """A (signed) announce of ``ident``. ``noise_key`` + ``signer``: claim someone else's Noise key (hence its
        peer ID) with the signer's signing key — the identity hijack."""
        signer = signer or ident
        noise = noise_key if noise_key is not None else ident.noise_public
        sender = hashlib.sha256(noise).digest()[:8]
        ann = Announce(
            nickname if nickname is not None else f"h{self.rng.getrandbits(24):06x}",
            noise,
            signer.signing_public,
            neighbours[:10],
            None,
            None,
        )
        pkt = Packet(1, MessageType.ANNOUNCE, ttl, ts_ms, sender, None, (), encode_announce(ann))
        if signed:
            pkt = sign_packet(pkt, signer.signing_key)
        return encode_packet(pkt)

    def leave(self, ident: Identity, ts_ms: int) -> bytes:
        pkt = Packet(1, MessageType.LEAVE, 7, ts_ms, ident.peer_id, None, (), b"")
        return encode_packet(sign_packet(pkt, ident.signing_key))

    def public(self, ident: Identity, ts_ms: int, text_bytes: int, *, signed: bool = True) -> bytes:
        """A public message of ``text_bytes`` repetitive bytes (compresses to almost nothing): the bytes
        ``encode_packet`` and ``sign_packet`` make, built from a per-size template (deflating a megabyte for every
        bomb would cost the attacker more than the target)."""
        size = max(1, text_bytes)
        template = self._publics.get(size)
        if template is None:
            template = encode_packet(Packet(2, MessageType.MESSAGE, 7, 0, bytes(8), None, (), b"A" * size))
            self._publics[size] = template
            if len(self._publics) > PUBLIC_TEMPLATES:
                self._publics.popitem(last=False)
        # v2 header: version, type, TTL, timestamp (3..10), flags (11), payload length (12..15), sender (16..23)
        frame = template[:3] + ts_ms.to_bytes(8, "big") + template[11:16] + ident.peer_id + template[24:]
        if not signed:
            return frame
        # the signing preimage (BitChat: TTL 0, padded) of an unsigned, unpadded frame, as the verifier rebuilds it
        signature = ident.signing_key.sign(pad(frame[:2] + b"\0" + frame[3:])).signature
        return frame[:11] + bytes([frame[11] | FLAG_HAS_SIGNATURE]) + frame[12:] + signature

    # ---------------------------------------------------------------- fragments
    def nested_fragments(self, sender: bytes, ts_ms: int, depth: int) -> bytes:
        """A fragment (total 1) whose chunk is a fragment whose chunk is ... ``depth`` levels, around a ping. Built
        once per depth with placeholder sender and timestamp, which are then replaced (encoding 600 levels, each
        copying the levels inside it, costs milliseconds; the fragment IDs repeat, the senders do not)."""
        template = self._nested.get(depth)
        if template is None:
            frame = encode_packet(Packet(1, MessageType.PING, 7, NESTED_TS, NESTED_SENDER, self.target, (), bytes(9)))
            for level in range(depth):
                fid = hashlib.sha256(b"nested %d %d" % (self.seed, level)).digest()[:8]
                chunk = encode_fragment(FragmentPayload(fid, 0, 1, MessageType.FRAGMENT, frame))
                pkt = Packet(2, MessageType.FRAGMENT, 7, NESTED_TS, NESTED_SENDER, self.target, (), chunk)
                frame = encode_packet(pkt, compress=False)
            template = self._nested[depth] = frame
            if len(self._nested) > PUBLIC_TEMPLATES:
                self._nested.popitem(last=False)
        return template.replace(NESTED_SENDER, sender).replace(NESTED_TS.to_bytes(8, "big"), ts_ms.to_bytes(8, "big"))

    def partial_fragment(
        self, sender: bytes, ts_ms: int, *, total: int = 10_000, chunk_bytes: int = 400, broadcast: bool = False
    ) -> bytes:
        """One fragment of a set that never completes: reassembly state the node must bound."""
        index = self.rng.randrange(total)
        chunk = self.rng.randbytes(chunk_bytes)
        frag = FragmentPayload(self.rng.randbytes(8), index, total, MessageType.MESSAGE, chunk)
        recipient = None if broadcast else self.target
        return encode_packet(
            Packet(1, MessageType.FRAGMENT, 7, ts_ms, sender, recipient, (), encode_fragment(frag)), compress=False
        )

    # ---------------------------------------------------------------- directed junk
    def courier(
        self,
        sender: bytes,
        ts_ms: int,
        *,
        recipient: bytes,
        copies: int = 255,
        sealed: bytes | None = None,
        expires_in_ms: int | None = None,
    ) -> bytes:
        """A courier envelope for ``recipient`` (someone else: the target carries it) that nobody can open. The
        same ``sealed`` bytes twice make the same envelope (its copies merge at the carrier)."""
        expires = ts_ms + (expires_in_ms if expires_in_ms is not None else self.rng.randrange(60_000, 10**12))
        body = recipient + expires.to_bytes(8, "big") + bytes([max(1, min(255, copies))])
        payload = body + (sealed if sealed is not None else self.rng.randbytes(96))
        return encode_packet(Packet(1, MessageType.COURIER_ENVELOPE, 1, ts_ms, sender, self.target, (), payload))

    def ping(self, sender: bytes, ts_ms: int, payload_bytes: int = 9, *, ttl: int = 7) -> bytes:
        """A directed ping; ``payload_bytes`` > 9 is what a hostile sender may echo back at us (random: no
        compression helps the echo)."""
        payload = self.rng.randbytes(max(0, payload_bytes))
        version = 2 if len(payload) > 0xFFFF else 1
        return encode_packet(Packet(version, MessageType.PING, ttl, ts_ms, sender, self.target, (), payload))

    def msg1(self, sender: bytes, ts_ms: int) -> bytes:
        """Noise XX message 1 in ``sender``'s name (unauthenticated: anyone can claim any sender)."""
        e = self.rng.randbytes(NOISE_MSG1_BYTES)
        return encode_packet(Packet(1, MessageType.NOISE_HANDSHAKE, 7, ts_ms, sender, self.target, (), e), pad=True)

    def handshake_junk(self, sender: bytes, ts_ms: int) -> bytes:
        size = self.rng.choice((0, 1, 31, 33, 64, 95, 96, 97, 200))
        payload = self.rng.randbytes(size)
        return encode_packet(Packet(1, MessageType.NOISE_HANDSHAKE, 7, ts_ms, sender, self.target, (), payload))

    def ciphertext(self, sender: bytes, ts_ms: int, size: int = 64) -> bytes:
        """Noise transport bytes from someone with no session: BitChat answers with a handshake."""
        payload = self.rng.randbytes(max(0, size))
        return encode_packet(Packet(1, MessageType.NOISE_ENCRYPTED, 7, ts_ms, sender, self.target, (), payload))

    def directed_elsewhere(self, sender: bytes, ts_ms: int, size: int = 200) -> bytes:
        """A directed frame for a recipient nobody knows: relayed (flooded) by BitChat's rules."""
        payload = self.rng.randbytes(size)
        return encode_packet(Packet(1, MessageType.NOISE_ENCRYPTED, 7, ts_ms, sender, self.random_id(), (), payload))

    def unknown_type(self, sender: bytes, ts_ms: int, size: int = 100) -> bytes:
        t = self.rng.choice((0x05, 0x22, 0x23, 0x28, 0x2C, 0x7F, 0xFF))
        return encode_packet(Packet(1, t, 7, ts_ms, sender, None, (), self.rng.randbytes(size)))

    def garbage(self, size: int) -> bytes:
        """Random bytes, with a plausible header half the time."""
        data = bytearray(self.rng.randbytes(max(0, size)))
        if data and self.rng.random() < 0.5:
            data[0] = self.rng.choice((1, 2))
        return bytes(data)

    def zip_bomb(self, sender: bytes, ts_ms: int, original_bytes: int = 1_179_760) -> bytes:
        """A v2 compressed public message that inflates ``original_bytes`` from a few KB."""
        raw = b"\0" * original_bytes
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        deflated = comp.compress(raw) + comp.flush()
        header = bytes([2, MessageType.MESSAGE, 7]) + ts_ms.to_bytes(8, "big") + bytes([0x04])
        body = original_bytes.to_bytes(4, "big") + deflated
        return header + len(body).to_bytes(4, "big") + sender + body


def with_ttl(frame: bytes, ttl: int) -> bytes:
    """``frame`` with its TTL byte rewritten (what a replayer does to a recorded frame)."""
    if len(frame) < 3:
        return frame
    return frame[:2] + bytes([ttl & 0xFF]) + frame[3:]


__all__ = ["Forger", "with_ttl"]
