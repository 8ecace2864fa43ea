"""Twin errors::

NodeError (node.errors)
└── TwinError                anything the personal model refuses or cannot do
    ├── PriorMissing         the shipped global prior file is absent or unreadable (reinstall the package)
    ├── TwinStoreError       the twin's state file is unusable (wrong version, corrupt, over its bound)
    ├── LearningPaused       the governor does not allow learning now (the reason is in the message)
    └── AskError             ``ask`` cannot take the request (empty, too long, an agent named with the agents off)
"""

from __future__ import annotations

from node.errors import NodeError


class TwinError(NodeError):
    """Base for personal-model failures visible to the user."""


class PriorMissing(TwinError):
    """The shipped global prior is missing or corrupt."""


class TwinStoreError(TwinError):
    """The twin's on-disk state cannot be used."""


class LearningPaused(TwinError):
    """Learning is not allowed now (battery, heat or CPU budget)."""


class AskError(TwinError):
    """``ask`` (node.twin.ask) cannot take this request."""
