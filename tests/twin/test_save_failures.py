"""Review of ingest4 (MEDIUM): text with a lone surrogate made every save fail, silently and for ever. Now such text
is cleaned where the twin takes it in, and a save that keeps failing is backed off, reported and honest."""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from node.twin import store
from node.twin.errors import TwinError
from node.twin.rpc import event_of
from node.twin.service import MAX_SAVE_BACKOFF_S, TwinService
from node.twin.settings import TwinSettings

from .test_service import Power, fake_embed, make


@pytest.mark.parametrize(
    ("kind", "text", "contact"),
    [
        ("message", "hello qq\ud800zz friend", None),  # a JS client cutting a string mid-emoji
        ("query", "see you \ud83d", None),
        ("message", "hello there", "peer\udcff"),
        # rag.add of a Latin-1 file name, as argv / os.listdir decode it (surrogateescape)
        (*event_of("rag.add", SimpleNamespace(paths=[os.fsdecode(b"/home/u/docs/r\xe9sum\xe9 2019.txt")]))[:2], None),
    ],
)
async def test_text_with_a_lone_surrogate_is_learned_and_saved(
    tmp_path: Path, kind: str, text: str, contact: str | None
) -> None:
    svc = make(tmp_path, Power(90, True))
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        svc.record("message", "hello there friend", action="messages.send")
        await svc.idle.wait()
        first = await svc.save_now()
        assert svc.record(kind, text, action="messages.send\udc80", contact=contact)
        await svc.idle.wait()
        st = await svc.status()
        assert st["events"] == 2 and st["learn_errors"] == 0
        assert await svc.save_now() != first  # written: the file holds the second event
        st = await svc.status()
        assert st["save_error"] is None and st["save_failures"] == 0
        n.cancel_scope.cancel()
    again = make(tmp_path, Power(90, True))
    async with trio.open_nursery() as n:
        await n.start(again.run, None)
        st = await again.status()
        assert st["load_error"] is None and st["events"] == 2, st
        exported = await again.export()
        n.cancel_scope.cancel()
    assert "\ufffd" in repr(exported)  # the surrogate became U+FFFD, everything else was kept


async def test_a_failing_save_backs_off_is_reported_and_save_now_says_so(
    tmp_path: Path, monkeypatch: Any, caplog: Any
) -> None:
    settings = TwinSettings(neural=False, poll_interval_s=60, save_interval_s=60)
    svc = TwinService(settings, tmp_path, battery_reader=Power(90, True), thermal_reader=lambda: 35.0, embed=fake_embed)
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        svc.record("message", "hello there friend", action="messages.send")
        await svc.idle.wait()
        assert await svc.save_now() > 0
        good = svc.path.read_bytes()
        svc.record("message", "learned while the disk is full", action="messages.send")
        await svc.idle.wait()

        def full(*args: Any, **kwargs: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        delays = [svc._save_delay_s()]
        with monkeypatch.context() as m:
            m.setattr(store, "write_private", full)
            for _ in range(8):
                with pytest.raises(TwinError, match="No space left"):
                    await svc.save_now()
                delays.append(svc._save_delay_s())
            st = await svc.status()
            assert st["save_failures"] == 8 and "No space left" in st["save_error"], st
        assert delays == [60, 120, 240, 480, 960, 1920, MAX_SAVE_BACKOFF_S, MAX_SAVE_BACKOFF_S, MAX_SAVE_BACKOFF_S]
        assert svc.path.read_bytes() == good  # the old file, untouched (save_now did not pass it off as the new one)
        assert await svc.save_now() > 0  # the disk has room again: saved, and the report is cleared
        st = await svc.status()
        assert st["save_error"] is None and st["save_failures"] == 0 and svc._save_delay_s() == 60
        assert svc.path.read_bytes() != good

        def bug(*args: Any, **kwargs: Any) -> bytes:
            raise ValueError("a bug in encoding")

        caplog.clear()
        with monkeypatch.context() as m, caplog.at_level(logging.INFO, logger="village.twin"):
            assert svc.engine is not None
            m.setattr(svc.engine, "encode", bug)
            for _ in range(3):
                with pytest.raises(TwinError, match="ValueError: a bug in encoding"):
                    await svc.save_now()
        failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(failures) == 3 and [r.exc_info is not None for r in failures] == [True, False, False]
        n.cancel_scope.cancel()


async def test_a_stop_while_the_saver_waits_for_the_worker_still_saves_at_shutdown(tmp_path: Path) -> None:
    """Review of fixtwin7: the saver marked the state clean before waiting for the twin's one worker; a stop during
    that wait (a suggestion holding the worker) cancelled the save and the final save found nothing to write."""
    svc = make(tmp_path, Power(90, True))
    entered, release = threading.Event(), threading.Event()
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        svc.record("message", "hello there friend", action="messages.send")
        await svc.idle.wait()
        await svc.save_now()
        svc.record("message", "the vorpal lounge at nine", action="messages.send")
        await svc.idle.wait()
        engine = svc.engine
        assert engine is not None
        real = engine.suggest

        def held(text: str, k: int = 3) -> Any:  # a suggestion holding the worker
            entered.set()
            release.wait(30)
            return real(text, k)

        engine.suggest = held  # type: ignore[method-assign]
        n.start_soon(svc.suggest, "see you")
        await trio.to_thread.run_sync(entered.wait, 30)
        n.start_soon(svc._save)  # the periodic saver, waiting for the worker
        await trio.testing.wait_all_tasks_blocked()
        n.cancel_scope.cancel()  # the node stops
        release.set()
    again = make(tmp_path, Power(90, True))
    async with trio.open_nursery() as n:
        await n.start(again.run, None)
        assert (await again.status())["events"] == 2  # both messages were saved
        n.cancel_scope.cancel()
