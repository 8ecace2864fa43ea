"""Which known peer a user's reference names (``village send TARGET``, the gateway's ``to``, app requests), in an
order a remote peer cannot shadow (issue 13, item 5):

1. the exact peer ID (16 hex digits);
2. the exact fingerprint (64 hex digits: SHA-256 of the Noise static key);
3. a unique prefix (at least :data:`MIN_PREFIX_HEX` hex digits) of a peer ID or fingerprint — a peer ID is the
   first 16 hex digits of the fingerprint, so one prefix rule covers both;
4. a nickname, only when exactly one known peer has it and the reference does not itself look like hex (4+ hex
   digits): nicknames are chosen by the announcer, so an attacker announcing the nickname ``3f2a9c01`` must never
   capture a message meant for the peer whose ID starts with those digits.

A reference that matches several peers at the first level where it matches anything is ambiguous: the caller gets
every candidate (and refuses, listing them); nothing falls through to a weaker level.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from node.identity import fingerprint_from_noise_key

if TYPE_CHECKING:
    from node.routing.peers import PeerInfo

MIN_PREFIX_HEX = 4  # shorter hex strings are too likely to match by chance to name a peer
PEER_ID_HEX = 16
FINGERPRINT_HEX = 64
_HEX = frozenset("0123456789abcdef")


def hex_like(ref: str) -> bool:
    """Could ``ref`` be (a prefix of) a peer ID or fingerprint?"""
    return len(ref) >= MIN_PREFIX_HEX and set(ref.lower()) <= _HEX


def resolve_peer_ref(ref: str, peers: Iterable[PeerInfo]) -> list[PeerInfo]:
    """The peers ``ref`` names: [] for none, one for a match, several when it is ambiguous."""
    known = list(peers)
    ref_l = ref.strip().lower()
    if hex_like(ref_l):
        if len(ref_l) == PEER_ID_HEX:
            exact = [p for p in known if p.peer_id.hex() == ref_l]
            if exact:
                return exact
        fingerprints = [(p, fingerprint_from_noise_key(p.noise_public_key)) for p in known]
        if len(ref_l) == FINGERPRINT_HEX:
            exact = [p for p, fp in fingerprints if fp == ref_l]
            if exact:
                return exact
        return [p for p, fp in fingerprints if fp.startswith(ref_l) or p.peer_id.hex().startswith(ref_l)]
    return [p for p in known if p.nickname == ref]


def describe(peers: Iterable[PeerInfo]) -> str:
    """Candidates for an error message: ID and nickname (escaped: nicknames come from the network)."""
    return ", ".join(f"{p.peer_id.hex()} ({p.nickname!r})" for p in peers)
