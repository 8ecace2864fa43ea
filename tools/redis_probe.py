"""A Redis-protocol server is ready when it answers PING after AUTH (a Redis still loading its append-only file
accepts connections but refuses every command with LOADING): the probe ``scripts/services`` waits on. And which
process a pid file names is a server of ours: :func:`pid_alive`, :func:`is_our_server`, :func:`our_server_runs`."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

PROBE_DEADLINE_S = 2.0  # the most one PING probe may take, however slowly the server answers
PROBE_MAX_BYTES = 4096  # the most of a server's reply a probe reads (AUTH's +OK and PING's +PONG are 10 bytes)


def redis_pongs(port: int, password: str) -> bool:
    """True when the Redis-protocol server on ``port`` answers PING (after AUTH) with PONG, not LOADING. One
    deadline for the whole probe and a cap on the bytes read: a local process that trickles bytes, or sends
    endlessly, costs at most PROBE_DEADLINE_S and PROBE_MAX_BYTES."""

    def bulk(*parts: str) -> bytes:
        out = [f"*{len(parts)}\r\n".encode()]
        for part in parts:
            raw = part.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        return b"".join(out)

    deadline = time.monotonic() + PROBE_DEADLINE_S
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_DEADLINE_S) as conn:
            conn.settimeout(max(0.001, deadline - time.monotonic()))
            conn.sendall(bulk("AUTH", password) + bulk("PING"))
            got = b""
            while got.count(b"\r\n") < 2:
                left = deadline - time.monotonic()
                if left <= 0 or len(got) >= PROBE_MAX_BYTES:
                    return False
                conn.settimeout(left)
                chunk = conn.recv(PROBE_MAX_BYTES - len(got))
                if not chunk:
                    return False
                got += chunk
    except OSError:  # refused, reset, or the deadline passed in connect, send or recv (socket.timeout)
        return False
    return got.split(b"\r\n")[1] == b"+PONG"


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process this user may signal. EPERM (another user's process: a pid file's number
    reused after a crash or a reboot) is not alive for us: every server here runs as this user, or as root's
    postgres user when we are root, whom root may signal. A zombie (our own exited child) is not alive either."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def our_server_runs(pid: int, root: Path) -> bool:
    """A pid file's process is running and is the server of ``root`` (:func:`is_our_server`): what status, up, down and
    pid_of go by, never the number alone."""
    return pid_alive(pid) and is_our_server(pid, root)


def is_our_server(pid: int, root: Path) -> bool:
    """Whether ``pid`` is the server started on ``root``: it runs in ``root`` (a Redis's ``dir``, PostgreSQL's data
    directory; Redis rewrites its command line, so that cannot say) or its command line names ``root``'s redis.conf.
    A pid file left by a crash or a reboot may name a process that reused the number (another user's process: its
    cwd cannot even be read)."""
    try:
        if Path(os.readlink(f"/proc/{pid}/cwd")) == root.resolve():
            return True
        return str(root / "redis.conf").encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
