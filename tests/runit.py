"""A runit service under ``runsv`` for tests, stopped for good whatever the test did.

CI once found a ``village run`` still running after the runit test (its cwd a deleted /tmp/vsv-*/sv/aivillage): the
test's teardown killed runsv alone, and runsv's child lived on. :func:`supervised` stops the service and its log
service the way ``sv`` does, waits for every process of theirs to be gone — by pid, on a pidfd (an event, not a
polling sleep) — and kills what does not stop in time, even when the test failed midway.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

STOP_TIMEOUT_S = 60.0  # real seconds for a node to stop under load; a clean stop takes well under one


def _parents() -> dict[int, int]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                out[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    return out


def _under(pid: int, root: Path) -> bool:
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd").removesuffix(" (deleted)"))
    except OSError:
        return False
    return cwd == root or root in cwd.parents


def service_processes(runsv_pid: int | None, service: Path) -> set[int]:
    """Every process of the service: runsv's descendants, and any process running in the service's directory
    (the run and log/run scripts' cwd; an orphan of a runsv that died is found so)."""
    parents = _parents()
    found = {pid for pid in parents if pid != os.getpid() and _under(pid, service.resolve())}
    if runsv_pid is not None:
        frontier = [runsv_pid]
        while frontier:
            p = frontier.pop()
            kids = [c for c, pp in parents.items() if pp == p and c not in found]
            found.update(kids)
            frontier.extend(kids)
    found.discard(runsv_pid if runsv_pid is not None else -1)
    return found


def _control(service: Path, commands: bytes) -> None:
    """Write runsv control characters (``d`` down, ``x`` exit) to a service's control pipe, if runsv reads it."""
    try:
        fd = os.open(service / "supervise" / "control", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # no runsv reading it (ENXIO), or none ever started (ENOENT)
        return
    try:
        os.write(fd, commands)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EPIPE):
            raise
    finally:
        os.close(fd)


def _wait_gone(pidfds: dict[int, int], timeout_s: float) -> set[int]:
    """Wait until every process is gone or ``timeout_s`` passed; the pids still running."""
    poller = select.poll()
    for fd in pidfds.values():
        poller.register(fd, select.POLLIN)
    left = set(pidfds)
    by_fd = {fd: pid for pid, fd in pidfds.items()}
    deadline = time.monotonic() + timeout_s
    while left:
        remaining_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
        ready = poller.poll(remaining_ms)  # a pidfd is readable once its process has exited
        if not ready:
            break
        for fd, _ in ready:
            left.discard(by_fd[fd])
            poller.unregister(fd)
    return left


def stop_service(runsv: subprocess.Popen[bytes], service: Path, *, term_timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop ``service`` and its log service for good and reap runsv: ``d`` then ``x`` to each control pipe (runsv
    sends TERM and CONT, runs ./finish, exits once both are down), then wait — on pidfds — for every process of the
    service; what is still running after ``term_timeout_s`` is killed (SIGKILL) and waited for. Raises
    AssertionError naming a process that outlived even that."""
    alive = runsv.poll() is None
    pidfds = _pinned_processes(runsv.pid if alive else None, service)
    try:
        if alive:
            _control(service, b"dx")
            _control(service / "log", b"dx")
        left = _kill_left(pidfds, _wait_gone(pidfds, term_timeout_s))
        try:
            runsv.wait(timeout=term_timeout_s)  # it exits once its services are down (and reaps them)
        except subprocess.TimeoutExpired:
            runsv.kill()
            runsv.wait(timeout=STOP_TIMEOUT_S)
        # A child runsv started after the first look (the test failed before its service was up) is an orphan now:
        # it still runs in the service's directory.
        late = _pinned_processes(None, service, skip=frozenset(pidfds))
        pidfds.update(late)
        left |= _kill_left(late, set(late))
        assert not left, f"processes of {service} still running after SIGKILL: {sorted(left)}"
    finally:
        for fd in pidfds.values():
            os.close(fd)


def _pinned_processes(runsv_pid: int | None, service: Path, skip: frozenset[int] = frozenset()) -> dict[int, int]:
    """A pidfd for each process of the service (:func:`service_processes`, less ``skip``), each confirmed by a
    second look at the process list taken after it was pinned: a number freed and reused between the first look
    and pidfd_open names another process, which the second look leaves out (and which is never signalled)."""
    pidfds = _pidfds(service_processes(runsv_pid, service) - skip)
    confirmed = service_processes(runsv_pid, service)
    for pid in set(pidfds) - confirmed:
        os.close(pidfds.pop(pid))
    return pidfds


def _pidfds(pids: set[int]) -> dict[int, int]:
    out = {}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # gone already
            out[pid] = os.pidfd_open(pid)  # from here on, the pid cannot name another process
    return out


def _kill_left(pidfds: dict[int, int], left: set[int]) -> set[int]:
    """SIGKILL the processes ``left`` (by pidfd) and wait for them; the pids that still run."""
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfds[pid], signal.SIGKILL)
    return _wait_gone({pid: pidfds[pid] for pid in left}, STOP_TIMEOUT_S)


@contextlib.contextmanager
def supervised(
    service: Path, env: Mapping[str, str], *, term_timeout_s: float = STOP_TIMEOUT_S
) -> Iterator[subprocess.Popen[bytes]]:
    """``runsv service`` for the ``with`` block; on the way out (however the block ends) :func:`stop_service`."""
    runsv = subprocess.Popen(["runsv", str(service)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield runsv
    finally:
        stop_service(runsv, service, term_timeout_s=term_timeout_s)
