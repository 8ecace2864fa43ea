"""Length-prefixed frames over a byte stream (a libp2p stream on ``/aivillage/mailbox/1.0.0``), with a bound on
the frame size and a deadline on every read and write."""

from __future__ import annotations

import contextlib
from typing import Protocol

import trio
from libp2p.io.exceptions import IOException

from node.errors import TransportError
from node.mailbox.protocol import LENGTH, MAX_FRAME_BYTES

READ_CHUNK = 65_536
STREAM_ERRORS = (IOException, OSError, trio.BrokenResourceError, trio.ClosedResourceError)  # libp2p's and trio's


class ByteStream(Protocol):
    """What the framing needs of a stream; py-libp2p's ``INetStream`` has exactly this."""

    async def read(self, n: int | None = None) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class StreamClosed(TransportError):
    """The stream ended, stalled past its deadline, or sent a frame over the size limit."""


class FramedStream:
    def __init__(self, stream: ByteStream, *, timeout_s: float, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._stream = stream
        self._timeout_s = timeout_s
        self._max = max_frame_bytes
        self._buf = bytearray()

    async def write_frame(self, body: bytes) -> None:
        try:
            with trio.fail_after(self._timeout_s):
                await self._stream.write(LENGTH.pack(len(body)) + body)
        except trio.TooSlowError:
            raise StreamClosed(f"the peer did not accept a frame within {self._timeout_s:g} s") from None
        except STREAM_ERRORS as exc:
            raise StreamClosed(f"stream write failed: {exc or type(exc).__name__}") from exc

    async def read_frame(self) -> bytes | None:
        """The next frame, or None if the peer closed the stream cleanly between frames."""
        try:
            with trio.fail_after(self._timeout_s):
                while True:
                    if len(self._buf) >= LENGTH.size:
                        (n,) = LENGTH.unpack_from(self._buf)
                        if n > self._max:
                            raise StreamClosed(f"the peer sent a {n}-byte frame (limit {self._max})")
                        if len(self._buf) >= LENGTH.size + n:
                            body = bytes(self._buf[LENGTH.size : LENGTH.size + n])
                            del self._buf[: LENGTH.size + n]
                            return body
                    chunk = await self._stream.read(READ_CHUNK)
                    if not chunk:
                        if self._buf:
                            raise StreamClosed("the stream ended in the middle of a frame")
                        return None
                    self._buf += chunk
        except trio.TooSlowError:
            raise StreamClosed(f"no complete frame within {self._timeout_s:g} s") from None
        except EOFError:  # libp2p's StreamEOF: the peer closed its side
            if self._buf:
                raise StreamClosed("the stream ended in the middle of a frame") from None
            return None
        except STREAM_ERRORS as exc:
            raise StreamClosed(f"stream read failed: {exc or type(exc).__name__}") from exc

    async def request(self, body: bytes) -> bytes:
        await self.write_frame(body)
        reply = await self.read_frame()
        if reply is None:
            raise StreamClosed("the peer closed the stream without an answer")
        return reply

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(2), contextlib.suppress(*STREAM_ERRORS):
            await self._stream.close()
