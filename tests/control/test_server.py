"""The control socket: real Unix socket, real client, JSON-RPC errors, permissions and peer credentials."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from node.control.client import ControlClient
from node.control.errors import NotRunning, RemoteCallError
from node.control.rpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    NoParams,
    Notify,
    Registry,
    param,
)
from node.control.server import ControlServer
from node.errors import MeshError, StartupError


@dataclass(frozen=True)
class EchoParams:
    text: str = param(doc="what to echo")
    times: int = param(1, doc="how often")


def make_registry() -> Registry:
    reg = Registry()

    async def echo(p: EchoParams, notify: Notify) -> object:
        return {"echo": p.text * p.times}

    async def fail(_: NoParams, notify: Notify) -> object:
        raise MeshError("peer abc is unknown")

    async def crash(_: NoParams, notify: Notify) -> object:
        raise RuntimeError("bug")

    async def count(p: EchoParams, notify: Notify) -> object:
        for i in range(p.times):
            await notify("tick", {"i": i, "text": p.text})
        return {"done": p.times}

    reg.add("echo", EchoParams, "Echo text.", echo)
    reg.add("fail", NoParams, "Raise a user-facing error.", fail)
    reg.add("crash", NoParams, "Raise a bug.", crash)

    async def lone_surrogate(_: NoParams, notify: Notify) -> object:
        return {"snippet": "\ud800 from a peer"}  # not encodable as UTF-8

    async def bad_message(_: NoParams, notify: Notify) -> object:
        raise MeshError("peer said \udc1b")

    reg.add("count", EchoParams, "Stream ticks.", count, streaming=True)
    reg.add("surrogate", NoParams, "Return a lone surrogate.", lone_surrogate)
    reg.add("bad_message", NoParams, "Raise an error whose message has a lone surrogate.", bad_message)
    return reg


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes: pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="vlg-", dir="/tmp"))
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


async def start_server(nursery: trio.Nursery, path: Path, **kw: int) -> ControlServer:
    server = ControlServer(
        path, make_registry(), max_request_bytes=kw.get("max_request_bytes", 4096), max_connections=4
    )
    await nursery.start(server.run)
    return server


async def call(path: Path, method: str, **params: object) -> object:
    def run() -> object:
        with ControlClient(path, timeout_s=10) as c:
            return c.call(method, **params)

    return await trio.to_thread.run_sync(run)


async def test_socket_is_owner_only_and_calls_work(nursery: trio.Nursery, sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    await start_server(nursery, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert await call(path, "echo", text="ab", times=3) == {"echo": "ababab"}


async def test_rpc_errors(nursery: trio.Nursery, sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    await start_server(nursery, path)
    with pytest.raises(RemoteCallError) as e:
        await call(path, "nope")
    assert e.value.code == METHOD_NOT_FOUND
    with pytest.raises(RemoteCallError, match="missing required param 'text'") as e:
        await call(path, "echo")
    assert e.value.code == INVALID_PARAMS
    with pytest.raises(RemoteCallError, match="param 'times' must be int"):
        await call(path, "echo", text="x", times="2")
    with pytest.raises(RemoteCallError, match="unknown param 'colour'"):
        await call(path, "echo", text="x", colour=1)
    with pytest.raises(RemoteCallError, match="peer abc is unknown"):
        await call(path, "fail")
    with pytest.raises(RemoteCallError, match="internal error"):
        await call(path, "crash")
    assert await call(path, "echo", text="still alive") == {"echo": "still alive"}


async def test_socket_observers_see_successful_socket_calls_only(nursery: trio.Nursery, sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    server = await start_server(nursery, path)
    seen: list[tuple[str, object]] = []
    server.registry.socket_observers.append(lambda name, p: seen.append((name, p)))

    def broken(name: str, p: object) -> None:
        raise RuntimeError("observer bug")

    server.registry.socket_observers.append(broken)
    assert await call(path, "echo", text="ab") == {"echo": "ab"}  # a failing observer does not fail the call
    with pytest.raises(RemoteCallError):
        await call(path, "fail")
    m = server.registry.lookup("echo")
    assert await m.handler(EchoParams("in-process"), _no_notify) == {"echo": "in-process"}
    assert seen == [("echo", EchoParams("ab"))]  # not the failed call, not the in-process one


async def _no_notify(name: str, payload: object) -> None:
    return None


async def test_unencodable_result_answers_internal_error(nursery: trio.Nursery, sock_dir: Path) -> None:
    # A lone surrogate (say, from a peer's answer) cannot be encoded as UTF-8: the call gets an internal error and
    # the server (and the nursery the daemon runs it in) keeps running.
    path = sock_dir / "control.sock"
    await start_server(nursery, path)
    with pytest.raises(RemoteCallError, match="internal error") as e:
        await call(path, "surrogate")
    assert e.value.code == INTERNAL_ERROR
    with pytest.raises(RemoteCallError, match="internal error"):
        await call(path, "bad_message")
    assert await call(path, "echo", text="still alive") == {"echo": "still alive"}


async def test_garbage_and_oversize_requests(nursery: trio.Nursery, sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    await start_server(nursery, path, max_request_bytes=1024)
    stream = await trio.open_unix_socket(str(path))
    await stream.send_all(b"{not json\n")
    reply = json.loads(await stream.receive_some(65536))
    assert reply["error"]["code"] == PARSE_ERROR and reply["id"] is None
    await stream.send_all(b"x" * 5000)
    reply = json.loads(await stream.receive_some(65536))
    assert "exceeds 1024 bytes" in reply["error"]["message"]
    assert await stream.receive_some(65536) == b""  # the server hung up
    await stream.aclose()


async def test_streaming_notifications(nursery: trio.Nursery, sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    await start_server(nursery, path)

    def run() -> list[tuple[str, object]]:
        with ControlClient(path) as c:
            return list(c.stream("count", text="t", times=3))

    got = await trio.to_thread.run_sync(run)
    assert got == [("tick", {"i": i, "text": "t"}) for i in range(3)]


async def test_second_server_on_same_socket_refused(nursery: trio.Nursery, sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    await start_server(nursery, path)
    with pytest.raises(StartupError, match="another node is already running"):
        await ControlServer(path, make_registry(), max_request_bytes=4096, max_connections=1).run()
    assert await call(path, "echo", text="first still serves") == {"echo": "first still serves"}


async def test_stale_socket_is_replaced(nursery: trio.Nursery, sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # a socket file nobody listens on, as left by kill -9
    await start_server(nursery, path)
    assert await call(path, "echo", text="ok") == {"echo": "ok"}


async def test_socket_removed_on_stop(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    async with trio.open_nursery() as nursery:
        await start_server(nursery, path)
        assert path.exists()
        nursery.cancel_scope.cancel()
    assert not path.exists()
    with pytest.raises(NotRunning, match="no node is running"):
        ControlClient(path)


async def test_long_socket_path_is_a_clear_error(sock_dir: Path) -> None:
    path = sock_dir / ("d" * 120) / "control.sock"
    with pytest.raises(StartupError, match="longer than the 107 bytes"):
        await ControlServer(path, make_registry(), max_request_bytes=4096, max_connections=1).run()


CLIENT_AS_NOBODY = """
import json, os, socket, sys
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("connect: permission denied"); sys.exit(0)
try:  # the server may refuse and hang up before we even write
    s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"echo","params":{"text":"hi"}}\\n')
