"""The Merchant's offers: resource exchanges between nodes, signed by the node that makes them (sans-IO).

An offer says "node F gives ``give_amount`` of ``give`` for ``want_amount`` of ``want`` to node T (or anyone),
until ``expires_at_ms``". Resources are the node's own, measurable ones (:data:`RESOURCES`): storage held for
the other node, relay of its frames, mailbox slots. Canonical sign-bytes (namespace, fields in a fixed order,
length-prefixed) are signed with the maker's Ed25519 key; accepting an offer adds the taker's signature over the
same bytes plus the offer's hash, so both sides hold a record either can show. :class:`OfferBook` keeps them,
bounded (:data:`MAX_OFFERS`; expired first, then the oldest), and refuses anything that does not verify.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import nacl.exceptions
import nacl.signing

from node.agents.errors import AgentError

NAMESPACE = b"aivillage/market/offer/v1"
RESOURCES = {
    "storage_bytes": "bytes of storage held for the other node",
    "relay_frames": "frames relayed for the other node",
    "mailbox_messages": "messages kept in a mailbox for the other node while it is offline",
}
MAX_OFFERS = 256
MAX_AMOUNT = 10**12
MAX_NOTE_CHARS = 200
MAX_MS = 2**63 - 1  # times are packed as unsigned 64-bit integers in the sign-bytes


@dataclass(frozen=True, slots=True)
class Offer:
    maker: bytes  # Ed25519 public key (32 bytes)
    to: bytes  # the intended taker's peer ID (8 bytes), or b"" for anyone
    give: str
    give_amount: int
    want: str
    want_amount: int
    created_ms: int
    expires_at_ms: int
    note: str = ""
    signature: bytes = b""
    taker: bytes = b""
    taker_signature: bytes = b""

    def sign_bytes(self) -> bytes:
        parts = [self.maker, self.to, self.give.encode(), self.want.encode(), self.note.encode()]
        head = struct.pack(">QQQQ", self.give_amount, self.want_amount, self.created_ms, self.expires_at_ms)
        return NAMESPACE + head + b"".join(struct.pack(">H", len(p)) + p for p in parts)

    @property
    def id(self) -> str:
        return hashlib.sha256(self.sign_bytes()).hexdigest()[:16]

    def accept_bytes(self) -> bytes:
        return NAMESPACE + b"/accept" + hashlib.sha256(self.sign_bytes()).digest() + self.taker

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "maker": self.maker.hex(),
            "to": self.to.hex() or None,
            "give": self.give,
            "give_amount": self.give_amount,
            "want": self.want,
            "want_amount": self.want_amount,
            "created_ms": self.created_ms,
            "expires_at_ms": self.expires_at_ms,
            "note": self.note,
            "signature": self.signature.hex(),
            "taker": self.taker.hex() or None,
            "taker_signature": self.taker_signature.hex() or None,
        }


def make_offer(
    key: nacl.signing.SigningKey,
    *,
    give: str,
    give_amount: int,
    want: str,
    want_amount: int,
    now_ms: int,
    ttl_s: float,
    to: bytes = b"",
    note: str = "",
) -> Offer:
    for r in (give, want):
        if r not in RESOURCES:
            raise AgentError(f"unknown resource {r!r}; one of {', '.join(RESOURCES)}")
    if give == want:
        raise AgentError("an offer exchanges two different resources")
    for a in (give_amount, want_amount):
        if not 0 < a <= MAX_AMOUNT:
            raise AgentError(f"amounts are 1 to {MAX_AMOUNT}")
    if len(to) not in (0, 8) or len(note) > MAX_NOTE_CHARS or not 0 < ttl_s <= 30 * 86_400:
        raise AgentError("bad offer: taker key, note (<= 200 chars) or lifetime (<= 30 days)")
    o = Offer(bytes(key.verify_key), to, give, give_amount, want, want_amount, now_ms, now_ms + int(ttl_s * 1000), note)
    return replace(o, signature=key.sign(o.sign_bytes()).signature)


def verify(o: Offer) -> bool:
    try:
        nacl.signing.VerifyKey(o.maker).verify(o.sign_bytes(), o.signature)
        if o.taker:
            nacl.signing.VerifyKey(o.taker).verify(o.accept_bytes(), o.taker_signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


def accept(o: Offer, key: nacl.signing.SigningKey, peer_id: bytes, now_ms: int) -> Offer:
    me = bytes(key.verify_key)
    if o.taker:
        raise AgentError(f"offer {o.id} was already accepted")
    if now_ms >= o.expires_at_ms:
        raise AgentError(f"offer {o.id} expired")
    if o.to and o.to != peer_id:
        raise AgentError(f"offer {o.id} is addressed to another node")
    if o.maker == me:
        raise AgentError("a node cannot accept its own offer")
    taken = replace(o, taker=me)
    return replace(taken, taker_signature=key.sign(taken.accept_bytes()).signature)


def offer_from_json(d: dict[str, Any]) -> Offer:
    """An offer as :meth:`Offer.to_json` wrote it (a file this node keeps); raises AgentError if malformed or out
    of range (so that signing bytes can always be built from it)."""
    try:
        o = Offer(
            bytes.fromhex(d["maker"]),
            bytes.fromhex(d["to"] or ""),
            str(d["give"]),
            int(d["give_amount"]),
            str(d["want"]),
            int(d["want_amount"]),
            int(d["created_ms"]),
            int(d["expires_at_ms"]),
            str(d["note"]),
            bytes.fromhex(d["signature"]),
            bytes.fromhex(d["taker"] or ""),
            bytes.fromhex(d["taker_signature"] or ""),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise AgentError(f"malformed offer record: {exc}") from exc
    if (
        o.give not in RESOURCES
        or o.want not in RESOURCES
        or not all(0 < a <= MAX_AMOUNT for a in (o.give_amount, o.want_amount))
        or not all(0 <= t <= MAX_MS for t in (o.created_ms, o.expires_at_ms))
        or len(o.maker) != 32
        or len(o.to) not in (0, 8)
        or len(o.taker) not in (0, 32)
        or len(o.note) > MAX_NOTE_CHARS
    ):
        raise AgentError("offer record out of range (resource, amount, time, key or note)")
    return o


class OfferBook:
    def __init__(self, max_offers: int = MAX_OFFERS) -> None:
        self.max_offers = max_offers
        self.offers: OrderedDict[str, Offer] = OrderedDict()
        self.refused = 0

    def add(self, o: Offer, now_ms: int) -> bool:
        if not verify(o):
            self.refused += 1
            return False
        held = self.offers.get(o.id)
        if held is not None and held.taker:  # an accepted record is final: never replaced (nor re-opened)
            return held == o
        self.offers[o.id] = o
        self.offers.move_to_end(o.id)
        while len(self.offers) > self.max_offers:
            expired = next((k for k, v in self.offers.items() if v.expires_at_ms <= now_ms), None)
            self.offers.pop(expired if expired is not None else next(iter(self.offers)))
        return True

    def get(self, ref: str) -> Offer:
        hits = [o for k, o in self.offers.items() if k.startswith(ref.lower())] if len(ref) >= 4 else []
        if len(hits) != 1:
            raise AgentError(f"no single offer matches {ref!r}")
        return hits[0]

    def open(self, now_ms: int) -> list[Offer]:
        return [o for o in self.offers.values() if o.expires_at_ms > now_ms and not o.taker]

    def all(self) -> list[Offer]:
        return list(self.offers.values())
