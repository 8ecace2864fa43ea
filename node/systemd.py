"""sd_notify: tell systemd (Type=notify) that the node is ready or stopping, and keep its watchdog fed. A no-op
without NOTIFY_SOCKET.

With ``WatchdogSec=`` in the unit, systemd passes ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``); the node then sends
``WATCHDOG=1`` every half of that period from a task of its root nursery (:func:`watchdog_pings`), so a node whose
event loop hangs stops pinging and systemd restarts it (``Restart=on-failure``).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping

import trio

log = logging.getLogger("village.systemd")


def sd_notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to $NOTIFY_SOCKET; returns True if it was sent."""
    addr = (env if env is not None else os.environ).get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("could not notify systemd at %s: %s", addr.lstrip("\0"), exc)
        return False
    return True


def watchdog_interval_s(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None when systemd asked for none, asked
    another process (``WATCHDOG_PID``), or said something unusable."""
    usec, for_pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or not env.get("NOTIFY_SOCKET"):
        return None
    if for_pid and (not for_pid.isdigit() or int(for_pid) != pid):
        return None
    return int(usec) / 2e6


async def watchdog_pings(interval_s: float, notify: Callable[[str], bool] = sd_notify) -> None:
    """Send ``WATCHDOG=1`` now and every ``interval_s`` until cancelled."""
    log.info("systemd watchdog: pinging every %g s", interval_s)
    while True:
        notify("WATCHDOG=1")
        await trio.sleep(interval_s)
