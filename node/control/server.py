"""The control socket: JSON-RPC 2.0 over a Unix stream socket, mode 0600, owner (or root) only.

Every connection's peer credentials (``SO_PEERCRED``) are checked: only the node's own uid or root may call
methods. Requests are newline-delimited JSON, each at most ``control.max_request_bytes``; a connection serves
its requests one at a time; at most ``control.max_connections`` connections are served at once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
from pathlib import Path
from typing import Any

import trio

from node.control.rpc import (
    APP_ERROR,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    Registry,
    RpcError,
    notification_line,
    parse_request_untrusted,
    response_line,
)
from node.errors import NodeError, StartupError

log = logging.getLogger("village.control")

UNIX_PATH_MAX = 107  # bytes: sun_path is 108 bytes on Linux, one of which is the terminating NUL
READ_CHUNK = 65_536  # bytes per receive_some call
LISTEN_BACKLOG = 64


def peer_uid(sock: socket.socket | trio.socket.SocketType) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _socket_in_use(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    else:
        return True
    finally:
        probe.close()


class ControlServer:
    def __init__(self, path: Path, registry: Registry, *, max_request_bytes: int, max_connections: int) -> None:
        self.path = path
        self.registry = registry
        self.max_request_bytes = max_request_bytes
        self._limiter = trio.CapacityLimiter(max_connections)
        self.rejected_connections = 0
        self._inflight = 0  # requests being handled or answered right now
        self._quiet = trio.Event()

    async def wait_quiet(self) -> None:
        """Wait until no request is being handled, so a stopping node still answers the call that stopped
        it. (Streaming calls end first: the node closes their feeds before waiting.)"""
        while self._inflight:
            await self._quiet.wait()

    async def _bind(self) -> trio.socket.SocketType:
        if len(os.fsencode(self.path)) > UNIX_PATH_MAX:
            raise StartupError(
                f"control socket path {self.path} is longer than the {UNIX_PATH_MAX} bytes a "
                "Unix socket allows; set control.socket_path or use a shorter data dir"
            )
        if self.path.exists() or self.path.is_symlink():
            if _socket_in_use(self.path):
                raise StartupError(
                    f"another node is already running on {self.path}; stop it first (`village status` talks to it)"
                )
            self.path.unlink()  # stale socket left by a crash
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            await sock.bind(str(self.path))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(f"control socket {self.path} is in use by another process") from exc
            raise StartupError(f"cannot create control socket {self.path}: {exc.strerror}") from exc
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        sock.listen(LISTEN_BACKLOG)
        return sock

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = await self._bind()
        inode = self.path.stat().st_ino
        listener = trio.SocketListener(sock)
        log.info("control socket listening on %s", self.path)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(self._serve_connection, stream)
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
            try:
                if self.path.stat().st_ino == inode:  # do not remove a socket a newer node created
                    self.path.unlink()
            except FileNotFoundError:
                pass

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        async with stream, self._limiter:
            uid = peer_uid(stream.socket)
            if uid not in (os.geteuid(), 0):
                self.rejected_connections += 1
                log.warning(
                    "control connection from uid %d refused (only uid %d and root may connect)", uid, os.geteuid()
                )
                err = RpcError(INVALID_REQUEST, "permission denied: the control socket serves its owner only")
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(response_line(None, error=err))
                return
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):  # client went away
                await self._serve_requests(stream)

    async def _serve_requests(self, stream: trio.SocketStream) -> None:
        buf = bytearray()
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > self.max_request_bytes:
                    err = RpcError(
                        INVALID_REQUEST, f"request exceeds {self.max_request_bytes} bytes (control.max_request_bytes)"
                    )
                    await stream.send_all(response_line(None, error=err))
                    return
                data = await stream.receive_some(READ_CHUNK)
                if not data:
                    return
                buf += data
                continue
            line = bytes(buf[:nl])
            del buf[: nl + 1]
            if line.strip():
                self._inflight += 1
                try:
                    reply = await self._dispatch(line, stream)
                    if reply is not None:
                        await stream.send_all(reply)
                finally:
                    self._inflight -= 1
                    if not self._inflight:
                        self._quiet.set()
                        self._quiet = trio.Event()

    async def _dispatch(self, line: bytes, stream: trio.SocketStream) -> bytes | None:
        req_id: int | str | None = None
        is_notification = False  # JSON-RPC: a request without an id never gets a response, not even an error
        try:
            req = parse_request_untrusted(line)
            req_id, is_notification = req.id, req.id is None
            method = self.registry.lookup(req.method)
            params = self.registry.bind_params(method, req.params)

            async def notify(name: str, payload: Any) -> None:
                await stream.send_all(notification_line(name, payload))

            result = await method.handler(params, notify)
            self._observed(req.method, params)
        except RpcError as exc:
            return None if is_notification else self._reply(req_id, error=exc)
        except NodeError as exc:
            if is_notification:
                return None
            return self._reply(req_id, error=RpcError(APP_ERROR, str(exc), {"type": type(exc).__name__}))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise
        except Exception:  # supervised boundary: one bad call must not take the daemon down
            log.exception("control method failed: %s", line[:200].decode(errors="replace"))
            if is_notification:
                return None
            return self._reply(req_id, error=RpcError(INTERNAL_ERROR, "internal error; see the node log"))
        if is_notification:
            return None
        return self._reply(req_id, result=result)

    def _observed(self, name: str, params: Any) -> None:
        for observer in self.registry.socket_observers:
            try:
                observer(name, params)
            except Exception:  # supervised boundary: an observer's bug must not fail the user's call
                log.exception("control call observer failed for %s", name)

    @staticmethod
    def _reply(req_id: int | str | None, *, result: Any = None, error: RpcError | None = None) -> bytes:
        """The response line; a result or message JSON cannot carry as UTF-8 (a lone surrogate, an object that is
        not JSON) answers an internal error instead of escaping into the server's nursery."""
        try:
            return response_line(req_id, result=result, error=error)
        except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
            log.exception("control response for request %r could not be encoded", req_id)
            return response_line(req_id, error=RpcError(INTERNAL_ERROR, "internal error; see the node log"))
