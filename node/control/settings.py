"""The ``[control]`` section: the control socket (node/control/server.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from node.errors import ConfigError
from node.schema import setting


@dataclass(frozen=True, slots=True)
class ControlSection:
    SECTION: ClassVar[str] = "control"

    socket_path: str = setting("", "Unix socket for the CLI (mode 0600). Empty: <data dir>/control.sock.")
    max_request_bytes: int = setting(
        1_048_576, "Largest JSON-RPC request line accepted, in bytes.", min=1024, max=64 * 1_048_576
    )
    max_connections: int = setting(32, "Concurrent control connections; more wait for a free slot.", min=1, max=4096)
    follow_queue_messages: int = setting(
        256,
        "Messages buffered per `inbox --follow` subscriber before it is disconnected as too slow.",
        min=1,
        max=1_000_000,
    )

    def __post_init__(self) -> None:
        # A relative path would follow the working directory of whoever starts the CLI, which then may reach another
        # user's socket (the client refuses a server that is not this user or root, but it should not look there).
        if self.socket_path and not self.socket_path.startswith("/"):
            raise ConfigError(f"control.socket_path must be an absolute path, not {self.socket_path!r}")