except BrokenPipeError:
    pass
print(s.recv(65536).decode().strip())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
async def test_other_users_are_refused(nursery: trio.Nursery, sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    server = await start_server(nursery, path)
    sock_dir.chmod(0o755)

    async def as_nobody() -> str:
        proc = await trio.run_process([sys.executable, "-c", CLIENT_AS_NOBODY, str(path)], capture_stdout=True)
        return proc.stdout.decode().strip()

    # The file mode alone keeps other users out...
    assert await as_nobody() == "connect: permission denied"
    # ...and if someone loosens it, the peer-credential check still does.
    path.chmod(0o666)
    reply = json.loads(await as_nobody())
    assert "permission denied" in reply["error"]["message"] and "result" not in reply
    assert server.rejected_connections == 1


async def test_notifications_get_no_response(nursery: trio.Nursery, sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    await start_server(nursery, path)
    stream = await trio.open_unix_socket(str(path))
    await stream.send_all(
        b'{"jsonrpc":"2.0","method":"nope"}\n{"jsonrpc":"2.0","method":"echo","params":'
        b'{"text":"n"}}\n{"jsonrpc":"2.0","id":7,"method":"echo","params":{"text":"r"}}\n'
    )
    reply = json.loads(await stream.receive_some(65536))
    assert reply == {"jsonrpc": "2.0", "id": 7, "result": {"echo": "r"}}  # only the request with an id
    await stream.aclose()
