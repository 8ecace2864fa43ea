"""RESP2 without I/O (anchor.stores.resp): replies parsed whatever the pieces the bytes arrive in, bounds, and
commands encoded as redis-py encodes them (a client nobody here wrote)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.connection import Connection

from anchor.stores import resp
from anchor.stores.resp import NEED_DATA, ProtocolError, Reply, RespError, RespParser, encode_command


def _encode_reply(reply: Reply) -> bytes:
    """A reply as a server sends it (the test's own encoder: the parser must invert it)."""
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, RespError):
        return b"-" + reply.message.encode() + b"\r\n"
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    return b"*%d\r\n" % len(reply) + b"".join(_encode_reply(item) for item in reply)


replies = st.recursive(
    st.none()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.binary(max_size=64)
    | st.builds(RespError, st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefgh:0123", min_size=1, max_size=40)),
    lambda children: st.lists(children, max_size=6),
    max_leaves=30,
)


def _parse_all(parser: RespParser) -> list[Reply]:
    out: list[Reply] = []
    while not isinstance(reply := parser.next_reply(), resp.NeedData):
        out.append(reply)
    return out


@given(st.lists(replies, min_size=1, max_size=5), st.lists(st.integers(min_value=1, max_value=50), max_size=40))
def test_replies_split_at_any_points_parse_to_the_same_values(values: list[Reply], cuts: list[int]) -> None:
    wire = b"".join(_encode_reply(v) for v in values)
    parser = RespParser()
    got: list[Reply] = []
    pos = 0
    for cut in cuts:
        parser.feed(wire[pos : pos + cut])
        pos += cut
        got += _parse_all(parser)
    parser.feed(wire[pos:])
    got += _parse_all(parser)
    assert got == values
    assert parser.buffered == 0


def test_simple_strings_nil_array_and_an_incomplete_reply() -> None:
    parser = RespParser()
    parser.feed(b"+OK\r\n*-1\r\n*2\r\n$3\r\nfoo\r\n:4")
    assert parser.next_reply() == b"OK"
    assert parser.next_reply() is None
    assert parser.next_reply() is NEED_DATA  # the array's second item is not complete yet
    parser.feed(b"2\r\n")
    assert parser.next_reply() == [b"foo", 42]
    assert parser.next_reply() is NEED_DATA


@pytest.mark.parametrize(
    "wire",
    [
        b"?what\r\n",  # unknown type
        b":12a\r\n",  # not an integer
        b"$-2\r\n",  # negative length
        b"$3\r\nabcd\r\n",  # bulk not followed by CRLF
        b"*%d\r\n" % (resp.MAX_ARRAY_ITEMS + 1),
        b"$%d\r\n" % (resp.MAX_BULK_BYTES + 1),
        b"*1\r\n" * (resp.MAX_DEPTH + 1) + b":1\r\n",
        b"+" + b"x" * (resp.MAX_LINE_BYTES + 1),  # a line without its end, beyond the bound
    ],
)
def test_what_is_not_resp2_within_the_bounds_is_a_protocol_error(wire: bytes) -> None:
    parser = RespParser()
    parser.feed(wire)
    with pytest.raises(ProtocolError):
        parser.next_reply()


def test_an_incomplete_reply_is_buffered_up_to_the_bound_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resp, "MAX_REPLY_BYTES", 1000)
    parser = RespParser()
    parser.feed(b"*2\r\n$900\r\n" + b"x" * 900 + b"\r\n$900\r\n" + b"x" * 100)
    with pytest.raises(ProtocolError):
        parser.next_reply()


@pytest.mark.parametrize(
    "args",
    [
        ("PING",),
        ("SET", "k", b"\x00\xff\r\n", 12),
        ("EVALSHA", "a" * 40, 2, "aiv:x", "aiv:y", "é", 0, -5, 1.5, 1e-7, b""),
    ],
)
def test_commands_are_encoded_as_redis_py_encodes_them(args: tuple[bytes | str | int | float, ...]) -> None:
    packed: list[bytes] = Connection().pack_command(*args)  # type: ignore[no-untyped-call]
    assert encode_command(*args) == b"".join(packed)


def test_a_bool_is_no_redis_argument() -> None:
    with pytest.raises(TypeError):
        encode_command("SET", "k", True)


def test_a_reply_cut_in_many_pieces_is_parsed_once_not_again_per_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    # 20,000 empty arrays in one reply, fed 100 bytes at a time: a parser that restarts from the reply's first
    # byte on every piece reads ~40 million lines; a resumable one reads each line once (+ one try per piece).
    lines = 0
    real_line = RespParser._line

    def counting(self: RespParser, *args: int) -> object:
        nonlocal lines
        lines += 1
        return real_line(self, *args)

    monkeypatch.setattr(RespParser, "_line", counting)
    items = 20_000
    monkeypatch.setattr(resp, "MAX_ARRAY_ITEMS", items)
    wire = b"*%d\r\n" % items + b"*0\r\n" * items
    parser = RespParser()
    pieces = 0
    reply: Reply | resp.NeedData = NEED_DATA
    for start in range(0, len(wire), 100):
        parser.feed(wire[start : start + 100])
        pieces += 1
        reply = parser.next_reply()
        if not isinstance(reply, resp.NeedData):
            break
    assert reply == [[]] * items
    assert lines <= items + 1 + pieces


def test_a_reply_over_the_calls_bound_is_refused_at_its_header_not_buffered() -> None:
    parser = RespParser()
    parser.feed(b"$%d\r\n" % (4096 + 1))  # announced, not sent: refused before any of it is buffered
    with pytest.raises(ProtocolError, match="bound"):
        parser.next_reply(max_reply_bytes=4096)
    parser = RespParser()
    parser.feed(b"*3\r\n$2000\r\n" + b"x" * 2000 + b"\r\n$2100\r\n")  # the second bulk would pass the bound
    with pytest.raises(ProtocolError):
        parser.next_reply(max_reply_bytes=4096)
    parser = RespParser()
    parser.feed(b"*2\r\n$2000\r\n" + b"x" * 2000 + b"\r\n$1000\r\n" + b"y" * 1000 + b"\r\n")
    assert parser.next_reply(max_reply_bytes=4096) == [b"x" * 2000, b"y" * 1000]


def test_arrays_and_values_per_reply_are_bounded() -> None:
    parser = RespParser()
    parser.feed(b"*%d\r\n" % 100_000)  # far more items than any reply the gateway asks for
    with pytest.raises(ProtocolError, match="array"):
        parser.next_reply()
    parser = RespParser()
    wide = b"*4000\r\n" + b"*0\r\n" * 4000
    parser.feed(b"*%d\r\n" % 20 + wide * 20)  # 80,000 values in small arrays
    with pytest.raises(ProtocolError, match="values"):
        parser.next_reply()
