"""The root of every error this project raises on purpose.

Each package has its own ``errors.py`` whose classes derive from the ones here::

    NodeError
    ├── ConfigError                 bad or unknown config key (node.settings)
    ├── IdentityError               missing/corrupt key files (node.identity)
    │   └── KeyPermissionError      key file readable by group/others
    ├── StartupError                the daemon could not start (port in use, socket busy, ...)
    ├── ProtocolError               (node.wire.errors)
    │   ├── MalformedFrame          untrusted bytes from the network did not parse
    │   └── EncodeError             we asked the encoder for something the format cannot carry
    ├── CryptoError                 (node.crypto.errors)
    ├── TransportError              (node.transports.base)
    │   └── LinkClosed
    ├── MeshError                   (node.routing.errors)
    └── ControlError                (node.control.errors)

Remote errors (the peer sent garbage) are separated from local ones (we misused an API), as h11 does:
callers drop and count remote errors; local ones are bugs or user mistakes and are reported.
"""

from __future__ import annotations


class NodeError(Exception):
    """Base class for every error raised deliberately by the node."""


class ConfigError(NodeError):
    """A configuration value is missing, unknown or of the wrong form. The message names the key."""


class IdentityError(NodeError):
    """The node identity (key files) is missing, corrupt or unusable."""


class KeyPermissionError(IdentityError):
    """A key file can be read by group or others."""


class StartupError(NodeError):
    """The daemon could not start; the message says why and how to fix it."""


class ProtocolError(NodeError):
    """Base for wire-format errors."""


class CryptoError(NodeError):
    """Base for cryptographic failures."""


class TransportError(NodeError):
    """Base for transport/link failures."""


class MeshError(NodeError):
    """Base for messaging/routing failures visible to the user (unknown peer, text too long...)."""


class ControlError(NodeError):
    """Base for control-socket failures."""
