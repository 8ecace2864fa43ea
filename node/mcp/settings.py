"""The ``[mcp]`` settings section: transports, which state-changing tools each transport may call, rate limits,
and the bounds of persistent and working memory.

Patterns in ``allow``/``deny`` are ``TRANSPORT:TOOL`` (shell wildcards on both sides; a bare ``TOOL`` means every
transport). They apply to state-changing tools only (read-only tools are governed by scopes alone): such a tool
may be called over a transport when some ``allow`` pattern matches and no ``deny`` pattern does.
Transports: ``stdio`` (`village mcp`), ``http`` (Streamable HTTP on loopback), ``local`` (the twin), ``agents``
(the node's agents, one client per agent: ``agents:Coordinator``), ``gateway`` (the anchor's ``/mcp``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import ClassVar

from node.errors import ConfigError
from node.schema import setting

TRANSPORTS = ("stdio", "http", "local", "gateway", "agents")


_s = setting


@dataclasses.dataclass(frozen=True, slots=True)
class McpSettings:
    SECTION: ClassVar[str] = "mcp"

    enabled: bool = _s(True, "Serve the node's tools over MCP (`village mcp`, and HTTP when http_listen is set).")
    http_listen: str = _s(
        "",
        "Serve Streamable HTTP MCP at http://HOST:PORT/mcp, loopback only (e.g. 127.0.0.1:8765); empty: off. "
        "Clients authenticate with the bearer token `village mcp token` prints.",
    )
    allow: tuple[str, ...] = _s(
        ("*:*",), "State-changing tools a transport may call: TRANSPORT:TOOL patterns (wildcards allowed)."
    )
    deny: tuple[str, ...] = _s((), "State-changing tools refused even when allowed: TRANSPORT:TOOL patterns.")
    rag_roots: tuple[str, ...] = _s(
        (), "Folders whose files the rag_add tool may ingest (absolute paths); empty: rag_add is refused."
    )
    rag_add_max_held_bytes: int = _s(
        64 * 1024 * 1024,
        "File bytes all rag_add calls together hold at once (one file at a time each; a larger file is skipped).",
        min=1024 * 1024,
        max=1 << 30,
    )
    state_calls_per_min: float = _s(
        120.0, "State-changing tool calls one client may make per minute on average.", min=1, max=1_000_000
    )
    state_calls_burst: int = _s(30, "State-changing tool calls one client may make at once.", min=1, max=100_000)
    memory_max_entities: int = _s(100_000, "Entities the knowledge-graph memory keeps.", min=10, max=10_000_000)
    memory_max_relations: int = _s(200_000, "Relations the knowledge-graph memory keeps.", min=10, max=10_000_000)
    memory_max_bytes: int = _s(
        64 * 1024 * 1024, "UTF-8 bytes of names, types and observations the memory keeps.", min=4096, max=1 << 34
    )
    memory_max_string_bytes: int = _s(
        65_536, "Longest name, type or observation accepted, in UTF-8 bytes.", min=64, max=16 * 1024 * 1024
    )
    working_max_bytes_per_client: int = _s(
        1024 * 1024, "Working memory (scratch) one client may hold, in bytes (keys + values).", min=1024, max=1 << 30
    )
    working_max_clients: int = _s(
        256, "Clients with working memory kept at once (the least recently used is dropped).", min=1, max=100_000
    )
    working_max_ttl_s: float = _s(
        86_400.0, "Longest time a scratch entry lives; also the default TTL.", min=1, max=30 * 86_400
    )
    audit_max_bytes: int = _s(
        16 * 1024 * 1024,
        "Size of the tool-call audit log before it is rotated (one old file kept).",
        min=4096,
        max=1 << 34,
    )
    http_max_sessions: int = _s(64, "Streamable HTTP sessions kept at once.", min=1, max=100_000)
    http_max_connections: int = _s(
        32,
        "Concurrent connections to the Streamable HTTP listener; more wait in the kernel's backlog (bounds the "
        "descriptors a flood of connections can take).",
        min=1,
        max=4096,
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            lo, hi = f.metadata.get("min"), f.metadata.get("max")
            value = getattr(self, f.name)
            if lo is not None and not lo <= value <= hi:
                raise ConfigError(f"mcp.{f.name}: expected a value from {lo:g} to {hi:g}, got {value!r}")
        for key in ("allow", "deny"):
            for pattern in getattr(self, key):
                transport, sep, tool = pattern.partition(":")
                if not isinstance(pattern, str) or not pattern or (sep and not tool) or (sep and not transport):
                    raise ConfigError(f"mcp.{key}: {pattern!r} is not TRANSPORT:TOOL or TOOL")
        if self.http_listen:
            http_host_port(self.http_listen)

    def host_port(self) -> tuple[str, int]:
        return http_host_port(self.http_listen)


def http_host_port(listen: str) -> tuple[str, int]:
    """``127.0.0.1:8765`` / ``[::1]:8765`` / ``localhost:0`` -> (host, port); refuses non-loopback hosts."""
    host, sep, port_s = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_s.isdigit() or not 0 <= int(port_s) <= 65_535:
        raise ConfigError(f"mcp.http_listen: expected HOST:PORT, got {listen!r}")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConfigError(
                f"mcp.http_listen: {host!r} is not a loopback address; the node serves MCP over HTTP on loopback "
                "only (use the anchor gateway's /mcp for remote clients)"
            )
    return host, int(port_s)
