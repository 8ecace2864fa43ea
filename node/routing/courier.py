"""Courier copies for offline peers (sans-IO): binary spray-and-wait with sealed envelopes.

When a private message waits for a peer nobody can currently reach, its sender seals it into an **envelope**
that only the recipient can open and gives carriers copies of it; a carrier that later meets the recipient
hands it over, even if the sender is long gone.

* **Sealing**: ``Noise_X_25519_ChaChaPoly_SHA256`` — one message from the sender (its static key encrypted
  inside, authenticated by ``ss``) to the recipient's static key from its announce. The prologue binds the
  recipient ID and the expiry, so a carrier can neither read the message nor change where or how long it
  goes. The plaintext is the same Noise payload as a private message (type 0x01: message ID + text), so the
  recipient stores it under the same (sender, ID) key: delivered at most once however many copies arrive.
* **Wire**: a COURIER_ENVELOPE (0x04) packet directed to the next holder with TTL 1 (never relayed); payload
  ``recipient ID (8) ‖ expires_at_ms (u64) ‖ copies (u8) ‖ sealed``. BitChat phones relay 0x04 untouched.
* **Spray and wait** (binary): a holder of ``c > 1`` copies that meets a new direct neighbour gives it
  ``c // 2`` copies and keeps the rest; a holder of one copy waits for the recipient itself. Whoever meets the
  recipient directly hands the envelope over (at up to three meetings, in case a frame is lost), then forgets it.
* **Bounds**: ``mesh.courier_copies`` per message (also the most copies a carrier keeps of anyone's envelope),
  ``mesh.courier_expiry_s`` lifetime (envelopes expiring later than that, plus the clock skew, are refused),
  ``mesh.courier_max_envelopes`` carried at once (full: the link holding the most loses its latest-expiring one).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from node.crypto.noise import HandshakeState
from node.errors import CryptoError
from node.identity import peer_id_from_noise_key
from node.wire import MalformedFrame

PROTOCOL = "Noise_X_25519_ChaChaPoly_SHA256"
PROLOGUE = b"aivillage courier v1"
HEADER = struct.Struct(">8sQB")  # recipient ID, expires_at_ms, copies
MAX_COPIES = 255  # the copy count is one byte on the wire
MAX_SEALED_BYTES = 2048  # an X message (32 + 48 + 16) around a private-message payload of at most ~300 bytes


@dataclass(frozen=True, slots=True)
class Envelope:
    recipient_id: bytes
    expires_at_ms: int
    copies: int
    sealed: bytes

    @property
    def key(self) -> bytes:
        """Identifies the envelope across carriers (copies differ, the sealed bytes do not)."""
        return hashlib.sha256(self.sealed).digest()[:16]


def encode_envelope(env: Envelope) -> bytes:
    return HEADER.pack(env.recipient_id, env.expires_at_ms, env.copies) + env.sealed


def decode_envelope_untrusted(payload: bytes) -> Envelope:
    if len(payload) < HEADER.size + 96 or len(payload) > HEADER.size + MAX_SEALED_BYTES:
        raise MalformedFrame(f"courier envelope of {len(payload)} bytes is out of range")
    recipient, expires, copies = HEADER.unpack_from(payload)
    if copies < 1:
        raise MalformedFrame("courier envelope with no copies")
    return Envelope(recipient, expires, copies, payload[HEADER.size :])


def _prologue(recipient_id: bytes, expires_at_ms: int) -> bytes:
    return PROLOGUE + recipient_id + struct.pack(">Q", expires_at_ms)


def seal(
    plaintext: bytes, *, sender_static: bytes, recipient_id: bytes, recipient_static: bytes, expires_at_ms: int
) -> bytes:
    hs = HandshakeState(
        PROTOCOL,
        initiator=True,
        prologue=_prologue(recipient_id, expires_at_ms),
        static_private=sender_static,
        remote_static=recipient_static,
    )
    return hs.write_message(plaintext)


def open_untrusted(env: Envelope, own_static: bytes) -> tuple[bytes, bytes]:
    """(sender peer ID, plaintext) of an envelope sealed to us; raises :class:`CryptoError` otherwise."""
    hs = HandshakeState(
        PROTOCOL, initiator=False, prologue=_prologue(env.recipient_id, env.expires_at_ms), static_private=own_static
    )
    plaintext = hs.read_message(env.sealed)
    rs = hs.remote_static_public_key
    if rs is None:  # cannot happen after a complete X message; keep the type checker and the reader honest
        raise CryptoError("courier envelope without a sender key")
    return peer_id_from_noise_key(rs), plaintext


RECIPIENT_HANDOVERS = 3  # times a holder hands an envelope to its recipient (one per meeting) before forgetting it


@dataclass
class Carried:
    envelope: Envelope
    copies: int
    source: str = ""  # the link it came on ("": sealed here); a carrier cannot check envelopes, so links share room
    given_to: set[bytes] = field(default_factory=set)  # peers already handed copies (never twice)
    handovers: int = 0  # to the recipient; a lost frame on the way is covered by the next meeting


class CourierStore:
    """Envelopes this node carries (its own included), bounded and expiring.

    Carriers cannot open envelopes, so junk costs its sender nothing: an envelope whose expiry lies more than
    ``max_lifetime_ms`` ahead is refused, copies are capped at ``max_copies``, and when the store is full the
    envelope dropped is the one expiring last from the source (arrival link) holding the most — a flood from one
    link displaces its own envelopes, never another link's."""

    def __init__(self, max_envelopes: int, *, max_lifetime_ms: int | None = None, max_copies: int = MAX_COPIES) -> None:
        self.max_envelopes = max_envelopes
        self.max_lifetime_ms = max_lifetime_ms
        self.max_copies = max(1, min(MAX_COPIES, max_copies))
        self._carried: dict[bytes, Carried] = {}
        self._done: dict[bytes, int] = {}  # keys handed to their recipient -> expiry (refuse them again)

    def __len__(self) -> int:
        return len(self._carried)

    def __iter__(self) -> Iterator[Carried]:
        return iter(list(self._carried.values()))

    def add(self, env: Envelope, now_ms: int, source: str = "") -> bool:
        """Carry ``env`` (copies merge if we hold it already). False if refused (expired, too far in the future,
        done, or the store is full and ``source`` holds the most)."""
        self.expire(now_ms)
        key = env.key
        if env.expires_at_ms <= now_ms or key in self._done:
            return False
        if self.max_lifetime_ms is not None and env.expires_at_ms > now_ms + self.max_lifetime_ms:
            return False
        held = self._carried.get(key)
        if held is not None:
            held.copies = min(self.max_copies, held.copies + env.copies)  # the copy count travels in one byte
            return True
        new = Carried(env, min(self.max_copies, env.copies), source)
        if len(self._carried) >= self.max_envelopes:
            counts: dict[str, int] = {source: 1}
            for c in self._carried.values():
                counts[c.source] = counts.get(c.source, 0) + 1
            heavy = max(counts, key=lambda src: (counts[src], src != ""))  # on a tie, our own envelopes stay
            pool = [(k, c) for k, c in self._carried.items() if c.source == heavy]
            if source == heavy:
                pool.append((key, new))
            victim, _ = max(pool, key=lambda kc: kc[1].envelope.expires_at_ms)
            if victim == key:
                return False
            del self._carried[victim]
        self._carried[key] = new
        return True

    def handed_to_recipient(self, key: bytes) -> None:
        held = self._carried.pop(key, None)
        if held is not None:
            self._done[key] = held.envelope.expires_at_ms
            while len(self._done) > 4 * self.max_envelopes:
                self._done.pop(next(iter(self._done)))

    def expire(self, now_ms: int) -> None:
        for key in [k for k, c in self._carried.items() if c.envelope.expires_at_ms <= now_ms]:
            del self._carried[key]
        for key in [k for k, exp in self._done.items() if exp <= now_ms]:
            del self._done[key]

    def meet(self, peer: bytes, now_ms: int) -> list[Envelope]:
        """Envelopes (with their copy counts) to hand to a direct neighbour ``peer`` we just met."""
        self.expire(now_ms)
        out = []
        for key, held in list(self._carried.items()):
            env = held.envelope
            if env.recipient_id == peer:
                out.append(Envelope(env.recipient_id, env.expires_at_ms, held.copies, env.sealed))
                held.handovers += 1
                if held.handovers >= RECIPIENT_HANDOVERS:
                    self.handed_to_recipient(key)
            elif held.copies > 1 and peer not in held.given_to:
                give = held.copies // 2
                held.copies -= give
                held.given_to.add(peer)
                out.append(Envelope(env.recipient_id, env.expires_at_ms, give, env.sealed))
        return out
