"""Fault isolation with accounting: a failure while handling one frame or one timer task ends that frame or task
only, is counted by cause and logged once per cause with the peer it came from.

Two kinds (h11's local/remote split): an error of our own tree (:class:`~node.errors.NodeError`: a malformed
payload a handler parsed late, an encoding the format cannot carry) is *expected* — remote input can cause it —
and counted in ``contained_errors``; anything else is a *bug* and counted in ``contained_bugs``, which the
adversarial tests assert stays zero, so containment never hides a bug. Sans-IO: logging only, no I/O of its own.
"""

from __future__ import annotations

import logging

from node.errors import NodeError
from node.routing.events import MeshCounters

log = logging.getLogger("village.routing")
MAX_CAUSES = 64  # distinct causes counted (exception class names come from code, so this is never reached)


class Containment:
    def __init__(self, counters: MeshCounters) -> None:
        self.counters = counters
        self.by_cause: dict[str, int] = {}  # "error:MalformedFrame" / "bug:KeyError" -> count

    def contain(self, exc: BaseException, where: str, peer: bytes | None) -> None:
        bug = not isinstance(exc, NodeError)
        if bug:
            self.counters.contained_bugs += 1
        else:
            self.counters.contained_errors += 1
        cause = f"{'bug' if bug else 'error'}:{type(exc).__name__}"
        first = cause not in self.by_cause
        if first and len(self.by_cause) >= MAX_CAUSES:
            cause, first = "other", "other" not in self.by_cause
        self.by_cause[cause] = self.by_cause.get(cause, 0) + 1
        if first:
            who = peer.hex() if peer else "unknown peer"
            if bug:
                log.error("bug contained while handling %s from %s (dropped; logged once)", where, who, exc_info=exc)
            else:
                log.warning("%s from %s dropped: %s (logged once per cause)", where, who, exc)
