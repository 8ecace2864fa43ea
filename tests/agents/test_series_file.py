"""The Oracle's series survive a restart: saved 0600 and atomically, read back leniently and bounded."""

from __future__ import annotations

import json
import math
import threading
import types
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest
import trio
from trio.testing import MockClock

from node.agents import worktools
from node.agents.forecast import MAX_SAMPLES, trend
from node.agents.worktools import MAX_SERIES_FILE_BYTES, SAVE_EVERY_SAMPLES, NodeMetrics, sample_forever

NOW_S = 1_700_000_000.0


def _put(path: Path, body: bytes | str) -> None:
    """A file as the node leaves it: this user's, 0600."""
    path.write_bytes(body.encode() if isinstance(body, str) else body)
    path.chmod(0o600)


def test_series_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "agents" / "series.json"
    before = NodeMetrics(path)
    for i in range(10):
        before.series["outbox_pending"].add(NOW_S + 30 * i, 20 - 2 * i)
    before.save()
    assert path.stat().st_mode & 0o777 == 0o600
    after = NodeMetrics(path)
    after.load(NOW_S + 400)
    assert list(after.series["outbox_pending"].samples) == list(before.series["outbox_pending"].samples)
    assert after.skipped == 0
    # the Oracle's method sees the old samples: the queue drains 2 per 30 s
    t = trend(after.series["outbox_pending"].last(120))
    assert t is not None and math.isclose(t.slope_per_s, -2 / 30, rel_tol=1e-6)


def test_hostile_or_broken_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "series.json"
    rows = [[NOW_S, 1], [NOW_S + 30, "x"], [NOW_S + 60, 3, 4], [NOW_S + 90, 1e400], [NOW_S - 10, 5], [True, 1]]
    rows += [[NOW_S + 100, 10**400]]  # beyond a float: math.isfinite raised OverflowError and the node never started
    rows += [[NOW_S + 120, 7], [NOW_S + 10**6, 9]]  # the last one lies in the future
    _put(path, json.dumps({"version": 1, "series": {"peers": rows, "secret_metric": [[NOW_S, 1]], "routes": 3}}))
    m = NodeMetrics(path)
    m.load(NOW_S + 200)
    assert list(m.series["peers"].samples) == [(NOW_S, 1.0), (NOW_S + 120, 7.0)]
    assert m.skipped == 7 + 1 + 1  # seven bad rows, one unknown metric, one series that is not a list


def test_each_series_keeps_the_newest_bound(tmp_path: Path) -> None:
    path = tmp_path / "series.json"
    rows = [[NOW_S + i, i] for i in range(MAX_SAMPLES + 500)]
    _put(path, json.dumps({"version": 1, "series": {"routes": rows}}))
    m = NodeMetrics(path)
    m.load(NOW_S + MAX_SAMPLES + 500)
    s = list(m.series["routes"].samples)
    assert len(s) == MAX_SAMPLES and s[-1] == (NOW_S + MAX_SAMPLES + 499, MAX_SAMPLES + 499.0)


def test_unreadable_or_oversized_file_is_moved_aside(tmp_path: Path) -> None:
    for body in (b"{not json", b"[1, 2]", b" " * (MAX_SERIES_FILE_BYTES + 1)):
        path = tmp_path / "series.json"
        _put(path, body)
        m = NodeMetrics(path)
        m.load(NOW_S)  # never raises: the node still starts
        assert not path.exists() and (tmp_path / "series.json.bad").read_bytes() == body
        assert m.skipped == 1 and all(not s.samples for s in m.series.values())


