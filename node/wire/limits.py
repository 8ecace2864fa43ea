"""Size and count limits of the wire codec: every bound the decoder enforces is a value here.

The defaults are BitChat's (see ``BITCHAT.md`` §1.5 and §2.3); the ``[wire]`` config section overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WireLimits:
    # Largest payloadLength / originalSize accepted (bytes); BitChat FileTransferLimits.maxPayloadBytes.
    max_payload_bytes: int = 1_179_760
    # Largest originalSize / compressed-length ratio accepted (a zip-bomb guard), as BitChat.
    max_decompression_ratio: int = 50_000
    # Most hops a v2 source route may carry (the count field is one byte).
    max_route_hops: int = 255
    # Largest fragment `total` accepted from a peer (BitChat accepts 0 < total <= 10,000).
    fragment_max_total: int = 10_000
    # Most fragments we emit for one frame (Android keeps at most 256 per fragment ID).
    fragment_max_send_count: int = 256
    # Concurrent reassemblies kept; the oldest is evicted beyond this.
    fragment_max_assemblies: int = 128
    # Seconds an incomplete reassembly may live.
    fragment_lifetime_s: float = 30.0
    # Bytes one reassembly may hold (1 MiB), and the larger bound for noiseEncrypted/fileTransfer originals.
    fragment_max_assembly_bytes: int = 1_048_576
    fragment_max_assembly_bytes_large: int = 1_179_760
