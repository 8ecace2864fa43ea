"""The start-up heap freeze (node/heap.py, ``[node] gc_freeze``): garbage collected first, what is alive moved out
of the collector's reach, and the daemon doing it once its services started, before its transports start (no peer's
input in the frozen heap; on by default, off by the setting)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

import node.heap
from node import daemon
from node.identity import Identity
from node.node import Node
from node.settings import Config, NodeSection
from node.transports.base import LinkSink, Transport

REPO = Path(__file__).resolve().parents[1]

# Run in a child: a freeze is process-wide and would keep the test session's objects forever.
FREEZE_CHILD = """
import gc, json, weakref
from node.heap import freeze_startup_heap

class Box:
    pass

def cycle():
    a, b = Box(), Box()
    a.other, b.other = b, a
    return a

gc.disable()  # no collection before the one under test
dead = cycle()
freed = []
weakref.finalize(dead, freed.append, True)
del dead  # unreachable cycle: only the cyclic collector frees it
kept = [cycle() for _ in range(20_000)]  # alive at start-up: 40,000 boxes and their dicts
tracked_before = len(gc.get_objects())
frozen = freeze_startup_heap()
tracked_after = len(gc.get_objects())
print(json.dumps({"freed": freed, "frozen": frozen, "before": tracked_before, "after": tracked_after}))
"""


def test_freeze_collects_garbage_first_then_takes_the_live_heap_out_of_the_collectors_walk() -> None:
    r = subprocess.run(
        [sys.executable, "-c", FREEZE_CHILD],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["freed"] == [True]  # the unreachable cycle was collected before the freeze, not frozen forever
    assert out["frozen"] >= 40_000  # the live boxes are in the permanent generation
    assert out["before"] >= 40_000 and out["after"] < out["before"] - 40_000  # a full collection no longer walks them


async def _run_until_ready_then_stop(node_: Node) -> None:
    async def runner() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(node_.run)
            await node_.wait_ready()
            await trio.testing.wait_all_tasks_blocked()  # the daemon's task waiting for readiness has run (or none)
            node_.request_stop()

    await daemon._serve(node_, runner)


class _Recording(Transport):
    """A transport that makes no link and records that it started."""

    def __init__(self) -> None:
        self.started = False

    @property
    def name(self) -> str:
        return "recording"

    async def run(self, link_sink: LinkSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.started = True
        task_status.started()
        await trio.sleep_forever()


class _Service:
    name = "recording"

    def __init__(self) -> None:
        self.started = False

    async def run(self, node_: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.started = True
        task_status.started()
        await trio.sleep_forever()


@pytest.mark.parametrize("enabled", [True, False])
async def test_the_daemon_freezes_the_heap_after_the_services_before_the_transports_unless_told_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, enabled: bool
) -> None:
    calls: list[tuple[bool, bool]] = []

    def record() -> int:  # the real freeze would keep this test session's objects: the child test above runs it
        calls.append((service.started, transport.started))
        return 1

    monkeypatch.setattr(node.heap, "freeze_startup_heap", record)
    cfg = Config(data_dir=tmp_path, node=NodeSection(gc_freeze=enabled))
    transport, service = _Recording(), _Service()
    node_ = Node(
        cfg, Identity.generate(), control=False, persistent_inbox=False, transports=[transport], services=[service]
    )
    with trio.fail_after(30):
        await _run_until_ready_then_stop(node_)
    assert transport.started and service.started
    assert calls == ([(True, False)] if enabled else [])  # once: services up, no transport (no peer input) yet
