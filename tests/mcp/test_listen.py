"""`village mcp`'s change notifications, in process against a node with a real control socket: the daemon's
``mcp.listen`` call is released when its client goes, and the stdio side (Relay) holds one only while some client
listens. (The end-to-end path, a message reaching an mcp.Client over stdio, is in test_daemon.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
import trio.testing

from node.mcp.feed import ChangeFeed
from node.mcp.stdio import ControlPool, Relay
from tests.mcp.helpers import start_node

WAIT_S = 60.0


async def _read_line(stream: trio.SocketStream, buf: bytearray) -> dict[str, object]:
    while b"\n" not in buf:
        chunk = await stream.receive_some(4096)
        assert chunk, "the control socket closed"
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    msg = json.loads(line)
    assert isinstance(msg, dict)
    return msg


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.02)  # real socket I/O: jump only after real idleness


async def test_the_daemon_releases_a_listen_call_when_its_client_goes(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    node, service = await start_node(nursery, tmp_path, control=True)
    await service.wait_ready()
    assert node.control_server is not None
    followers_before = node.inbox_followers
    with trio.fail_after(WAIT_S):
        stream = await trio.open_unix_socket(str(node.control_server.path))
        req = {"jsonrpc": "2.0", "id": 1, "method": "mcp.listen", "params": {"keepalive_s": 1.0}}
        await stream.send_all(json.dumps(req).encode() + b"\n")
        buf = bytearray()
        assert (await _read_line(stream, buf))["method"] == "mcp.listening"
        assert service.listeners == 1 and node.inbox_followers == followers_before + 1
        assert (await _read_line(stream, buf))["method"] == "mcp.keepalive"  # quiet: the call checks its client
        await stream.aclose()  # the client goes without a word
        await service.wait_listeners(0)
    assert node.inbox_followers == followers_before  # the inbox subscription went with it


async def test_a_listen_call_with_a_bad_keepalive_is_refused(nursery: trio.Nursery, tmp_path: Path) -> None:
    node, service = await start_node(nursery, tmp_path, control=True)
    await service.wait_ready()
    assert node.control_server is not None
    pool = ControlPool(node.control_server.path)
    with pytest.raises(Exception, match="keepalive_s must be from 1 to 60"):
        await pool.call("mcp.listen", keepalive_s=0.0)
    await pool.aclose()
    assert service.listeners == 0


async def test_the_stdio_relay_subscribes_only_while_a_client_listens(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    node, service = await start_node(nursery, tmp_path, control=True)
    await service.wait_ready()
    assert node.control_server is not None
    feed = ChangeFeed()
    relay = Relay(ControlPool(node.control_server.path), feed)
    nursery.start_soon(relay.run)
    heard: list[object] = []
    with trio.fail_after(WAIT_S):
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert relay.connections == 0 and service.listeners == 0  # nobody listens: no subscription held
        off = feed.bus.subscribe(heard.append)  # what a client's subscriptions/listen does
        await service.wait_listeners(1)
        off()
        await service.wait_listeners(0)  # the relay closed its connection; the daemon noticed
        off = feed.bus.subscribe(heard.append)
        await service.wait_listeners(1)
    assert relay.connections == 2
    off()


async def test_a_listener_that_stops_reading_loses_its_slot(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A client that stops reading blocks the call's writes: each notification has LISTEN_NOTIFY_TIMEOUT_S, then
    the call ends (and the control server drops its connection), so it does not hold a listener slot forever."""
    from node.mcp.rpc import LISTEN_NOTIFY_TIMEOUT_S

    node, service = await start_node(nursery, tmp_path, control=True)
    await service.wait_ready()
    assert node.control_server is not None
    reg = node.control_server.registry
    method = reg.lookup("mcp.listen")
    sent: list[str] = []

    async def stuck(name: str, payload: object) -> None:  # the client's socket buffer is full
        sent.append(name)
        if name != "mcp.listening":
            await trio.sleep_forever()

    with trio.fail_after(LISTEN_NOTIFY_TIMEOUT_S * 3):
        with pytest.raises(trio.BrokenResourceError, match="took no notification"):
            await method.handler(reg.bind_params(method, {"keepalive_s": 1.0}), stuck)
    assert sent == ["mcp.listening", "mcp.keepalive"] and service.listeners == 0
