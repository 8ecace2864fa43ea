"""anchor.netns_forward's relay, in process (no namespace needed: a listener relays to another loopback port):
a server that stops reading stalls only its own connection, never the relay."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from anchor.netns_forward import Relay


def _listener() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


@pytest.fixture
def servers() -> Iterator[tuple[int, int]]:
    """(port of a server that accepts and never reads, port of an echo server)."""
    sink, echo = _listener(), _listener()
    held: list[socket.socket] = []
    stop = threading.Event()

    def run_sink() -> None:
        while not stop.is_set():
            try:
                conn, _ = sink.accept()
            except OSError:
                return
            held.append(conn)  # accepted, never read

    def run_echo() -> None:
        while not stop.is_set():
            try:
                conn, _ = echo.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(30)
                while data := conn.recv(4096):
                    conn.sendall(data)

    threads = [threading.Thread(target=f, daemon=True) for f in (run_sink, run_echo)]
    for t in threads:
        t.start()
    yield sink.getsockname()[1], echo.getsockname()[1]
    stop.set()
    for s in [sink, echo, *held]:
        with_shutdown(s)
    for t in threads:
        t.join(timeout=30)


def with_shutdown(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


def test_a_server_that_stops_reading_stalls_only_its_own_connection(servers: tuple[int, int]) -> None:
    sink_port, echo_port = servers
    to_sink, to_echo = _listener(), _listener()
    relay = Relay({to_sink: sink_port, to_echo: echo_port})
    thread = threading.Thread(target=relay.run, args=(os.getpid(),), daemon=True)
    thread.start()
    try:
        stuck = socket.create_connection(to_sink.getsockname(), timeout=30)
        stuck.setblocking(False)
        pushed = 0
        for _ in range(10_000):  # fill every buffer on the way to the server that does not read
            try:
                pushed += stuck.send(b"x" * 65_536)
            except BlockingIOError:
                break
        assert pushed > 65_536
        # Meanwhile another client is relayed as usual...
        with socket.create_connection(to_echo.getsockname(), timeout=30) as other:
            for i in range(3):
                other.sendall(b"ping %d" % i)
                assert other.recv(64) == b"ping %d" % i
        # ... and the stuck connection was not given up on: it is still open, only waiting.
        with pytest.raises(BlockingIOError):
            stuck.recv(1)
        stuck.close()
    finally:
        relay.stopped = True
        thread.join(timeout=30)
        to_sink.close()
        to_echo.close()
