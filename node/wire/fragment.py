"""BitChat fragments (BITCHAT.md §2.3; BLE/BLEOutboundFragmentPlanner.swift, BLE/BLEFragmentAssemblyBuffer.swift).

A fragment is a type-0x20 packet whose payload is
``fragmentID (8 random bytes) ‖ index u16 ‖ total u16 ‖ originalType u8 ‖ chunk``; the chunks are consecutive
slices of the complete encoded original frame. Fragment packets copy version, TTL, timestamp, sender,
recipient, route and RSR from the original; they are never signed or padded (but the generic encoder may
compress their payload, as BitChat's does).

The :class:`Reassembler` keys assemblies by (sender, fragmentID) and bounds everything: at most
``fragment_max_assemblies`` at once (oldest evicted), ``fragment_lifetime_s`` each, ``fragment_max_assembly_bytes``
per assembly (the larger ``..._large`` bound for noiseEncrypted/fileTransfer originals), ``0 < total ≤
fragment_max_total``, ``index < total``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field, replace

from node.wire.errors import EncodeError, MalformedFrame
from node.wire.limits import WireLimits
from node.wire.packet import (
    DEFAULT_LIMITS,
    ID_BYTES,
    V1_HEADER_BYTES,
    V2_HEADER_BYTES,
    MessageType,
    Packet,
    encode_packet,
)

FRAGMENT_HEADER_BYTES = 13  # fragmentID 8 + index 2 + total 2 + originalType 1
LARGE_ORIGINAL_TYPES = (MessageType.NOISE_ENCRYPTED, MessageType.FILE_TRANSFER)


@dataclass(frozen=True, slots=True)
class FragmentPayload:
    fragment_id: bytes
    index: int
    total: int
    original_type: int
    chunk: bytes


def encode_fragment(frag: FragmentPayload) -> bytes:
    if len(frag.fragment_id) != ID_BYTES:
        raise EncodeError("fragment ID must be 8 bytes")
    if not 0 <= frag.index < frag.total <= 0xFFFF or not 0 <= frag.original_type <= 0xFF:
        raise EncodeError(f"fragment {frag.index}/{frag.total} of type {frag.original_type} does not fit")
    return (
        frag.fragment_id
        + frag.index.to_bytes(2, "big")
        + frag.total.to_bytes(2, "big")
        + bytes([frag.original_type])
        + frag.chunk
    )


def decode_fragment_untrusted(payload: bytes) -> FragmentPayload:
    if len(payload) < FRAGMENT_HEADER_BYTES:
        raise MalformedFrame(f"fragment payload of {len(payload)} bytes is shorter than its header")
    return FragmentPayload(
        fragment_id=bytes(payload[:8]),
        index=int.from_bytes(payload[8:10], "big"),
        total=int.from_bytes(payload[10:12], "big"),
        original_type=payload[12],
        chunk=bytes(payload[13:]),
    )


def fragment_overhead(original: Packet) -> int:
    """Bytes of a fragment frame besides its chunk (uncompressed)."""
    header = V1_HEADER_BYTES if original.version == 1 else V2_HEADER_BYTES
    recipient = ID_BYTES if original.recipient_id is not None else 0
    route = 1 + ID_BYTES * len(original.route) if original.version >= 2 and original.route else 0
    return header + ID_BYTES + recipient + route + FRAGMENT_HEADER_BYTES


def fragment_frame(
    original: Packet, frame: bytes, max_frame_bytes: int, fragment_id: bytes, limits: WireLimits = DEFAULT_LIMITS
) -> list[bytes]:
    """Split the encoded ``frame`` of ``original`` into fragment frames of at most ``max_frame_bytes``."""
    chunk_size = max_frame_bytes - fragment_overhead(original)
    if chunk_size < 1:
        raise EncodeError(f"a {max_frame_bytes}-byte MTU leaves no room for a fragment chunk")
    total = math.ceil(len(frame) / chunk_size)
    if total > min(limits.fragment_max_send_count, 0xFFFF):
        raise EncodeError(
            f"frame of {len(frame)} bytes needs {total} fragments at MTU {max_frame_bytes}; "
            f"at most {limits.fragment_max_send_count} are sent"
        )
    return fragment_with_chunk_size(original, frame, chunk_size, fragment_id, max_frame_bytes=max_frame_bytes)


def fragment_with_chunk_size(
    original: Packet, frame: bytes, chunk_size: int, fragment_id: bytes, *, max_frame_bytes: int | None = None
) -> list[bytes]:
    total = math.ceil(len(frame) / chunk_size)
    out = []
    for index in range(total):
        chunk = frame[index * chunk_size : (index + 1) * chunk_size]
        payload = encode_fragment(FragmentPayload(fragment_id, index, total, original.type, chunk))
        pkt = replace(original, type=MessageType.FRAGMENT, payload=payload, signature=None)
        encoded = encode_packet(pkt)
        if max_frame_bytes is not None and len(encoded) > max_frame_bytes:
            encoded = encode_packet(pkt, compress=False)  # deflate + size field can overshoot by a byte
        out.append(encoded)
    return out


@dataclass(slots=True)
class ReassemblyCounters:
    accepted: int = 0
    duplicate: int = 0
    completed: int = 0
    expired: int = 0
    evicted: int = 0
    rejected: int = 0


_Unit = tuple[str, bytes]  # (arrival link of a set's first fragment, sender ID): what fairness is accounted by


@dataclass
class _Assembly:
    total: int
    original_type: int
    deadline: float
    unit: _Unit
    size: int = 0
    chunks: dict[int, bytes] = field(default_factory=dict)


class Reassembler:
    """Reassembly of fragment sets, keyed by (sender, fragment ID), bounded per sender and in total.

    Bounds: ``limits.fragment_max_assemblies`` sets and ``max_bytes`` bytes in total; ``max_per_peer`` sets and
    ``max_bytes_per_peer`` bytes per sender (None: no per-sender bound). Fragments are unsigned, so the sender ID
    is free to forge; the arrival link is not: a set is accounted to (link of its first fragment, sender). Eviction
    is fair: a (link, sender) over its own bound loses its own oldest set; over a global bound, the link holding the
    most loses a set of its sender holding the most — neither a forged sender ID nor many fresh ones on one link
    can evict the sets that came on another. Sets expire in creation order (deadlines are creation + a fixed
    lifetime), so :meth:`expire` and :meth:`next_expiry` never scan the table."""

    def __init__(
        self,
        limits: WireLimits = DEFAULT_LIMITS,
        *,
        max_per_peer: int | None = None,
        max_bytes_per_peer: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.limits = limits
        self.max_per_peer = max_per_peer
        self.max_bytes_per_peer = max_bytes_per_peer
        self.max_bytes = max_bytes
        self.counters = ReassemblyCounters()
        self._assemblies: OrderedDict[tuple[bytes, bytes], _Assembly] = OrderedDict()  # oldest first
        self._by_peer: dict[_Unit, OrderedDict[bytes, None]] = {}  # (link, sender) -> fragment IDs, oldest first
        self._peer_bytes: dict[_Unit, int] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._assemblies)

    def _drop(self, key: tuple[bytes, bytes]) -> None:
        asm = self._assemblies.pop(key)
        unit = asm.unit
        mine = self._by_peer[unit]
        del mine[key[1]]
        self.bytes -= asm.size
        left = self._peer_bytes[unit] - asm.size
        if mine:
            self._peer_bytes[unit] = left
        else:
            del self._by_peer[unit], self._peer_bytes[unit]

    def _evict_oldest_of(self, unit: _Unit, keep: bytes | None = None) -> bool:
        for fid in self._by_peer.get(unit, ()):
            if fid != keep:
                self._drop((unit[1], fid))
                self.counters.evicted += 1
                return True
        return False

    def _evict_fairly(self, by_bytes: bool, keep: tuple[bytes, bytes]) -> bool:
        """Over a global bound: the link holding the most (sets, or bytes) loses the oldest set of its sender
        holding the most."""
        table = self._peer_bytes if by_bytes else {u: len(f) for u, f in self._by_peer.items()}
        per_link: dict[str, int] = {}
        for (link, _), n in table.items():
            per_link[link] = per_link.get(link, 0) + n
        keep_asm = self._assemblies.get(keep)
        keep_unit = keep_asm.unit if keep_asm is not None else None
        for unit in sorted(table, key=lambda u: (per_link[u[0]], table[u]), reverse=True):
            if self._evict_oldest_of(unit, keep[1] if unit == keep_unit else None):
                return True
        return False

    def add_untrusted(self, sender_id: bytes, frag: FragmentPayload, now: float, link_id: str = "") -> bytes | None:
        """Add one fragment that arrived on ``link_id``; returns the whole original frame when its last fragment
        arrives."""
        lim = self.limits
        self.expire(now)
        if not 0 < frag.total <= lim.fragment_max_total or frag.index >= frag.total:
            self.counters.rejected += 1
            return None
        sender = bytes(sender_id)
        key = (sender, frag.fragment_id)
        asm = self._assemblies.get(key)
        if asm is None:
            unit = (link_id, sender)
            mine = self._by_peer.get(unit)
            while mine and self.max_per_peer is not None and len(mine) >= self.max_per_peer:
                self._evict_oldest_of(unit)
                mine = self._by_peer.get(unit)
            while len(self._assemblies) >= lim.fragment_max_assemblies and self._evict_fairly(False, key):
                pass
            asm = _Assembly(frag.total, frag.original_type, now + lim.fragment_lifetime_s, unit)
            self._assemblies[key] = asm
            self._by_peer.setdefault(unit, OrderedDict())[frag.fragment_id] = None
            self._peer_bytes.setdefault(unit, 0)
        elif asm.total != frag.total or asm.original_type != frag.original_type:
            self.counters.rejected += 1
            return None
        if frag.index in asm.chunks:
            self.counters.duplicate += 1
            return None
        cap = (
            lim.fragment_max_assembly_bytes_large
            if frag.original_type in LARGE_ORIGINAL_TYPES
            else lim.fragment_max_assembly_bytes
        )
        size = len(frag.chunk)
        if asm.size + size > cap or (self.max_bytes_per_peer is not None and asm.size + size > self.max_bytes_per_peer):
            self._drop(key)
            self.counters.rejected += 1
            return None
        unit = asm.unit
        while self.max_bytes_per_peer is not None and self._peer_bytes[unit] + size > self.max_bytes_per_peer:
            self._evict_oldest_of(unit, keep=frag.fragment_id)  # its own older sets make room (asm alone fits)
        while self.max_bytes is not None and self.bytes + size > self.max_bytes:
            if not self._evict_fairly(True, key):
                self._drop(key)
                self.counters.rejected += 1
                return None
        asm.chunks[frag.index] = frag.chunk
        asm.size += size
        self._peer_bytes[unit] += size
        self.bytes += size
        self.counters.accepted += 1
        if len(asm.chunks) < asm.total:
            return None
        self._drop(key)
        self.counters.completed += 1
        return b"".join(asm.chunks[i] for i in range(asm.total))

    def expire(self, now: float) -> None:
        while self._assemblies:
            key, asm = next(iter(self._assemblies.items()))
            if asm.deadline > now:
                break
            self._drop(key)
            self.counters.expired += 1

    def next_expiry(self) -> float | None:
        if not self._assemblies:
            return None
        return next(iter(self._assemblies.values())).deadline

    def peer_count(self) -> int:
        return len(self._by_peer)
