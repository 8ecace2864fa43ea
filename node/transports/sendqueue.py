"""The queue of frames waiting to be written on one link, bounded in frames *and* bytes.

The mesh core hands the node frames for a link faster than a slow (or hostile, never-reading) peer takes them.
A queue bounded in frames only holds up to frames x MTU bytes (256 x 1.2 MB on BetaNet); this one also refuses
a frame once the bytes already queued plus the frame would pass ``max_bytes``. A frame is always accepted into
an empty queue (a single frame is bounded by the link's MTU), so a large frame is never refused forever.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio


class LinkSendQueue:
    """Sender side: :meth:`send_nowait` (raises ``trio.WouldBlock`` when full, ``trio.ClosedResourceError``
    after :meth:`close`). Receiver side: ``async for frame in queue`` until closed and drained."""

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self._send, self._recv = trio.open_memory_channel[bytes](max_frames)
        self._closed = False

    @property
    def queued_frames(self) -> int:
        return self._send.statistics().current_buffer_used

    def send_nowait(self, frame: bytes) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the link's send queue is closed")
        if self.queued_bytes and self.queued_bytes + len(frame) > self.max_bytes:
            raise trio.WouldBlock
        self._send.send_nowait(frame)
        self.queued_bytes += len(frame)

    def close(self) -> None:
        self._closed = True
        self._send.close()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for frame in self._recv:
            self.queued_bytes -= len(frame)
            yield frame
