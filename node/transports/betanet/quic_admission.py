"""Which new QUIC connections a listener takes: the sans-IO bookkeeping behind :class:`.quic_transport.QuicListener`
(no trio, no clock, no sockets).

Sources are counted by prefix (:func:`node.ipprefix.source_prefixes`): an IPv4 address, an IPv6 /64, and for
native IPv6 also its /48. Two kinds of connection are counted apart:

* **unvalidated**: a handshake from an address nobody has proven (an Initial without a Retry token; its source
  may be spoofed). At most :attr:`Limits.max_handshakes_per_ip` per /32 or /64; beyond that, and whenever half of
  :attr:`Limits.max_handshakes` are in progress, the address gets a stateless Retry instead of state. A spoofer
  therefore cannot lock a real client of the same prefix out: the client answers the Retry and is validated.
* **validated**: established (handshake complete), or in handshake after returning a valid Retry token. At most
  :attr:`Limits.max_connections_per_ip` per /32 or /64 and :attr:`Limits.max_connections_per_ipv6_48` per /48.
  An unvalidated connection that completes its handshake when its prefix already holds its share is refused
  (:meth:`Admission.handshake_over` says why; the listener closes it).

Every handshake, validated or not, counts against :attr:`Limits.max_handshakes`, and every connection against
:attr:`Limits.max_connections`.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass

from node.ipprefix import source_prefixes
from node.transports.betanet.quic_conn import DEFAULT_MAX_STREAMS, DEFAULT_STREAM_WINDOW_BYTES


@dataclass(frozen=True, slots=True)
class Limits:
    """BetaNet's QUIC bounds (``betanet.quic_*``)."""

    stream_window_bytes: int = DEFAULT_STREAM_WINDOW_BYTES
    max_streams_per_connection: int = DEFAULT_MAX_STREAMS
    max_handshakes: int = 256
    max_handshakes_per_ip: int = 16
    max_connections: int = 1024
    max_connections_per_ip: int = 16
    max_connections_per_ipv6_48: int = 64


DEFAULT_LIMITS = Limits()


class Verdict(enum.Enum):
    ACCEPT = "accept"
    RETRY = "retry"  # answer with a stateless Retry: the client must prove its address first
    DROP = "drop"


@dataclass(slots=True)
class _Entry:
    prefix: str
    site: str | None
    validated: bool
    handshaking: bool = True


class Admission:
    """Counts of one listener's connections by source prefix, and the decision for each new Initial."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.handshaking = 0  # connections in handshake, validated or not
        self.unvalidated: dict[str, int] = {}  # handshakes from unproven addresses, by /32 or /64
        self.validated: dict[str, int] = {}  # validated connections, by /32 or /64 and by /48
        self._entries: dict[Hashable, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, host: str, *, validated: bool) -> tuple[Verdict, str]:
        """What to do with an Initial from ``host`` (``validated``: it carries a valid Retry token); with DROP,
        why (naming the config key)."""
        limits = self.limits
        prefix, site = source_prefixes(host)
        if len(self._entries) >= limits.max_connections:
            return Verdict.DROP, f"{len(self._entries)} connections (betanet.quic_max_connections)"
        if (n := self.validated.get(prefix, 0)) >= limits.max_connections_per_ip:
            return Verdict.DROP, f"{n} connections from {prefix} (betanet.quic_max_connections_per_ip)"
        if site is not None and (n := self.validated.get(site, 0)) >= limits.max_connections_per_ipv6_48:
            return Verdict.DROP, f"{n} connections from {site} (betanet.quic_max_connections_per_ipv6_48)"
        if not validated:
            if self.handshaking >= limits.max_handshakes // 2:
                return Verdict.RETRY, "handshakes under pressure"
            if self.unvalidated.get(prefix, 0) >= limits.max_handshakes_per_ip:
                return Verdict.RETRY, f"unvalidated handshakes from {prefix}"
        elif self.handshaking >= limits.max_handshakes:
            return Verdict.DROP, f"{self.handshaking} handshakes in progress (betanet.quic_max_handshakes)"
        return Verdict.ACCEPT, ""

    def opened(self, key: Hashable, host: str, *, validated: bool) -> None:
        """A connection (``key``) from ``host`` was accepted by :meth:`check` and is in handshake."""
        prefix, site = source_prefixes(host)
        entry = _Entry(prefix, site, validated)
        self._entries[key] = entry
        self.handshaking += 1
        if validated:
            self._count_validated(entry, 1)
        else:
            self.unvalidated[prefix] = self.unvalidated.get(prefix, 0) + 1

    def handshake_over(self, key: Hashable, *, completed: bool) -> str:
        """The handshake of ``key`` completed (``completed``), failed or timed out. Returns why the connection
        must be refused (its prefix already holds its share of validated connections), or ""."""
        entry = self._entries.get(key)
        if entry is None or not entry.handshaking:
            return ""
        self._end_handshake(entry)
        if not completed or entry.validated:
            return ""
        limits = self.limits
        if (n := self.validated.get(entry.prefix, 0)) >= limits.max_connections_per_ip:
            return f"{n} connections from {entry.prefix} (betanet.quic_max_connections_per_ip)"
        if entry.site is not None and (n := self.validated.get(entry.site, 0)) >= limits.max_connections_per_ipv6_48:
            return f"{n} connections from {entry.site} (betanet.quic_max_connections_per_ipv6_48)"
        entry.validated = True
        self._count_validated(entry, 1)
        return ""

    def ended(self, key: Hashable) -> None:
        """The connection ended (at any point): forget it."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        if entry.handshaking:
            self._end_handshake(entry)
        if entry.validated:
            self._count_validated(entry, -1)

    def _end_handshake(self, entry: _Entry) -> None:
        entry.handshaking = False
        self.handshaking -= 1
        if not entry.validated:
            _add(self.unvalidated, entry.prefix, -1)

    def _count_validated(self, entry: _Entry, delta: int) -> None:
        _add(self.validated, entry.prefix, delta)
        if entry.site is not None:
            _add(self.validated, entry.site, delta)


def _add(counts: dict[str, int], key: str, delta: int) -> None:
    n = counts.get(key, 0) + delta
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)
