"""Forward loopback TCP ports into another network namespace (stdlib only; started by ``scripts/services``).

FalkorDB's Bolt listener binds every interface and has no authentication, so ``scripts/services`` (as root) runs
the FalkorDB server in a private network namespace that has nothing but its own loopback, and this small relay
listens on 127.0.0.1 of the host's namespace and connects, for each client, to the same port inside that
namespace. The listening sockets are made first, in the host's namespace; then the process joins the server's
namespace (``setns``), where every socket it creates from then on — the upstream connections — lives.

    python -m anchor.netns_forward --netns /proc/PID/ns/net --pidfile F --port 27687 [--port ...]

It exits when the server process (``--target-pid``) is gone, or on SIGTERM. Connections are bounded
(``MAX_CONNECTIONS``), and each relay buffer is at most ``CHUNK_BYTES``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import selectors
import signal
import socket
import sys
import time

CLONE_NEWNET = 0x40000000
CHUNK_BYTES = 65_536
MAX_CONNECTIONS = 512  # client connections at once; more are closed at accept
UPSTREAM_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 60.0


def join_netns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Relay:
    def __init__(self, listeners: dict[socket.socket, int]) -> None:
        self.sel = selectors.DefaultSelector()
        self.peer: dict[socket.socket, socket.socket] = {}
        for sock in listeners:
            sock.setblocking(False)
            self.sel.register(sock, selectors.EVENT_READ, listeners[sock])

    def _accept(self, listener: socket.socket, port: int) -> None:
        try:
            client, _ = listener.accept()
        except BlockingIOError:
            return
        if len(self.peer) >= 2 * MAX_CONNECTIONS:
            client.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=UPSTREAM_TIMEOUT_S)
        except OSError:
            client.close()  # the server is down: the client sees the connection close
            return
        for s in (client, upstream):
            s.setblocking(True)
            s.settimeout(UPSTREAM_TIMEOUT_S)
        self.peer[client], self.peer[upstream] = upstream, client
        self.sel.register(client, selectors.EVENT_READ, None)
        self.sel.register(upstream, selectors.EVENT_READ, None)

    def _close(self, sock: socket.socket) -> None:
        other = self.peer.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self.peer.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(s)
            s.close()

    def _pump(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(CHUNK_BYTES)
        except OSError:
            data = b""
        if not data:
            self._close(sock)
            return
        try:
            self.peer[sock].sendall(data)
        except (OSError, KeyError):
            self._close(sock)

    def run(self, target_pid: int) -> None:
        while _alive(target_pid):
            for key, _ in self.sel.select(timeout=1.0):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if key.data is not None:
                    self._accept(sock, key.data)
                elif sock in self.peer:
                    self._pump(sock)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anchor.netns_forward", description=__doc__.split("\n\n")[0])
    parser.add_argument("--netns", required=True, help="/proc/PID/ns/net of the server")
    parser.add_argument("--target-pid", type=int, required=True, help="exit when this process is gone")
    parser.add_argument("--pidfile", required=True, help="written once the upstream ports answer")
    parser.add_argument("--port", type=int, action="append", required=True, help="port to forward (same inside)")
    parser.add_argument(
        "--ready-port",
        type=int,
        help="inside port whose answer means the server is ready (default: all of --port). FalkorDB: its Redis "
        "port; probing its Bolt port would cost the next real client its connection (see anchor/stores/graph.py)",
    )
    parser.add_argument("--daemon", action="store_true", help="detach (the starting process returns at once)")
    args = parser.parse_args(argv)

    listeners: dict[socket.socket, int] = {}
    for port in args.port:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(128)
        listeners[s] = port
    if args.daemon:
        if os.fork() > 0:
            os._exit(0)
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    join_netns(args.netns)
    deadline = time.monotonic() + READY_TIMEOUT_S
    probe = [args.ready_port] if args.ready_port else args.port
    while not all(_answers(p) for p in probe):
        if time.monotonic() > deadline or not _alive(args.target_pid):
            print("netns_forward: the server's ports never answered", file=sys.stderr)
            return 1
        time.sleep(0.05)
    tmp = args.pidfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, args.pidfile)
    Relay(listeners).run(args.target_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
