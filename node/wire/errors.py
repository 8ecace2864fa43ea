"""Wire-format errors::

ProtocolError (node.errors)
├── MalformedFrame   remote: bytes from the network do not parse (callers drop and count them)
└── EncodeError      local: the format cannot carry what we asked to encode
"""

from __future__ import annotations

from node.errors import ProtocolError


class MalformedFrame(ProtocolError):
    """Untrusted bytes did not parse. The only exception any ``*_untrusted`` function raises."""


class EncodeError(ProtocolError):
    """Local: a value does not fit the BitChat format (wrong ID length, too many hops, ...)."""
