"""A small blocking JSON-RPC client for the control socket (the CLI runs it; no event loop needed)."""

from __future__ import annotations

import itertools
import json
import os
import socket
import struct

from node.control.errors import ClientError, NotRunning, RemoteCallError

TYPE_CHECKING = False  # not typing's: `village status` must not import typing (node/control/quick.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from typing import Any

MAX_LINE_BYTES = 64 * 1024 * 1024  # a response larger than this is treated as a broken node


def _check_server(sock: socket.socket, path: Path) -> None:
    """Refuse a server that is neither this user nor root: anyone who can create the socket's path (a shared or
    world-writable directory, a stale path after the node stopped) could otherwise answer the CLI's calls."""
    me = os.geteuid()
    if hasattr(socket, "SO_PEERCRED"):  # Linux and Android: the credentials of the process that listens
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        uid = struct.unpack("3i", creds)[1]
    else:  # no peer credentials here: the socket file's owner is the next best witness
        try:
            uid = os.stat(path).st_uid
        except OSError as exc:
            raise ClientError(f"cannot check who serves {path}: {exc.strerror}") from None
    if uid not in (me, 0):
        raise ClientError(f"refusing the control socket {path}: it is served by uid {uid}, not by this user ({me})")


class ControlClient:
    def __init__(self, path: Path, *, timeout_s: float | None = 30.0) -> None:
        self.path = path
        self._ids = itertools.count(1)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        try:
            self._sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            self._sock.close()
            raise NotRunning(f"no node is running on {path} (start one with `village run`)") from None
        except PermissionError:
            self._sock.close()
            raise ClientError(f"permission denied on {path}: the control socket serves its owner only") from None
        try:
            _check_server(self._sock, path)
        except BaseException:
            self._sock.close()
            raise
        self._buf = bytearray()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def _read_message(self) -> dict[str, Any]:
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                try:
                    msg = json.loads(line)
                except ValueError:  # not JSON, or not UTF-8
                    raise ClientError("the node sent a malformed reply") from None
                if not isinstance(msg, dict):
                    raise ClientError("the node sent a malformed reply")
                return msg
            if len(self._buf) > MAX_LINE_BYTES:
                raise ClientError("the node sent an oversized reply")
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise ClientError(f"the node on {self.path} did not answer in time") from None
            if not chunk:
                raise ClientError("the node closed the connection")
            self._buf += chunk

    def _send(self, method: str, params: dict[str, Any]) -> int:
        req_id = next(self._ids)
        line = json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params})
        self._sock.sendall(line.encode() + b"\n")
        return req_id

    @staticmethod
    def _result(msg: dict[str, Any]) -> Any:
        if "error" in msg:
            try:
                err = msg["error"]
                code, message, data = int(err.get("code", 0)), str(err.get("message", "error")), err.get("data")
            except (ValueError, TypeError, AttributeError, KeyError, OverflowError):
                raise ClientError("the node sent a malformed reply") from None
            raise RemoteCallError(code, message, data)
        return msg.get("result")

    def call(self, method: str, **params: Any) -> Any:
        req_id = self._send(method, params)
        while True:
            msg = self._read_message()
            if msg.get("id") == req_id or ("error" in msg and msg.get("id") is None):
                return self._result(msg)

    def stream(self, method: str, **params: Any) -> Iterator[tuple[str, Any]]:
        """Call a streaming method; yields ``(notification_method, params)`` until the final response."""
        self._sock.settimeout(None)
        req_id = self._send(method, params)
        while True:
            msg = self._read_message()
            if "id" in msg and (msg["id"] == req_id or msg["id"] is None):
                self._result(msg)
                return
            yield str(msg.get("method")), msg.get("params")

    def call_streaming(self, method: str, on_notification: Callable[[str, Any], None], **params: Any) -> Any:
        """Call a method that sends notifications before its response; each goes to ``on_notification``; returns
        the final result."""
        self._sock.settimeout(None)
        req_id = self._send(method, params)
        while True:
            msg = self._read_message()
            if "id" in msg and (msg["id"] == req_id or msg["id"] is None):
                return self._result(msg)
            on_notification(str(msg.get("method")), msg.get("params"))
