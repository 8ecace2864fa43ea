"""The node's HTTP listeners cap their concurrent connections (node/httpserve.py): a local flood of idle connections
holds at most the cap of the daemon's descriptors, the rest wait in the kernel's backlog, and the listener serves
again as soon as they close. The metrics listener here; MCP's in tests/mcp/test_http.py."""

from __future__ import annotations

import types
import urllib.parse
from pathlib import Path
from typing import Any, cast

import trio
import trio.testing

from node.httpserve import ConnectionCap
from node.metrics.service import MetricsService
from node.metrics.settings import MetricsSection


async def flood(url: str, cap: ConnectionCap, count: int) -> list[trio.SocketStream]:
    """Open ``count`` idle connections to ``url``'s host and port; return once the server has settled."""
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    streams = [await trio.open_tcp_stream(parts.hostname, parts.port) for _ in range(count)]
    with trio.fail_after(30):
        while not (cap.active == cap.limit and cap.waiting_for_a_slot()):
            await trio.testing.wait_all_tasks_blocked(0.01)
    await trio.testing.wait_all_tasks_blocked(0.05)
    return streams


async def http_status(url: str, headers: str = "") -> int:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream:
        request = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}\r\nConnection: close\r\n{headers}\r\n"
        await stream.send_all(request.encode())
        reply = b""
        with trio.fail_after(60):
            while b"\r\n" not in reply:
                chunk = await stream.receive_some(4096)
                assert chunk, reply
                reply += chunk
    return int(reply.split(b" ", 2)[1])


async def test_a_flood_of_connections_holds_at_most_the_cap(nursery: trio.Nursery, tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    node = cast(Any, types.SimpleNamespace(config=types.SimpleNamespace(data_dir=tmp_path)))  # no scrape here
    service = MetricsService(MetricsSection(listen="127.0.0.1:0", max_connections=4))
    await nursery.start(service.run, node)
    assert service.url is not None and service.connections is not None
    cap = service.connections
    streams = await flood(service.url, cap, 12)
    assert cap.active == 4 and cap.peak == 4 and cap.accepted == 4  # 8 wait in the backlog, not in the daemon
    for stream in streams:
        await stream.aclose()
    # Served again once they are gone (each closed connection keeps its slot for hypercorn's keep-alive timeout).
    assert await http_status(service.url) == 401
    assert cap.peak == 4


def test_the_installed_hypercorn_has_every_internal_serve_capped_uses() -> None:
    """serve_capped drives hypercorn's TCPServer/Lifespan/WorkerContext itself (not its public ``serve``): a hypercorn
    that moved one of them must fail here with the list of what changed, not as an obscure error in a daemon."""
    from node.httpserve import hypercorn_internals_problem

    problem = hypercorn_internals_problem()
    assert problem is None, problem


def test_pyproject_pins_hypercorn_below_the_next_minor_and_the_installed_one_fits() -> None:
    import importlib.metadata
    import tomllib

    from packaging.requirements import Requirement

    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    reqs = [*meta["dependencies"], *(r for extra in meta["optional-dependencies"].values() for r in extra)]
    pins = [Requirement(r).specifier for r in reqs if Requirement(r).name == "hypercorn"]
    assert len(pins) >= 1
    installed = importlib.metadata.version("hypercorn")
    for spec in pins:
        assert "0.19.0" not in spec and "1.0" not in spec, f"hypercorn must stay below 0.19 (internals): {spec}"
        assert installed in spec, f"installed hypercorn {installed} is outside {spec}"


async def test_a_hypercorn_without_an_internal_is_refused_at_start_naming_it(monkeypatch: Any) -> None:
    import hypercorn.config
    from hypercorn.trio.lifespan import Lifespan

    from node.errors import StartupError
    from node.httpserve import hypercorn_internals_problem, serve_capped

    monkeypatch.delattr(Lifespan, "wait_for_startup")
    problem = hypercorn_internals_problem()
    assert problem is not None and "Lifespan.wait_for_startup" in problem and "<0.19" in problem
    try:
        await serve_capped(object(), hypercorn.config.Config(), ConnectionCap(1))
    except StartupError as exc:
        assert "Lifespan.wait_for_startup" in str(exc)
    else:
        raise AssertionError("serve_capped started on a hypercorn without the internals it uses")
