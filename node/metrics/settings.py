"""The ``[metrics]`` section: the Prometheus listener (node/metrics/service.py). Standard library only."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import ClassVar

from node.errors import ConfigError
from node.schema import parse_host_port, setting

_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def is_ip_literal(host: str) -> bool:
    """``192.0.2.1`` or ``[2001:db8::1]`` (a Host header's form); a name is not."""
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class MetricsSection:
    SECTION: ClassVar[str] = "metrics"

    listen: str = setting(
        "",
        "Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464); empty: off. Requests need the "
        "bearer token `village metrics token` prints (<data dir>/metrics/token). Plain HTTP, so loopback only unless "
        "allow_non_loopback is set.",
    )
    allow_non_loopback: bool = setting(
        False,
        "Allow a non-loopback metrics.listen. The metrics (counts, your peer ID) then cross the network in plaintext "
        "to anyone who can reach the port; prefer a loopback listen and an SSH tunnel, or the anchor's /metrics.",
    )
    allowed_hosts: tuple[str, ...] = setting(
        (),
        "Host names a request may name in its Host header besides IP literals and localhost (e.g. the name Prometheus "
        "uses for a non-loopback listen). Any other Host is refused (DNS rebinding).",
    )
    max_connections: int = setting(
        16,
        "Concurrent connections to the listener; more wait in the kernel's backlog (bounds the descriptors a flood "
        "of connections can take).",
        min=1,
        max=1024,
    )
    scrape_reuse_s: float = setting(
        1.0,
        "A scrape within this many seconds of the previous one is answered from it (bounds the work a flood of "
        "requests can cause).",
        min=0,
        max=3600,
    )

    def __post_init__(self) -> None:
        for name in self.allowed_hosts:
            if not _HOST_NAME.fullmatch(name):
                raise ConfigError(f"metrics.allowed_hosts: {name!r} is not a host name (letters, digits, '-', '.')")
        if not self.listen:
            return
        host, _port = parse_host_port("metrics.listen", self.listen)
        if not is_loopback(host) and not self.allow_non_loopback:
            raise ConfigError(
                f"metrics.listen: {host!r} is not a loopback address; metrics are served over plain HTTP, so set "
                "metrics.allow_non_loopback = true to expose them on the network anyway"
            )

    def host_port(self) -> tuple[str, int]:
        return parse_host_port("metrics.listen", self.listen)
