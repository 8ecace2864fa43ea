"""A Redis-protocol server is ready when it answers PING after AUTH (a Redis still loading its append-only file
accepts connections but refuses every command with LOADING): the probe ``scripts/services`` waits on. And which
process a pid file names is a server of ours: :func:`read_pid`, :func:`pid_alive`, :func:`is_our_server`,
:func:`our_server_runs`, :func:`is_our_postmaster`."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

PROBE_DEADLINE_S = 2.0  # the most one PING probe may take, however slowly the server answers
PROBE_MAX_BYTES = 4096  # the most of a server's reply a probe reads (AUTH's +OK and PING's +PONG are 10 bytes)
PID_FILE_MAX_BYTES = 64  # a pid file's first line (a number) is in there; postmaster.pid's other lines are not needed
PID_MAX = 1 << 22  # Linux's PID_MAX_LIMIT: no process number is above it (kernel.pid_max is at most this)


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


def read_pid(path: Path) -> int:
    """The number on the first line of the pid file ``path``; 0 when it is missing, unreadable or not a process
    number. The file may have been replaced by its server's user (the postgres user writes postmaster.pid, which
    root's tool reads): a FIFO (opened non-blocking, refused as not a regular file), a symlink (to /dev/zero, say:
    not followed), a huge file (at most PID_FILE_MAX_BYTES read) or a number past any pid (0) costs nothing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return 0
        head = os.read(fd, PID_FILE_MAX_BYTES)
    except OSError:
        return 0
    finally:
        os.close(fd)
    try:
        pid = int(head.split()[0])
    except (ValueError, IndexError):
        return 0
    return pid if 0 < pid <= PID_MAX else 0


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process this user may signal. EPERM (another user's process: a pid file's number
    reused after a crash or a reboot) is not alive for us: every server here runs as this user, or as root's
    postgres user when we are root, whom root may signal. A zombie (our own exited child) is not alive either."""
    if not 0 < pid <= PID_MAX:  # (os.kill raises OverflowError past a C int)
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


@contextlib.contextmanager
def pinned(pid: int) -> Iterator[int | None]:
    """A pidfd for ``pid`` (None when there is no such process) for the ``with`` block: check that the process is
    ours, then signal it with :func:`signal_pinned`. A signal through the pidfd reaches the process that was
    pinned or none (ESRCH once it has exited), never one that reused its number between the check and the signal."""
    fd = None
    if 0 < pid <= PID_MAX:
        try:
            fd = os.pidfd_open(pid)
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            pass  # (ENOENT: the number is a thread's, not a process's — no server of ours either)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # (EINVAL: a thread, on other kernels) EMFILE, ENOMEM, ENOSYS: said
                raise
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def signal_pinned(pidfd: int, signum: int) -> bool:
    """Send ``signum`` to the pinned process; False when it has exited already."""
    try:
        signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError:
        return False
    return True


def wait_pinned(pidfd: int, timeout_s: float) -> bool:
    """Wait until the pinned process has exited (its pidfd turns readable); False when ``timeout_s`` passed first."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(int(timeout_s * 1000)))


def our_server_runs(pid: int, root: Path) -> bool:
    """A pid file's process is running and is the server of ``root`` (:func:`is_our_server`): what status, up, down and
    pid_of go by, never the number alone."""
    return pid_alive(pid) and is_our_server(pid, root)


def is_our_server(pid: int, root: Path) -> bool:
    """Whether ``pid`` is the server started on ``root``: it runs in ``root`` (a Redis's ``dir``, PostgreSQL's data
    directory; Redis rewrites its command line, so that cannot say) or its command line names ``root``'s redis.conf.
    A pid file left by a crash or a reboot may name a process that reused the number (another user's process: its
    cwd cannot even be read). Root without CAP_SYS_PTRACE may not read the cwd of a server that root started with
    more capabilities (`up` from a full root shell, `down` from a confined one): then :func:`_redis_by_title`."""
    try:
        if Path(os.readlink(f"/proc/{pid}/cwd")) == root.resolve():
            return True
        return str(root / "redis.conf").encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except PermissionError:
        return _redis_by_title(pid, root)
    except OSError:
        return False


def _redis_by_title(pid: int, root: Path) -> bool:
    """What anyone may read says ``pid`` is ``root``'s Redis: it belongs to the owner of ``root`` and its command
    line, which Redis rewrites to ``redis-server 127.0.0.1:PORT``, names the port of ``root``'s redis.conf."""
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.stat(root).st_uid:
            return False
        words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
        conf = (root / "redis.conf").read_bytes()[:65536].decode(errors="replace").splitlines()
    except OSError:
        return False
    ports = [line.split()[1] for line in conf if len(line.split()) == 2 and line.split()[0] == "port"]
    if len(ports) != 1 or not words or os.path.basename(words[0]) != b"redis-server":
        return False
    return f"127.0.0.1:{ports[0]}".encode() in words


def our_postmaster_runs(pid: int, data: Path) -> bool:
    """A postmaster.pid's process is running and is the PostgreSQL server of ``data`` (:func:`is_our_postmaster`)."""
    return pid_alive(pid) and is_our_postmaster(pid, data)


def is_our_postmaster(pid: int, data: Path) -> bool:
    """Whether ``pid`` is the postmaster of the cluster in ``data``, judged by what any user can read: the process
    belongs to the cluster's owner (the owner of ``data``: the postgres user when we are root) and its command line
    is ``postgres -D <data>`` (pg_ctl starts it so; its children rewrite theirs). Its cwd (the postmaster runs in
    ``data``) is checked too when it can be read: root without CAP_SYS_PTRACE (Docker's default, many CI and
    systemd setups) may not read another user's /proc/PID/cwd, and that refusal alone says nothing."""
    try:
        owner = os.stat(data).st_uid
        proc = os.stat(f"/proc/{pid}")
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return False
    if proc.st_uid != owner:
        return False
    # The path as `up` gave it to pg_ctl, compared as written: a path in the owner's command line is never resolved
    # (a symlink loop raised RuntimeError; a path into a FUSE mount of the owner's could hang root's tool).
    try:
        want = data.resolve()
    except (OSError, RuntimeError):
        return False
    named = {argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == b"-D"}
    if not named & {os.fsencode(data), os.fsencode(want)}:
        return False
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == want
    except PermissionError:  # (EACCES: not allowed to look; the owner and the command line said it)
        return True
    except OSError:
        return False
