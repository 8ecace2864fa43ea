"""Constants and small helpers shared by the mesh core's components (:mod:`node.routing.mesh` and the modules it
composes: :mod:`~node.routing.output`, :mod:`~node.routing.delivery`, :mod:`~node.routing.announcing`,
:mod:`~node.routing.pinging`)."""

from __future__ import annotations

import hashlib
import struct

from node.wire import MessageType, Packet

MAX_TTL = 7  # BitChat clamps and originates with TTL 7
PRIVATE_TEXT_MAX_BYTES = 255  # BitChat's private-message TLV length is one byte
SEEN_PRIVATE_IDS = 4096  # private message IDs remembered to suppress re-delivered retransmits
PENDING_SESSION_FRAMES = 64  # payloads queued per peer while its handshake runs
REHANDSHAKE_AFTER_ATTEMPTS = 3  # every 3rd unacknowledged send of a private message also renews the session
MAX_OUTSTANDING_PINGS = 256  # pings awaiting a pong; the oldest are forgotten beyond this
PING_EXPIRY_S = 30.0  # a pong later than this is ignored
PING_MAX_PAYLOAD_BYTES = 64  # BitChat's ping is a 9-byte nonce + origin TTL; larger pings are not answered
RTT_SMOOTHING = 0.25  # weight of a new RTT or loss sample (exponentially weighted moving average)
BUSY_LINKS = 6  # BitChat's threshold for a busy node: longer announce interval, shorter broadcast TTL
HOLD_AFTER_EXPIRIES = 2  # a private message is held (not sent) for a peer silent this many peer expiries
UNKNOWN_PEER_PROBES = 6  # probe handshakes (10-35 s apart) for a held message to a peer never heard of
# After those probes, a message to a peer still never heard of keeps probing (flooded handshakes) every
# FALLBACK_PROBE_INTERVAL_S while it lives, within this node's own budget: at most FALLBACK_PROBES_PER_MIN in all
# (burst the same) and one per FALLBACK_PROBE_INTERVAL_S per destination. A burst of sends to unheard or made-up IDs
# costs the sender's budget (refusals counted), never more floods on the mesh.
FALLBACK_PROBE_INTERVAL_S = 20.0
FALLBACK_PROBES_PER_MIN = 6.0
ANNOUNCE_ANSWER_GAP_S = 0.15  # BitChat forces announces on a link at least this far apart
ANNOUNCE_CHANGE_GAP_S = 30.0  # a changed announce from one peer is relayed at most this often
LOSSY_PONG_RATIO = 0.65  # fewer pings answered than this: a lossy neighbourhood (10 % loss per frame: 0.81)
LOSSY_EARLY_RELAYS = 3  # ... where an origin's first relays come at the short interval
FRESH_LINK_S = 2.0  # direct announces on a link this young are not relayed (sent before the peer bound anyone)
# Announce TLV 05 bit (BitChat uses bits 0-10): "my link-up announces are followed by a settled one on every link
# SETTLE_ANNOUNCE_S later" — only such a neighbour's link-up announce may be left unrelayed (a phone's is relayed).
SETTLED_ANNOUNCE_CAPABILITY = 1 << 33
SETTLE_ANNOUNCE_S = (3.0, 4.0)  # after a link comes up, announce on every link within this (neighbours bound)
FAR_EXPIRY_PER_RELAY_INTERVAL = 2.5  # far peers' paths and reachability last this many relay intervals
PADDED_TYPES = (MessageType.NOISE_HANDSHAKE, MessageType.NOISE_ENCRYPTED)  # only these are padded on air
# Message types as plain ints for the per-packet path (receive, dedupe, relay): reading an IntEnum member off its
# class costs several times a module global on Python 3.11, and that path compares the type a dozen times a packet.
T_ANNOUNCE = int(MessageType.ANNOUNCE)
T_MESSAGE = int(MessageType.MESSAGE)
T_LEAVE = int(MessageType.LEAVE)
T_COURIER_ENVELOPE = int(MessageType.COURIER_ENVELOPE)
T_NOISE_HANDSHAKE = int(MessageType.NOISE_HANDSHAKE)
T_NOISE_ENCRYPTED = int(MessageType.NOISE_ENCRYPTED)
T_FRAGMENT = int(MessageType.FRAGMENT)
T_REQUEST_SYNC = int(MessageType.REQUEST_SYNC)
T_PING = int(MessageType.PING)
T_PONG = int(MessageType.PONG)
T_HOP_ACK = int(MessageType.HOP_ACK)
# Sends (private message attempts, handshake attempts) that follow the path table before resends flood: with hop
# acks a routed attempt is reliable hop by hop, so one more routed try is cheaper than a flood.
ROUTED_TRIES_WITH_HOP_ARQ = 2
EARLY_PEERS = 64  # peers whose early ciphertexts are held at once (the least recent is dropped beyond)
EARLY_CIPHERTEXT_MAX_BYTES = 4096  # larger ciphertexts are never held early (a private message is < 1 KiB)
EARLY_CIPHERTEXTS = 8  # ciphertexts per peer held while its handshake message 3 may still be on its way (hop ARQ)


def arrived_flooded(pkt: Packet) -> bool:
    """A directed packet from beyond our neighbours that came without a source route: its sender escalated to a
    flood (or had only a reverse path), so the answer should not trust a single path either."""
    return not pkt.route and hops_travelled(pkt) > 1


def smoothed(old: float | None, sample: float) -> float:
    return sample if old is None else (1 - RTT_SMOOTHING) * old + RTT_SMOOTHING * sample


def hops_travelled(pkt: Packet) -> int:
    """Hops a packet sent with TTL 7 has travelled, from the TTL it arrived with (1: from the sender itself; a TTL
    above 7 counts as 7)."""
    ttl = pkt.ttl
    return MAX_TTL + 1 - (ttl if ttl < MAX_TTL else MAX_TTL)


def public_message_id(pkt: Packet) -> str:
    """BitChat's packet ID (bitchat/Sync/PacketIdUtil.swift): SHA-256(type ‖ sender ‖ ts u64 ‖ payload)[0:16]."""
    digest = hashlib.sha256(b"".join((bytes((pkt.type,)), pkt.sender_id, _TS.pack(pkt.timestamp_ms), pkt.payload)))
    return digest.digest()[:16].hex()


_TS = struct.Struct(">Q")
