"""What the CLI trusts of whoever serves its control socket (issue 17 review, finding 1): the server must be this
user or root (SO_PEERCRED), ``control.socket_path`` must be absolute, every printed field is escaped and a malformed
reply is a clean error, never a traceback."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from node.control import quick
from node.control.client import ControlClient
from node.control.errors import ClientError
from node.control.quick import fast_main, find_socket
from node.errors import ConfigError

HOSTILE_STATUS = {
    "peer_id": "\x1b]0;pwned\x07\x1b[2J\x1b[31mFAKE",
    "fingerprint": "\x1b[1mf",
    "nickname": "\x1b[2Jnick",
    "uptime_s": 1,
    "transports": ["\x1b[1A\x1b[2Kbetanet"],
    "listen_addrs": ["\x1b[8m/ip4/1.2.3.4"],
    "peers": "\x1b[5m0",
    "links": 0,
    "pending_private": 0,
    "data_dir": "/x\u202egnp.exe",
}


@contextmanager
def one_reply_server(path: Path, reply: bytes) -> Iterator[None]:
    """A socket at ``path`` (served by this process: this user) answering one request with ``reply``."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn, contextlib.suppress(OSError):  # a client that gives up early
            conn.recv(65536)
            conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout=10)
        srv.close()


def reply_line(result: object) -> bytes:
    return (json.dumps({"jsonrpc": "2.0", "id": 1, "result": result}) + "\n").encode()


def impostor(path: Path, uid: int) -> int:
    """Fork a child that becomes ``uid`` and then listens on ``path`` (the credentials SO_PEERCRED reports are the
    listener's at listen()); returns its pid once it listens."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            srv = socket.socket(socket.AF_UNIX)
            srv.bind(str(path))  # as root (pytest's tmp dirs are 0700), then become the other user to listen
            os.setgid(uid)
            os.setuid(uid)
            srv.listen(4)
            os.write(write_fd, b"1")
            while True:
                conn, _ = srv.accept()
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(b'{"jsonrpc":"2.0","id":1,"result":{"peer_id":"FAKE"}}\n')
                conn.close()
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as ready:
        assert ready.read(1) == b"1"
    return pid


def test_a_socket_served_by_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # the impostor's case: a directory others can create names in
    # (the listener's credentials are what counts, whoever owns the socket file)
    path = shared / "village.sock"
    if os.geteuid() == 0:  # a real other user: nobody serves the socket
        pid = impostor(path, 65534)
        try:
            with pytest.raises(ClientError, match="served by uid 65534, not by this user"):
                ControlClient(path, timeout_s=10)
            assert fast_main(["status", "--socket", str(path)]) == 1  # the fast path too, before printing anything
        finally:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    else:  # not root: pretend to be someone else, so this process's own server is "another user"
        real = os.geteuid()
        with one_reply_server(path, reply_line({})):
            monkeypatch.setattr(os, "geteuid", lambda: real + 1)
            with pytest.raises(ClientError, match=f"served by uid {real}, not by this user"):
                ControlClient(path, timeout_s=10)
            monkeypatch.undo()
            ControlClient(path, timeout_s=10).close()  # unblock the server


def test_our_own_server_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    with one_reply_server(path, reply_line({"ok": True})), ControlClient(path, timeout_s=10) as client:
        assert client.call("node.status") == {"ok": True}


def test_status_escapes_every_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.sock"
    with one_reply_server(path, reply_line(HOSTILE_STATUS)):
        assert fast_main(["status", "--socket", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out
    assert "peer ID      \\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mFAKE" in out
    assert "listening    \\x1b[8m/ip4/1.2.3.4" in out and "peers        \\x1b[5m0" in out
    assert "data dir     /x\\u202egnp.exe" in out


@pytest.mark.parametrize(
    "reply",
    [
        b"not json\n",
        b"\xff\xfe\n",
        b'{"jsonrpc":"2.0","id":1,"result":[1]}\n',
        b'{"jsonrpc":"2.0","id":1,"result":{"peer_id":"p"}}\n',
        b'{"jsonrpc":"2.0","id":1,"result":{"uptime_s":"soon"}}\n',
        b'{"jsonrpc":"2.0","id":1,"error":"x"}\n',
        b'{"jsonrpc":"2.0","id":1,"error":{"code":"abc"}}\n',
        b'{"jsonrpc":"2.0","id":1,"error":{"code":1e999}}\n',
    ],
)
def test_a_malformed_reply_is_a_clean_error(tmp_path: Path, reply: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.sock"
    with one_reply_server(path, reply):
        assert fast_main(["status", "--socket", str(path)]) == 1
    assert capsys.readouterr().err == "village: the node sent a malformed reply\n"


def test_ctrl_c_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Interrupted(ControlClient):
        def call(self, method: str, **params: object) -> object:
            raise KeyboardInterrupt

    monkeypatch.setattr(quick, "ControlClient", Interrupted)
    path = tmp_path / "c.sock"
    with one_reply_server(path, reply_line({})):
        assert fast_main(["status", "--socket", str(path)]) == 130


def test_a_relative_socket_path_is_refused_naming_the_key(tmp_path: Path) -> None:
    from node.settings import load_config

    cfg = tmp_path / "config.toml"
    cfg.write_text('[control]\nsocket_path = "run/village.sock"\n')
    cfg.chmod(0o600)
    with pytest.raises(ConfigError, match=r"control\.socket_path must be an absolute path"):
        load_config(data_dir=tmp_path, env={"VILLAGE_CONFIG": str(cfg)})
    assert find_socket({"--config": str(cfg)}, {}) is None  # the fast path leaves it to the loader's message
