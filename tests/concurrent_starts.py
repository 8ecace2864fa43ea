"""Several processes doing the same first start at once (tests/test_tokenfile.py, tests/anchor/gateway/test_auth.py):
each forked child calls ``start(arg)`` and reports what it returned (or the repr of what it raised)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any


def _child(start: Callable[[str], Any], arg: str, out: multiprocessing.Queue[Any]) -> None:
    try:
        out.put(start(arg))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        out.put(repr(exc))


def start_in_processes(start: Callable[[str], Any], arg: str, count: int = 6) -> list[Any]:
    """What ``start(arg)`` returned in each of ``count`` forked processes started together."""
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[Any] = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(start, arg, out)) for _ in range(count)]
    for proc in procs:
        proc.start()
    got = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    return got
