"""The BitChat wire format (sans-IO). Decoders of network bytes are ``*_untrusted`` and raise only
:class:`MalformedFrame`; every bound they enforce comes from :class:`WireLimits` (the ``[wire]`` config)."""

from node.wire.errors import EncodeError, MalformedFrame
from node.wire.fragment import (
    FragmentPayload,
    Reassembler,
    ReassemblyCounters,
    decode_fragment_untrusted,
    encode_fragment,
    fragment_frame,
    fragment_with_chunk_size,
)
from node.wire.limits import WireLimits
from node.wire.packet import (
    BROADCAST_ID,
    DEFAULT_LIMITS,
    MessageType,
    Packet,
    decode_packet_untrusted,
    encode_packet,
    is_broadcast,
    pad,
    sign_packet,
    signing_preimage,
    signing_preimage_from_wire_untrusted,
    unpad,
    verify_wire_signature,
)
from node.wire.payloads import (
    Announce,
    NoisePayloadType,
    Ping,
    decode_announce_untrusted,
    decode_noise_payload_untrusted,
    decode_ping_untrusted,
    decode_private_message_untrusted,
    encode_announce,
    encode_noise_payload,
    encode_ping,
    encode_private_message,
)

__all__ = [
    "BROADCAST_ID", "DEFAULT_LIMITS", "Announce", "EncodeError", "FragmentPayload", "MalformedFrame",
    "MessageType", "NoisePayloadType", "Packet", "Ping", "Reassembler", "ReassemblyCounters", "WireLimits",
    "decode_announce_untrusted", "decode_fragment_untrusted", "decode_noise_payload_untrusted",
    "decode_packet_untrusted", "decode_ping_untrusted", "decode_private_message_untrusted", "encode_announce",
    "encode_fragment", "encode_noise_payload", "encode_packet", "encode_ping", "encode_private_message",
    "fragment_frame", "fragment_with_chunk_size", "is_broadcast", "pad", "sign_packet", "signing_preimage",
    "signing_preimage_from_wire_untrusted", "unpad", "verify_wire_signature",
]
