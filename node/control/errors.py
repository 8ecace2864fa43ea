"""Control-plane errors::

ControlError (node.errors)
├── RpcError            (node.control.rpc) an error object to send back to a client
└── ClientError         the CLI could not talk to the node
    ├── NotRunning      nothing listens on the control socket
    └── RemoteCallError the node answered a call with a JSON-RPC error
"""

from __future__ import annotations

from node.errors import ControlError

TYPE_CHECKING = False  # not typing's: `village status` must not import typing (node/control/quick.py)
if TYPE_CHECKING:
    from typing import Any


class ClientError(ControlError):
    """The CLI could not complete a call."""


class NotRunning(ClientError):
    """No node is listening on the control socket."""


class RemoteCallError(ClientError):
    """The node answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data
