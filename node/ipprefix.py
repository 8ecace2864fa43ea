"""Which network prefix a remote address belongs to, for per-source bounds (the QUIC listener's, the anchor
gateway's rate limits).

Keying a bound on the full address lets one IPv6 subscriber, who holds a whole /64 (2^64 addresses), take 2^64
shares. So an IPv4 address counts as itself (/32), a native IPv6 address by its /64 and also by its /48 (a free
tunnel-broker /48, or a /56 home delegation, holds many /64s; the caller gives that larger prefix a larger
share), and an IPv6 address that embeds an IPv4 one (IPv4-mapped ``::ffff:192.0.2.7``, 6to4 ``2002:c000:0207::``,
NAT64 ``64:ff9b::192.0.2.7``) as that IPv4 address. Anything that is not an address is its own key.
"""

from __future__ import annotations

import ipaddress

IPV6_CLIENT_PREFIX = 64  # what one subscriber (or one cloud VM) holds
IPV6_SITE_PREFIX = 48  # what one site (or one tunnel-broker account) holds
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix: the IPv4 client in the low 32 bits


def source_prefixes(host: str) -> tuple[str, str | None]:
    """(the address's own key: IPv4 /32 or IPv6 /64, the IPv6 /48 for a native IPv6 address or else None)."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])  # without a zone index (fe80::1%eth0)
    except ValueError:
        return host, None
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = addr.ipv4_mapped or addr.sixtofour
        if embedded is None and addr in _NAT64:
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFF_FFFF)
        if embedded is not None:
            return str(embedded), None
        return (
            str(ipaddress.IPv6Network((addr, IPV6_CLIENT_PREFIX), strict=False)),
            str(ipaddress.IPv6Network((addr, IPV6_SITE_PREFIX), strict=False)),
        )
    return str(addr), None
