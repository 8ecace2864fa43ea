"""Declaring a settings section: :func:`setting` fields with help, range and choices. Standard library only, no I/O.

A section is a ``@dataclass(frozen=True, slots=True)`` with ``SECTION: ClassVar[str]`` (its TOML table name),
declared beside the code it configures, each field a :func:`setting` whose name carries its unit
(``path_ttl_s``, ``max_fragment_bytes``). The loader (:mod:`node.settings`) checks each key's type, range and
choices from this metadata; checks across fields live in the section's ``__post_init__`` and raise
:class:`~node.errors.ConfigError` naming the key (``rag.chunk_overlap_chars``).

Sans-IO cores (wire, routing, ...) import this module, never the loader.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from node.errors import ConfigError


def setting(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field of a settings section, documented in ``village config example``."""
    meta: dict[str, Any] = {"help": help}
    if min is not None:
        meta["min"] = min
    if max is not None:
        meta["max"] = max
    if choices is not None:
        meta["choices"] = choices
    return field(default=default, metadata=meta)


def check_utf8_bytes(key: str, value: str, limit: int) -> None:
    if len(value.encode()) > limit:
        raise ConfigError(f"{key}: expected at most {limit} UTF-8 bytes")


def parse_host_port(key: str, value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8000`` for IPv6) -> (host, port); a ConfigError naming ``key`` otherwise."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{key}: expected HOST:PORT such as 127.0.0.1:8000, got {value!r}")
    return host, int(port)
