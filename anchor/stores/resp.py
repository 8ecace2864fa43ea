"""RESP2, the Redis wire protocol, without I/O: commands encoded, replies parsed from bytes fed in any pieces.

Used by :mod:`anchor.stores.redis_native` (the gateway's hot Redis calls on trio sockets, without a worker thread per
call). Only RESP2 (what a server speaks until a client sends ``HELLO 3``): simple strings, errors, integers, bulk
strings, arrays, and the nil bulk string / nil array. A reply is ``bytes``, ``int``, ``None``, a ``list`` of replies,
or a :class:`RespError` (the server's ``-ERR ...``: a value, not raised). The server is ours, but a reply is
bounded all the same (bulk bytes, array items, nesting): anything beyond raises :class:`ProtocolError`, after which
the connection must be closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

MAX_REPLY_BYTES = 64 * 1024 * 1024  # one whole reply, buffered until complete (the gateway's are a few KB)
MAX_BULK_BYTES = MAX_REPLY_BYTES  # one bulk string (Redis's own proto-max-bulk-len default is 512 MB)
MAX_ARRAY_ITEMS = 1_000_000  # items of one array (a stream read of `count` entries is far below it)
MAX_DEPTH = 16  # nested arrays (XREADGROUP's replies nest 4 deep)
MAX_LINE_BYTES = 64 * 1024  # a status/error/integer line


class ProtocolError(Exception):
    """The bytes are not a RESP2 reply within the bounds; the connection's state is unknown."""


@dataclass(frozen=True, slots=True)
class RespError:
    """An error reply (``-PREFIX message``)."""

    message: str

    @property
    def prefix(self) -> str:
        return self.message.split(" ", 1)[0]


Reply: TypeAlias = bytes | int | RespError | list["Reply"] | None


class NeedData:
    """More bytes are needed before the next reply is complete."""


NEED_DATA = NeedData()


def _arg(value: bytes | str | int | float) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        raise TypeError("a bool is not a Redis argument (say 0/1)")
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return repr(value).encode()
    raise TypeError(f"not a Redis argument: {type(value).__name__}")


def encode_command(*args: bytes | str | int | float) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = _arg(arg)
        parts.append(b"$%d\r\n" % len(raw))
        parts.append(raw)
        parts.append(b"\r\n")
    return b"".join(parts)


class RespParser:
    """Replies from a byte stream: :meth:`feed` bytes as they arrive, then take :meth:`next_reply` until it returns
    ``NEED_DATA``. Parsing restarts from the reply's first byte when it was incomplete (replies are small here, and
    this keeps the parser free of resumable state)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes | bytearray) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_reply(self) -> Reply | NeedData:
        """The next complete reply, or ``NEED_DATA``. ProtocolError when the bytes are not RESP2 within the bounds."""
        try:
            reply, end = self._parse(self._pos, 0)
        except _Incomplete:
            if len(self._buf) - self._pos > MAX_REPLY_BYTES:
                raise ProtocolError(f"a reply longer than {MAX_REPLY_BYTES} bytes") from None
            return NEED_DATA
        self._pos = end
        return reply

    def _line(self, start: int) -> tuple[bytes, int]:
        end = self._buf.find(b"\r\n", start)
        if end < 0:
            if len(self._buf) - start > MAX_LINE_BYTES:
                raise ProtocolError("a reply line longer than the bound")
            raise _Incomplete
        if end - start > MAX_LINE_BYTES:
            raise ProtocolError("a reply line longer than the bound")
        return bytes(self._buf[start:end]), end + 2

    def _int(self, raw: bytes) -> int:
        if not raw or not (raw.isdigit() or (raw[:1] == b"-" and raw[1:].isdigit())) or len(raw) > 20:
            raise ProtocolError(f"not an integer: {raw[:32]!r}")
        return int(raw)

    def _parse(self, pos: int, depth: int) -> tuple[Reply, int]:
        if pos >= len(self._buf):
            raise _Incomplete
        kind = self._buf[pos]
        line, after = self._line(pos + 1)
        if kind == 0x2B:  # + simple string
            return line, after
        if kind == 0x2D:  # - error
            return RespError(line.decode(errors="replace")), after
        if kind == 0x3A:  # : integer
            return self._int(line), after
        if kind == 0x24:  # $ bulk string
            n = self._int(line)
            if n == -1:
                return None, after
            if not 0 <= n <= MAX_BULK_BYTES:
                raise ProtocolError(f"bulk string of {n} bytes")
            if len(self._buf) < after + n + 2:
                raise _Incomplete
            if self._buf[after + n : after + n + 2] != b"\r\n":
                raise ProtocolError("bulk string not followed by CRLF")
            return bytes(self._buf[after : after + n]), after + n + 2
        if kind == 0x2A:  # * array
            n = self._int(line)
            if n == -1:
                return None, after
            if not 0 <= n <= MAX_ARRAY_ITEMS:
                raise ProtocolError(f"array of {n} items")
            if depth >= MAX_DEPTH:
                raise ProtocolError("arrays nested deeper than the bound")
            items: list[Reply] = []
            for _ in range(n):
                item, after = self._parse(after, depth + 1)
                items.append(item)
            return items, after
        raise ProtocolError(f"unknown reply type {bytes([kind])!r}")


class _Incomplete(Exception):
    pass
