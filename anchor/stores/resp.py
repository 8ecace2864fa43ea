"""RESP2, the Redis wire protocol, without I/O: commands encoded, replies parsed from bytes fed in any pieces.

Used by :mod:`anchor.stores.redis_native` (the gateway's hot Redis calls on trio sockets, without a worker thread per
call). Only RESP2 (what a server speaks until a client sends ``HELLO 3``): simple strings, errors, integers, bulk
strings, arrays, and the nil bulk string / nil array. A reply is ``bytes``, ``int``, ``None``, a ``list`` of replies,
or a :class:`RespError` (the server's ``-ERR ...``: a value, not raised). The server is ours, but a reply is
bounded all the same (its bytes — a bound per call, e.g. a few KB for a script's answer —, bulk bytes, array items,
values, nesting; a bulk string longer than the bound is refused at its header, not buffered first): anything beyond
raises :class:`ProtocolError`, after which the connection must be closed. Parsing is resumable (linear in the bytes,
whatever pieces they come in), so a hostile or broken server cannot make a reply cost more than its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

MAX_REPLY_BYTES = 64 * 1024 * 1024  # one whole reply, at most (each call passes a tighter bound sized to its need)
MAX_BULK_BYTES = MAX_REPLY_BYTES  # one bulk string (Redis's own proto-max-bulk-len default is 512 MB)
MAX_ARRAY_ITEMS = 4096  # items of one array (a stream read of `count` <= 256 entries is far below it)
MAX_REPLY_ITEMS = 65_536  # values in one reply, nested ones included (a read of 256 entries: a few thousand)
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
    ``NEED_DATA``. Resumable: a reply that is not complete keeps what was parsed of it (the open arrays, a bulk
    string's announced length, where the search for a line's end stopped), so every byte is examined once however
    the reply is cut into pieces."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # first byte not consumed
        self._scan = 0  # where the search for the next CRLF resumes (bytes before it hold none)
        self._stack: list[tuple[list[Reply], int]] = []  # the open arrays of the current reply: items so far, count
        self._bulk = -1  # a bulk string whose header was consumed: its length; its bytes are not all here yet
        self._reply_bytes = 0  # bytes of the current reply consumed so far
        self._reply_items = 0  # values of the current reply so far

    def feed(self, data: bytes | bytearray) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._scan = max(0, self._scan - self._pos)
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_reply(self, max_reply_bytes: int = MAX_REPLY_BYTES) -> Reply | NeedData:
        """The next complete reply, or ``NEED_DATA``. ProtocolError when the bytes are not RESP2 within the bounds
        (``max_reply_bytes``: the caller's bound for this reply, at most MAX_REPLY_BYTES)."""
        limit = min(max_reply_bytes, MAX_REPLY_BYTES)
        while True:
            value = self._value(limit)
            if value is _MORE:
                if self._reply_bytes + self.buffered > limit:
                    raise ProtocolError(f"a reply longer than {limit} bytes")
                return NEED_DATA
            if value is _OPENED:
                continue
            self._reply_items += 1
            if self._reply_items > MAX_REPLY_ITEMS:
                raise ProtocolError(f"a reply of more than {MAX_REPLY_ITEMS} values")
            done = True
            while self._stack:
                items, count = self._stack[-1]
                items.append(value)  # type: ignore[arg-type]
                if len(items) < count:
                    done = False
                    break
                self._stack.pop()
                value = items
            if done:
                self._reply_bytes = self._reply_items = 0
                return value  # type: ignore[return-value]

    def _consume(self, end: int, limit: int) -> None:
        self._reply_bytes += end - self._pos
        self._pos = end
        if self._reply_bytes > limit:
            raise ProtocolError(f"a reply longer than {limit} bytes")

    def _line(self) -> bytes | None:
        """The line after the type byte at ``_pos`` (consumed with it), or None until its CRLF is here."""
        start = self._pos + 1
        end = self._buf.find(b"\r\n", max(start, self._scan))
        if end < 0:
            if len(self._buf) - start > MAX_LINE_BYTES:
                raise ProtocolError("a reply line longer than the bound")
            self._scan = max(start, len(self._buf) - 1)  # a CR at the very end may get its LF next
            return None
        if end - start > MAX_LINE_BYTES:
            raise ProtocolError("a reply line longer than the bound")
        self._scan = end + 2
        return bytes(self._buf[start:end])

    def _value(self, limit: int) -> object:
        """One value at ``_pos``: the value, ``_OPENED`` (an array with items was opened), or ``_MORE``."""
        if self._bulk >= 0:
            n = self._bulk
            if len(self._buf) - self._pos < n + 2:
                return _MORE
            if self._buf[self._pos + n : self._pos + n + 2] != b"\r\n":
                raise ProtocolError("bulk string not followed by CRLF")
            raw = bytes(self._buf[self._pos : self._pos + n])
            self._bulk = -1
            self._consume(self._pos + n + 2, limit)
            return raw
        if self._pos >= len(self._buf):
            return _MORE
        kind = self._buf[self._pos]
        line = self._line()
        if line is None:
            return _MORE
        self._consume(self._scan, limit)
        if kind == 0x2B:  # + simple string
            return line
        if kind == 0x2D:  # - error
            return RespError(line.decode(errors="replace"))
        if kind == 0x3A:  # : integer
            return _int(line)
        if kind == 0x24:  # $ bulk string
            n = _int(line)
            if n == -1:
                return None
            if not 0 <= n <= min(MAX_BULK_BYTES, limit - self._reply_bytes):
                raise ProtocolError(f"bulk string of {n} bytes (the bound for this reply is {limit})")
            self._bulk = n
            return self._value(limit)
        if kind == 0x2A:  # * array
            n = _int(line)
            if n == -1:
                return None
            if not 0 <= n <= MAX_ARRAY_ITEMS:
                raise ProtocolError(f"array of {n} items")
            if n == 0:
                return []
            if len(self._stack) >= MAX_DEPTH:
                raise ProtocolError("arrays nested deeper than the bound")
            self._stack.append(([], n))
            return _OPENED
        raise ProtocolError(f"unknown reply type {bytes([kind])!r}")


def _int(raw: bytes) -> int:
    if not raw or not (raw.isdigit() or (raw[:1] == b"-" and raw[1:].isdigit())) or len(raw) > 20:
        raise ProtocolError(f"not an integer: {raw[:32]!r}")
    return int(raw)


_MORE = object()  # more bytes needed
_OPENED = object()  # an array was opened; its items follow
