"""Size and count limits of the wire codec: every bound the decoder enforces is a value here.

The defaults are BitChat's (see ``BITCHAT.md`` §1.5 and §2.3); the ``[wire]`` config section overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from node.schema import setting


@dataclass(frozen=True, slots=True)
class WireLimits:
    SECTION: ClassVar[str] = "wire"

    # BitChat FileTransferLimits.maxPayloadBytes.
    max_payload_bytes: int = setting(
        1_179_760, "Largest packet payload or originalSize accepted, in bytes.", min=1024, max=1 << 30
    )
    # As BitChat.
    max_decompression_ratio: int = setting(
        50_000, "Largest originalSize / compressed size accepted (zip-bomb guard).", min=2, max=1 << 20
    )
    # The count field is one byte.
    max_route_hops: int = setting(255, "Most hops in a v2 source route.", min=0, max=255)
    # BitChat accepts 0 < total <= 10,000.
    fragment_max_total: int = setting(10_000, "Largest fragment count accepted from a peer.", min=1, max=65_535)
    # Android keeps at most 256 per fragment ID.
    fragment_max_send_count: int = setting(256, "Most fragments we emit for one frame.", min=1, max=65_535)
    fragment_max_assemblies: int = setting(128, "Concurrent reassemblies kept (oldest evicted).", min=1, max=1_000_000)
    fragment_lifetime_s: float = setting(30.0, "Seconds an incomplete reassembly may live.", min=0.1, max=3600)
    # 1 MiB, and the larger bound for noiseEncrypted/fileTransfer originals.
    fragment_max_assembly_bytes: int = setting(1_048_576, "Bytes one reassembly may hold.", min=1024, max=1 << 30)
    fragment_max_assembly_bytes_large: int = setting(
        1_179_760, "Bytes one reassembly of a noiseEncrypted/fileTransfer frame may hold.", min=1024, max=1 << 30
    )
    # A public message is text: inflating a tiny frame to max_payload_bytes costs every node the flood reaches.
    max_message_payload_bytes: int = setting(
        262_144,
        "Largest payload of a public message (0x02) accepted, after decompression (decompression stops there).",
        min=1024,
        max=1 << 30,
    )
