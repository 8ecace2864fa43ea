"""A live control server fed random lines (issue 13, item 6): garbage, mutated requests, deep nesting, bare
notifications, oversized lines and half-sent lines on many connections. Every answer is one well-formed JSON-RPC
line, the server never hangs up on a line it can parse, and an honest call still works after every batch."""

from __future__ import annotations

import json
import random
from pathlib import Path

import trio

from node.control.rpc import INTERNAL_ERROR
from tests.control.test_server import call, sock_dir, start_server

__all__ = ["sock_dir"]  # (the fixture)

MAX_REQUEST_BYTES = 4096


def random_line(rng: random.Random) -> bytes:
    kind = rng.randrange(8)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 300)).replace(b"\n", b" ")
    if kind == 1:
        return b"[" * rng.randrange(1, MAX_REQUEST_BYTES)  # deep nesting
    req: dict[str, object] = {
        "jsonrpc": rng.choice(["2.0", "1.0", 2, None]),
        "method": rng.choice(["echo", "count", "fail", "nope", "", 5, None, "rpc.methods"]),
    }
    if rng.random() < 0.8:
        req["id"] = rng.choice([1, "a", None, True, 1.5, [], 2**70])
    if rng.random() < 0.8:
        req["params"] = rng.choice(
            [{"text": "x"}, {"text": "x", "times": rng.randrange(-5, 5)}, [], "p", {"times": "2"}, {"text": 1}, None]
        )
    line = bytearray(json.dumps(req).encode())
    for _ in range(rng.randrange(0, 3) if kind >= 6 else 0):
        i = rng.randrange(len(line))
        line[i] = rng.randrange(256)
    return bytes(line).replace(b"\n", b" ")


async def _answers(stream: trio.SocketStream, expect_lines: int) -> list[dict[str, object]]:
    buf = b""
    out: list[dict[str, object]] = []
    with trio.move_on_after(10):
        while buf.count(b"\n") < expect_lines:
            data = await stream.receive_some(65536)
            if not data:
                break
            buf += data
    for raw in buf.split(b"\n"):
        if raw:
            msg = json.loads(raw)
            assert msg.get("jsonrpc") == "2.0"
            out.append(msg)
    return out


async def test_random_lines_never_break_the_server(nursery: trio.Nursery, sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    await start_server(nursery, path, max_request_bytes=MAX_REQUEST_BYTES)
    rng = random.Random(13)
    internal = 0
    for _ in range(30):
        stream = await trio.open_unix_socket(str(path))
        lines = [random_line(rng) for _ in range(rng.randrange(1, 15))]
        # a final call with an id, so we know when the server has answered everything before it
        lines.append(b'{"jsonrpc":"2.0","id":"end","method":"echo","params":{"text":"ok"}}')
        await stream.send_all(b"\n".join(lines) + b"\n")
        answers = await _answers(stream, 1)
        while not any(a.get("id") == "end" for a in answers):
            more = await _answers(stream, 1)
            assert more, f"no answer to the closing call after {lines!r}"
            answers += more
        assert next(a for a in answers if a.get("id") == "end")["result"] == {"echo": "ok"}
        for a in answers:
            err = a.get("error")
            if isinstance(err, dict) and err.get("code") == INTERNAL_ERROR:
                internal += 1
        if rng.random() < 0.3:
            await stream.send_all(random_line(rng))  # a half-sent line, then hang up
        await stream.aclose()
        assert await call(path, "echo", text="alive") == {"echo": "alive"}
    assert internal == 0  # every bad line is a client error, never a server bug (only `crash` is one, not sent)


async def test_an_oversized_line_is_refused_and_the_server_serves_on(nursery: trio.Nursery, sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    await start_server(nursery, path, max_request_bytes=MAX_REQUEST_BYTES)
    stream = await trio.open_unix_socket(str(path))
    await stream.send_all(b"[" * (3 * MAX_REQUEST_BYTES))
    [answer] = await _answers(stream, 1)
    assert "exceeds" in str(answer["error"])
    await stream.aclose()
    assert await call(path, "echo", text="alive") == {"echo": "alive"}