def test_a_symlinked_or_shared_file_is_not_read_and_a_planted_temp_file_is_not_written_through(tmp_path: Path) -> None:
    d = tmp_path / "agents"
    d.mkdir()
    path = d / "series.json"
    elsewhere = tmp_path / "elsewhere.json"
    _put(elsewhere, json.dumps({"version": 1, "series": {"peers": [[NOW_S, 5]]}}))
    path.symlink_to(elsewhere)
    m = NodeMetrics(path)
    m.load(NOW_S)  # refused, not followed: moved aside (the link itself), the node starts empty
    assert m.skipped == 1 and not m.series["peers"].samples
    assert (d / "series.json.bad").is_symlink() and elsewhere.exists()
    _put(path, json.dumps({"version": 1, "series": {"peers": [[NOW_S, 5]]}}))
    path.chmod(0o644)  # group and others may read it: not ours to trust
    m = NodeMetrics(path)
    m.load(NOW_S)
    assert m.skipped == 1 and not m.series["peers"].samples and not path.exists()
    # A temp file planted beside it (0644, or a symlink to a victim) is neither reused nor written through.
    victim = tmp_path / "victim"
    victim.write_text("important\n")
    (d / "series.tmp").symlink_to(victim)
    m.series["peers"].add(NOW_S, 2.0)
    m.save()
    assert victim.read_text() == "important\n"
    assert not path.is_symlink() and path.stat().st_mode & 0o777 == 0o600
    (d / "series.tmp").unlink()
    (d / "series.tmp").write_text("")
    (d / "series.tmp").chmod(0o644)
    m.save()
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["series"]["peers"] == [[NOW_S, 2.0]]


class _Node:
    """What :func:`sample_forever` reads of a node: its wall clock and status."""

    def __init__(self) -> None:
        self.clock = types.SimpleNamespace(wall_ms=lambda: trio.current_time() * 1000 + NOW_S * 1000)

    def status(self) -> dict[str, Any]:
        return {"outbox": {"pending": 1}, "peers": 2, "routes": 3, "counters": {"relayed": 4}}


class _ThreadNotingDeque(deque[tuple[float, float]]):
    iterated_on: ClassVar[set[int]] = set()

    def __iter__(self) -> Iterator[tuple[float, float]]:
        self.iterated_on.add(threading.get_ident())
        return super().__iter__()


def _run_until_saved(m: NodeMetrics, monkeypatch: pytest.MonkeyPatch, fail_first: bool = False) -> list[Path]:
    """Run :func:`sample_forever` (30 s interval, mock clock) until the series file is written once; the first write
    raises if ``fail_first``. The paths each write was asked for."""
    real, calls = worktools._write_private, []

    async def main() -> None:
        saved = trio.Event()

        def write(p: Path, data: Any) -> None:
            calls.append(p)
            if fail_first and len(calls) == 1:
                raise RuntimeError("deque mutated during iteration")
            real(p, data)
            trio.from_thread.run_sync(saved.set)

        monkeypatch.setattr(worktools, "_write_private", write)
        async with trio.open_nursery() as n:
            n.start_soon(sample_forever, cast(Any, _Node()), m, 30.0, trio.CapacityLimiter(1))
            with trio.fail_after(3600):
                await saved.wait()
            n.cancel_scope.cancel()

    trio.run(main, clock=MockClock(autojump_threshold=0.02))
    return calls


def test_the_saver_thread_never_iterates_the_live_series(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The metrics.series tool samples on the trio thread whenever it is called; a worker thread copying the deques
    # meanwhile raised "deque mutated during iteration" (review: cleanup_agents 2).
    path = tmp_path / "series.json"
    m = NodeMetrics(path)
    for s in m.series.values():
        s.samples = _ThreadNotingDeque(maxlen=MAX_SAMPLES)
    _run_until_saved(m, monkeypatch)
    assert _ThreadNotingDeque.iterated_on == {threading.get_ident()}
    assert len(json.loads(path.read_text())["series"]["peers"]) == SAVE_EVERY_SAMPLES


def test_sampling_goes_on_after_an_unexpected_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "series.json"
    m = NodeMetrics(path)
    calls = _run_until_saved(m, monkeypatch, fail_first=True)
    assert len(calls) == 2  # the first save failed, the task lived on and saved the next time
    assert len(json.loads(path.read_text())["series"]["peers"]) == 2 * SAVE_EVERY_SAMPLES
