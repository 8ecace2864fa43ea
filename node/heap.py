"""The garbage collector after start-up: collect once, then freeze what is alive (``[node] gc_freeze``).

CPython's cyclic collector runs a full (generation 2) collection now and then, and a full collection walks every
container object the process tracks. A node with its plugins holds ~150,000 of them once started (imported
modules, py-libp2p, FastAPI and pydantic on an anchor, the node's own state), almost all alive for the process's
whole life, so each full collection paused the event loop for 50-250 ms (measured on the anchor's gateway, where
that pause set the p99 latency of ``POST /v1/messages``: bench/README.md, branch gwp99). After
:func:`freeze_startup_heap` those objects sit in the collector's permanent generation, which it never walks again:
a full collection then walks what was made since start-up (~2 ms in the same benchmark).

The cost, bounded and one-off: an object alive at start-up that becomes part of an unreachable cycle later is
never freed, nor is anything it references at that moment (reference counting still frees everything not in a
cycle): bounded by what the frozen objects hold when they die, and each dies at most once. The collection right
before the freeze keeps garbage that exists already out of the permanent generation. The daemon freezes after its
services started and before its transports start (:func:`node.daemon._freeze_heap`): no peer's link and no link
input is in the frozen heap; state persisted from earlier runs (identity pins) and requests a service already
listening (an anchor's gateway) holds at that moment may be.

Process-wide state: only the daemon's entry point (:func:`node.daemon.run_daemon`) calls this, once, never a
library object (tests run many nodes in one process).
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect every generation, then move every tracked object into the permanent generation; how many objects
    the permanent generation holds afterwards."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
