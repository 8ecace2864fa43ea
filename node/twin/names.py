"""The twin's light definitions: the event record, its kinds and the state file's name.

Importable without numpy: the twin service queues events and answers for its files before the engine
(:mod:`node.twin.engine`, numpy and the shipped prior) loads at the first event, so an idle node never imports it.
:mod:`node.twin.engine` and :mod:`node.twin.store` re-export these names.
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT_KINDS = ("message", "query")
EMBEDDED_KINDS = ("query", "document")
KINDS = ("message", "query", "document", "command")
STATE_FILE = "state.bin"  # under <data dir>/twin


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    text: str
    action: str | None
    at_ms: int
    contact: str | None = None  # the recipient of a sent message (frequent contacts are personal context)

    @property
    def size_bytes(self) -> int:
        return len(self.text.encode("utf-8", "replace")) + 64
