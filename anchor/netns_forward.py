"""Forward loopback TCP ports into another network namespace (stdlib only; started by ``scripts/services``).

FalkorDB's Bolt listener binds every interface and has no authentication, so ``scripts/services`` (as root) runs
the FalkorDB server in a private network namespace that has nothing but its own loopback, and this small relay
listens on 127.0.0.1 of the host's namespace and connects, for each client, to the same port inside that
namespace. The listening sockets are made first, in the host's namespace; then the process joins the server's
namespace (``setns``), where every socket it creates from then on — the upstream connections — lives.

    python -m anchor.netns_forward --netns /proc/PID/ns/net --pidfile F --port 27687 [--port ...]

It exits when the server process (``--target-pid``) is gone, or on SIGTERM. Connections are bounded
(``MAX_CONNECTIONS``), each relay buffer is at most ``CHUNK_BYTES``, and nothing blocks: a slow or stuck client
or server holds up only its own connection (an upstream connect that does not complete within
``UPSTREAM_TIMEOUT_S`` closes the client's).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
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


class _End:
    """One side of a relayed connection: ``out`` holds what still has to be written to ``sock``."""

    __slots__ = ("close_after_flush", "connecting", "deadline", "out", "peer", "sock")

    def __init__(self, sock: socket.socket, connecting: bool, deadline: float) -> None:
        self.sock = sock
        self.peer: _End = self
        self.out = bytearray()
        self.connecting = connecting  # an upstream whose non-blocking connect has not completed
        self.deadline = deadline
        self.close_after_flush = False  # the other side ended: close once ``out`` is written


class Relay:
    """A single-threaded, fully non-blocking relay: connects upstream without waiting, never blocks on a send
    (per direction at most ``CHUNK_BYTES`` are held; a side whose peer cannot take more is not read until it
    can), so one slow or stuck client or server stalls only its own connection. ``listeners`` maps each
    listening socket to the upstream port on ``upstream_host``."""

    def __init__(self, listeners: dict[socket.socket, int], upstream_host: str = "127.0.0.1") -> None:
        self.sel = selectors.DefaultSelector()
        self.ends: dict[socket.socket, _End] = {}
        self.upstream_host = upstream_host
        self.stopped = False
        for sock in listeners:
            sock.setblocking(False)
            self.sel.register(sock, selectors.EVENT_READ, listeners[sock])

    def _accept(self, listener: socket.socket, port: int) -> None:
        try:
            client, _ = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        if len(self.ends) >= 2 * MAX_CONNECTIONS:
            client.close()
            return
        client.setblocking(False)
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        err = upstream.connect_ex((self.upstream_host, port))
        if err not in (0, errno.EINPROGRESS):
            client.close()  # the server is down: the client sees the connection close
            upstream.close()
            return
        deadline = time.monotonic() + UPSTREAM_TIMEOUT_S
        a, b = _End(client, False, deadline), _End(upstream, err != 0, deadline)
        a.peer, b.peer = b, a
        self.ends[client], self.ends[upstream] = a, b
        self._watch(a)
        self._watch(b)

    def _watch(self, end: _End) -> None:
        """Select what ``end`` is waiting for: its connect, room to write, or (when its peer's buffer is empty
        and connected) data to read."""
        mask = 0
        if end.connecting or end.out:
            mask |= selectors.EVENT_WRITE
        if not end.connecting and not end.peer.connecting and not end.peer.out and not end.peer.close_after_flush:
            mask |= selectors.EVENT_READ
        try:
            key = self.sel.get_key(end.sock)
        except KeyError:
            key = None
        if mask == 0:
            if key is not None:
                self.sel.unregister(end.sock)
        elif key is None:
            self.sel.register(end.sock, mask, None)
        elif key.events != mask:
            self.sel.modify(end.sock, mask, None)

    def _close(self, end: _End) -> None:
        for e in (end, end.peer):
            if self.ends.pop(e.sock, None) is None:
                continue
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(e.sock)
            e.sock.close()

    def _flush(self, end: _End) -> bool:
        """Write what ``end`` holds; False if the connection is gone."""
        if end.out:
            try:
                sent = end.sock.send(end.out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close(end)
                return False
            del end.out[:sent]
        if not end.out and end.close_after_flush:
            self._close(end)
            return False
        return True

    def _event(self, end: _End, events: int) -> None:
        if end.connecting:
            if not events & selectors.EVENT_WRITE:
                return
            if end.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                self._close(end)  # the server refused: the client sees the connection close
                return
            end.connecting = False
        elif events & selectors.EVENT_WRITE and not self._flush(end):
            return
        if events & selectors.EVENT_READ and not end.peer.out:
            try:
                data = end.sock.recv(CHUNK_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:  # this side ended: pass on what is still buffered for the other, then close
                end.peer.close_after_flush = True
                if not self._flush(end.peer):
                    return
            else:
                end.peer.out += data
                if not self._flush(end.peer):
                    return
        self._watch(end)
        self._watch(end.peer)

    def _expire(self) -> None:
        now = time.monotonic()
        for end in [e for e in self.ends.values() if e.connecting and e.deadline <= now]:
            self._close(end)

    def run(self, target_pid: int) -> None:
        while _alive(target_pid) and not self.stopped:
            for key, events in self.sel.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if key.data is not None:
                    self._accept(sock, key.data)
                elif sock in self.ends:
                    self._event(self.ends[sock], events)
            self._expire()


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
