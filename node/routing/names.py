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

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

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
    keyed = [(p.peer_id.hex(), fingerprint_from_noise_key(p.noise_public_key), p.nickname) for p in known]
    return [known[i] for i in resolve_ref(ref, keyed)]


def resolve_peer_view(ref: str, peers: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The same rules over rows of ``Node.peers_view()`` (``peer_id``, ``fingerprint``, ``nickname``): what the
    agents see through their ``mesh.peers`` tool."""
    keyed = [(str(p["peer_id"]), str(p.get("fingerprint") or ""), str(p.get("nickname") or "")) for p in peers]
    return [peers[i] for i in resolve_ref(ref, keyed)]


def resolve_ref(ref: str, peers: Sequence[tuple[str, str, str]]) -> list[int]:
    """Indexes of the ``(peer_id_hex, fingerprint_hex, nickname)`` entries ``ref`` names, by the rules above."""
    ref_l = ref.strip().lower()
    if hex_like(ref_l):
        if len(ref_l) == PEER_ID_HEX:
            exact = [i for i, (pid, _, _) in enumerate(peers) if pid.lower() == ref_l]
            if exact:
                return exact
        if len(ref_l) == FINGERPRINT_HEX:
            exact = [i for i, (_, fp, _) in enumerate(peers) if fp.lower() == ref_l]
            if exact:
                return exact
        return [
            i
            for i, (pid, fp, _) in enumerate(peers)
            if (fp and fp.lower().startswith(ref_l)) or pid.lower().startswith(ref_l)
        ]
    return [i for i, (_, _, nick) in enumerate(peers) if nick and nick == ref]


def describe(peers: Iterable[PeerInfo]) -> str:
    """Candidates for an error message: ID and nickname (escaped: nicknames come from the network)."""
    return ", ".join(f"{p.peer_id.hex()} ({p.nickname!r})" for p in peers)
