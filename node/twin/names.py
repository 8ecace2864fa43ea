"""The twin's light definitions: the event record, its kinds and the state file's name.

Importable without numpy: the twin service queues events and answers for its files before the engine
(:mod:`node.twin.engine`, numpy and the shipped prior) loads at the first event, so an idle node never imports it.
:mod:`node.twin.engine` and :mod:`node.twin.store` re-export these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TEXT_KINDS = ("message", "query")
EMBEDDED_KINDS = ("query", "document")
KINDS = ("message", "query", "document", "command")
STATE_FILE = "state.bin"  # under <data dir>/twin


def forget_files(directory: Path) -> int:
    """Delete every file under the twin's directory, and the directory; returns the number of bytes erased. Here,
    not in :mod:`node.twin.store`, so a forget never needs the engine's modules (numpy) to load."""
    erased = 0
    if not directory.exists():
        return 0
    for p in sorted(directory.rglob("*"), reverse=True):
        if p.is_file() or p.is_symlink():
            erased += p.lstat().st_size
            p.unlink()
        elif p.is_dir():
            p.rmdir()
    directory.rmdir()
    return erased


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
