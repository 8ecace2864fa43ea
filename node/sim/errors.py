"""Simulator errors::

NodeError (node.errors)
└── SimError    local: a scenario the simulator cannot run (bad link model, unknown node, disconnected
                topology where a connected one was required, a core whose timer never advances)

The simulator drives cores with well-formed calls only; remote errors (bytes a core refuses) are the
cores' to drop and count, never raised here.
"""

from __future__ import annotations

from node.errors import NodeError


class SimError(NodeError):
    """A simulation was configured or driven in a way it cannot run; the message says which value."""
