"""A timer task that fails before it pops its due item (a bug, contained) leaves the same past deadline: the node's
timer task then pauses (node.routing.timers.TIMER_FAILURE_PAUSE_S) before it runs the timer again, where it used to call
handle_timer again at once, a busy loop counting contained bugs. In-process mesh, trio's autojump clock."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from node.routing.timers import TIMER_FAILURE_PAUSE_S
from tests.routing.harness import start_mesh

SIM_TIMEOUT_S = 600  # simulated seconds
BROKEN_S = 60.0  # simulated seconds the announce task fails for
SPINNING = 20_000  # handle_timer calls that can only come from a busy loop (the pause allows ~BROKEN_S / pause)


async def test_a_timer_task_failing_before_it_pops_pauses_the_timer_not_spins(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh = await start_mesh(nursery, tmp_path, 2)
    mesh.connect(0, 1)
    with trio.fail_after(SIM_TIMEOUT_S):
        await mesh.wait_until_known(0, 1)
    core = mesh.nodes[0].core
    assert core is not None
    calls = [0]
    real_handle = core.handle_timer

    def counting(now: float) -> bool:
        calls[0] += 1
        if calls[0] > SPINNING:  # unfixed: the clock never moves while the loop spins; stop it here
            raise AssertionError("the node's timer task is spinning")
        return real_handle(now)

    def broken(now: float) -> tuple[bool, list[str]]:
        raise RuntimeError("a bug in the announce schedule")

    monkeypatch.setattr(core, "handle_timer", counting)
    monkeypatch.setattr(core.schedule, "on_timer", broken)  # fails before it moves next_announce on
    bugs_before = core.counters.contained_bugs
    await trio.sleep(BROKEN_S)
    assert 2 <= calls[0] <= BROKEN_S / TIMER_FAILURE_PAUSE_S + 50  # paused between runs, still retried
    assert core.counters.contained_bugs - bugs_before <= calls[0]
    assert core.containment.by_cause.get("bug:RuntimeError", 0) >= 2

    monkeypatch.undo()  # the bug is gone: the timer runs on, the announce deadline moves into the future again
    now = trio.current_time()
    await trio.sleep(1.0)
    deadline = core.get_timer()
    assert deadline is not None and deadline > now
