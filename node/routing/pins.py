"""Durable identity pins: peer ID -> (Noise static key, Ed25519 signing key), made only with proof of the Noise key.

An announce binds a peer ID to a signing key, but anyone can announce someone else's Noise key with their own
signing key: nothing in an announce proves the announcer holds the Noise key the peer ID is derived from. The peer
table pins keys at first sight, but it is an LRU of unverified peers: a flood of fresh identities evicts a peer,
and the next announce claiming it wins. So a binding becomes durable only when the peer proves its Noise key — a
completed Noise XX handshake with that static key — and then tells us its signing key inside the session
(BitChat's authenticatedPeerState, Noise payload 0x21: version 01, TLV ``01 len caps(LE)``, TLV ``02 32 key``; iOS
sends it after every handshake). Such a pin lives in a :class:`PinStore` that eviction of unverified peers cannot
touch; an announce that conflicts with a pin is refused and counted.

Peers that never complete a handshake with us (phones we only hear) stay unpinned and work as before.

Sans-IO: the core accepts pins at construction and reports changes (:meth:`PinStore.take_changes`); the node
stores them in its state database.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from node.routing.ratelimit import OriginLimiter
from node.wire import MalformedFrame

PEER_STATE_VERSION = 1
TLV_CAPABILITIES = 0x01
TLV_SIGNING_KEY = 0x02
KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class Pin:
    peer_id: bytes
    noise_public_key: bytes
    signing_public_key: bytes


@dataclass(frozen=True, slots=True)
class PinChange:
    peer_id: bytes
    pin: Pin | None  # None: forgotten


def encode_peer_state(signing_public_key: bytes, capabilities: int) -> bytes:
    """The body of an authenticatedPeerState Noise payload (after its type byte)."""
    caps = capabilities.to_bytes(8, "little").rstrip(b"\x00") or b"\x00"
    return (
        bytes([PEER_STATE_VERSION, TLV_CAPABILITIES, len(caps)])
        + caps
        + bytes([TLV_SIGNING_KEY, KEY_BYTES])
        + signing_public_key
    )


def decode_peer_state_signing_key_untrusted(body: bytes) -> bytes | None:
    """The Ed25519 key an authenticatedPeerState carries (None if it carries none). Raises MalformedFrame."""
    if not body or body[0] != PEER_STATE_VERSION:
        raise MalformedFrame("authenticated peer state of an unknown version")
    i, key = 1, None
    while i < len(body):
        if i + 2 > len(body):
            raise MalformedFrame("truncated authenticated peer state TLV")
        t, n = body[i], body[i + 1]
        value = body[i + 2 : i + 2 + n]
        if len(value) != n:
            raise MalformedFrame("truncated authenticated peer state TLV")
        if t == TLV_SIGNING_KEY:
            if n != KEY_BYTES:
                raise MalformedFrame("authenticated peer state signing key is not 32 bytes")
            key = value
        i += 2 + n
    return key


NEW_PINS_PER_MIN = 6.0  # pins made at most this often (a burst of NEW_PINS_BURST): pinning costs an attacker time
NEW_PINS_BURST = 60.0
# ... and per arrival link (the link the proof came on, which a sender cannot forge) at most half the rate and a third
# of the burst, so one link cannot use up the budget of the others. The caller keys it by the link's source (its
# ``rate_key``: remote address or prefix, which outlives a reconnect; node.routing.output), not by the link id.
NEW_PINS_PER_LINK_PER_MIN = 3.0
NEW_PINS_PER_LINK_BURST = 20.0
PIN_RATE_LINKS = 256  # links whose pin budget is remembered (least recently used forgotten; the global one holds)


class PinStore:
    """Pins, bounded by ``max_pins``. A pin is never evicted to make room for another: anyone can make a key and
    complete a handshake with it, so "least recently confirmed goes" would let throwaway keys push honest pins out
    and reopen the hijack pins exist to close. When the store is full a new binding is refused (``"full"``, the
    peer works unpinned as before; the user frees room with ``village peers --forget``), and new pins are made at
    most ``NEW_PINS_PER_MIN`` a minute, and ``NEW_PINS_PER_LINK_PER_MIN`` per source of the arrival link (its
    remote address or prefix, so reconnecting does not renew it; ``"later"``: the peer's next handshake tries again)."""

    def __init__(self, max_pins: int, pins: tuple[Pin, ...] | list[Pin] = ()) -> None:
        self.max_pins = max_pins
        self._pins: OrderedDict[bytes, Pin] = OrderedDict()
        self._changes: list[PinChange] = []
        self._rate = OriginLimiter(
            per_origin_per_s=NEW_PINS_PER_LINK_PER_MIN / 60.0,
            burst=NEW_PINS_PER_LINK_BURST,
            global_per_s=NEW_PINS_PER_MIN / 60.0,
            global_burst=NEW_PINS_BURST,
            max_origins=PIN_RATE_LINKS,
        )
        for pin in pins:
            self._pins[pin.peer_id] = pin
        while len(self._pins) > max_pins:
            self._pins.popitem(last=False)

    def __len__(self) -> int:
        return len(self._pins)

    def __iter__(self) -> Iterator[Pin]:
        return iter(list(self._pins.values()))

    def get(self, peer_id: bytes) -> Pin | None:
        return self._pins.get(peer_id)

    def conflicts(self, peer_id: bytes, noise_public_key: bytes, signing_public_key: bytes) -> bool:
        pin = self._pins.get(peer_id)
        return pin is not None and (pin.noise_public_key, pin.signing_public_key) != (
            noise_public_key,
            signing_public_key,
        )

    def confirm(self, pin: Pin, now: float = 0.0, link_id: str = "") -> str:
        """Pin (or re-confirm) a binding proven by a handshake, whose proof arrived on ``link_id`` (the arrival link's
        ``rate_key`` where it has one: the per-link budget is keyed by it): ``"new"``,
        ``"same"``, ``"conflict"`` (another binding is pinned for that peer ID; kept until the user forgets it),
        ``"full"`` (no room: refused) or ``"later"`` (over the rate of new pins, on that link or in all: refused
        for now)."""
        old = self._pins.get(pin.peer_id)
        if old is not None:
            return "same" if old == pin else "conflict"
        if len(self._pins) >= self.max_pins:
            return "full"
        if not self._rate.allow(link_id.encode(), now):
            return "later"
        self._pins[pin.peer_id] = pin
        self._change(PinChange(pin.peer_id, pin))
        return "new"

    def forget(self, peer_id: bytes) -> bool:
        if self._pins.pop(peer_id, None) is None:
            return False
        self._change(PinChange(peer_id, None))
        return True

    def _change(self, change: PinChange) -> None:
        self._changes.append(change)
        if len(self._changes) > 2 * self.max_pins:  # nobody persists them (a simulation): keep the latest
            del self._changes[: len(self._changes) - self.max_pins]

    def take_changes(self) -> list[PinChange]:
        """Pins added or forgotten since the last call, for the node to persist."""
        out, self._changes = self._changes, []
        return out

    def bounded_sizes(self) -> dict[str, tuple[int, int]]:
        return {
            "pins": (len(self._pins), self.max_pins),
            "pin_changes": (len(self._changes), 2 * self.max_pins),
            **self._rate.bounded_sizes("pin_rate_links"),
        }
