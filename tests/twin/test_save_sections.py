"""State format 2 (session 9): the language model's part is a section of its own, so a save made while the model is
not loaded copies its bytes as read (checked once at read), with no LZMA work on them; format-1 files still load; a
hostile section is refused or waits for the model's checked decode; code reading format 1 only refuses the file."""

from __future__ import annotations

import lzma
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from node.twin import blob, rnn, store
from node.twin.engine import Event, TwinEngine
from node.twin.errors import TwinStoreError
from node.twin.prior import GlobalPrior

from . import test_lazy_lm as lazy
from .test_lazy_lm import MAX, _service, _sparse_junk
from .test_service import fake_embed

prior, full_state = lazy.prior, lazy.full_state  # (their fixtures)


def _lm_section(data: bytes) -> bytes:
    section = store.unpack_parts_untrusted(data, 1 << 30).lm_section
    assert section is not None and section[:4] == store.LM_MAGIC
    return section


def _frame(light: bytes, lm: bytes, *, version: int = store.FORMAT_VERSION, lm_len: int | None = None) -> bytes:
    n = len(lm) if lm_len is None else lm_len
    return store.MAGIC + version.to_bytes(2, "big") + len(light).to_bytes(4, "big") + n.to_bytes(4, "big") + light + lm


def _sections(data: bytes) -> tuple[bytes, bytes]:
    light_len = int.from_bytes(data[6:10], "big")
    return data[14 : 14 + light_len], data[14 + light_len :]


def test_a_light_save_copies_the_language_model_section_byte_for_byte(full_state: bytes) -> None:
    section = _lm_section(full_state)
    assert len(section) > 10_000  # (the counts, words, recency cache and neural adaptation)
    light = TwinEngine(None, embed=fake_embed)
    light.decode(full_state, MAX)
    saved = full_state
    for action in ("rag.stats", "node.status"):
        light.observe(Event("command", "", action, 0))
        saved = light.encode(MAX)
        assert saved[-len(section) :] == section and _lm_section(saved) == section  # the same bytes, at the end
    assert saved != full_state and not light.lm_loaded
    again = TwinEngine(None)
    again.decode(saved, MAX)
    assert again.events == light.events and "rag.stats" in again.actions.actions


def test_a_light_save_does_no_lzma_work_on_the_language_model_section(
    full_state: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    light = TwinEngine(None, embed=fake_embed)
    light.decode(full_state, MAX)
    light.observe(Event("command", "", "rag.stats", 0))
    packed: list[int] = []
    real_compress = lzma.compress

    def no_decompressor(*args: Any, **kw: Any) -> None:
        raise AssertionError("a light save decompressed something")

    def compress(data: bytes, *args: Any, **kw: Any) -> bytes:
        packed.append(len(data))
        return real_compress(data, *args, **kw)

    monkeypatch.setattr(lzma, "LZMADecompressor", no_decompressor)
    monkeypatch.setattr(lzma, "compress", compress)
    saved = light.encode(MAX)
    light_raw = sum(a.nbytes for a in light.actions.state().values())
    assert packed == [light_raw]  # the next-action head alone (its header is not compressed)
    monkeypatch.undo()
    parts = store.unpack_parts_untrusted(saved, 1 << 30)
    assert parts.lm_arrays is not None
    lm_raw = sum(a.nbytes for a in parts.lm_arrays.values())
    assert lm_raw > 100_000  # what the light save did not repack


def test_a_format_1_file_still_loads_and_is_saved_in_format_2(prior: GlobalPrior, full_state: bytes) -> None:
    arrays, meta = store.unpack_state(full_state, 1 << 30)
    old = blob.pack(store.MAGIC, store.V1_FORMAT_VERSION, arrays, meta, compact=True)  # as session 8 wrote it
    assert old[4:6] == b"\x00\x01"
    light = TwinEngine(None, embed=fake_embed)
    light.decode(old, MAX)
    assert light.status()["messages_learned"] == 6 and light.status()["language_model"]["loads_at_save"] is None
    light.observe(Event("command", "", "rag.stats", 0))
    saved = light.encode(MAX)
    assert saved[4:6] == b"\x00\x02"
    lm_old = {k: (v.dtype.name, v.shape, v.tobytes()) for k, v in arrays.items() if not store.is_light(k)}
    got, got_meta = store.unpack_state(saved, 1 << 30)
    assert {k: (v.dtype.name, v.shape, v.tobytes()) for k, v in got.items() if not store.is_light(k)} == lm_old
    assert {k: v for k, v in got_meta.items() if k not in store.LIGHT_META} == {
        k: v for k, v in meta.items() if k not in store.LIGHT_META
    }
    # ... and the next light save copies the section packed once from the format-1 file
    light.observe(Event("command", "", "node.status", 0))
    assert _lm_section(light.encode(MAX)) == _lm_section(saved)
    # a format-1 file read by an engine with its model: the same model as the format-2 one
    whole_old, whole_new = (TwinEngine(prior, neural=rnn.load_packaged(prior.p1, prior.unk, prior.bos)) for _ in "ab")
    whole_old.decode(old, MAX)
    whole_new.decode(full_state, MAX)
    assert whole_old.suggest("see you at the ", 5) == whole_new.suggest("see you at the ", 5)
    assert whole_old.status()["neural"] == whole_new.status()["neural"]
    # a format-1 file of a node that never had text (session 8's flag): no language-model section
    empty = blob.pack(store.MAGIC, 1, {k: v for k, v in arrays.items() if store.is_light(k)}, {store.LM_EMPTY: True})
    nothing = TwinEngine(None)
    nothing.decode(empty, MAX)
    assert _sections(nothing.encode(MAX))[1] == b""


def test_code_reading_format_1_refuses_a_format_2_file(full_state: bytes) -> None:
    """What session 8's node does with this session's file: its reader (exactly this call) raises TwinStoreError,
    which its service answers by moving the file aside as state.bin.bad and starting fresh — never a crash."""
    with pytest.raises(TwinStoreError, match="format version 2, this node reads version 1"):
        blob.unpack_untrusted(full_state, store.MAGIC, store.V1_FORMAT_VERSION, max_bytes=1 << 30)


def _hostile(full_state: bytes, case: str) -> bytes:
    light, lm = _sections(full_state)
    arrays, meta = store.unpack_state(full_state, 1 << 30)
    lm_arrays = {k: v for k, v in arrays.items() if not store.is_light(k)}
    lm_meta = {k: v for k, v in meta.items() if k not in store.LIGHT_META}
    light_meta = {k: v for k, v in meta.items() if k in store.LIGHT_META}
    cases: dict[str, Callable[[], bytes]] = {
        "truncated": lambda: full_state[:-1],
        "a byte after the sections": lambda: full_state + b"\x00",
        "lengths past the file": lambda: _frame(light, lm, lm_len=len(lm) + 1),
        "version 3": lambda: _frame(light, lm, version=3),
        "the sections swapped": lambda: _frame(lm, light),
        "a light section with a model array": lambda: _frame(store.pack_light(arrays, light_meta), lm),
        "a light section with a model value": lambda: _frame(store.pack_light({}, {**light_meta, "mu": 0.5}), lm),
        "a model section past the raw bound": lambda: _frame(
            light, store.pack_lm({**lm_arrays, "words": np.zeros(store.MIN_RAW_BOUND_BYTES, np.uint8)}, lm_meta)
        ),
    }
    return cases[case]()


@pytest.mark.parametrize(
    "case",
    [
        "truncated",
        "a byte after the sections",
        "lengths past the file",
        "version 3",
        "the sections swapped",
        "a light section with a model array",
        "a light section with a model value",
        "a model section past the raw bound",
    ],
)
def test_a_hostile_state_file_is_refused(prior: GlobalPrior, full_state: bytes, case: str) -> None:
    data = _hostile(full_state, case)
    assert len(data) < MAX
    for eng in (TwinEngine(None), TwinEngine(prior)):
        with pytest.raises(TwinStoreError):
            eng.decode(data, 1_000_000)  # (raw bound: 16 MB)


def test_a_planted_model_section_is_checked_once_and_never_carried(full_state: bytes) -> None:
    """A section within every bound the file has, holding what no real state holds: read once (its checks), then
    the first save waits for the model's checked decode instead of copying it; status says why."""
    light, _ = _sections(full_state)
    arrays, meta = store.unpack_state(full_state, 1 << 30)
    lm_arrays = {k: v for k, v in arrays.items() if not store.is_light(k)}
    lm_meta = {k: v for k, v in meta.items() if k not in store.LIGHT_META}
    planted = _frame(light, store.pack_lm({**lm_arrays, "junk": _sparse_junk(1 << 20)}, lm_meta))
    eng = TwinEngine(None)
    eng.decode(planted, MAX)
    assert eng.status()["language_model"] == {"loaded": False, "loads_at_save": "unknown arrays (junk)"}
    with pytest.raises(TwinStoreError, match="needs the model"):
        eng.encode(MAX)


def test_a_light_save_over_its_bound_is_refused(full_state: bytes) -> None:
    eng = TwinEngine(None)
    eng.decode(full_state, MAX)
    with pytest.raises(TwinStoreError, match="does not fit"):
        eng.encode(len(full_state) - 1)


async def test_a_restarted_service_keeps_the_section_through_light_saves(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        svc.record("message", "see you at the vorpal lounge", action="messages.send")
        await svc.wait_learned(1)
        n.cancel_scope.cancel()
    section = _lm_section(svc.path.read_bytes())
    again = _service(tmp_path)
    async with trio.open_nursery() as n:
        await n.start(again.run, None)
        for i, action in enumerate(("node.status", "rag.stats")):
            again.record("command", "", action=action)
            await again.wait_learned(i + 1)
            assert await again.save_now() > 0
            assert _lm_section(again.path.read_bytes()) == section
            assert os.stat(again.path).st_mode & 0o777 == 0o600
        assert (await again.status())["language_model"] == {"loaded": False, "loads_at_save": None}
        n.cancel_scope.cancel()
    assert not again.path.with_name("state.bin.tmp").exists()


def _light(names: bytes, *, n: int = 1, events: np.ndarray[Any, Any] | None = None) -> bytes:
    """A light section of the next-action head: ``n`` names (``names``, newline-separated) and weights that fit."""
    arrays: dict[str, np.ndarray[Any, Any]] = {
        "x_act_names": np.frombuffer(names, np.uint8),
        "x_act_w": np.zeros((n, 384 + n), np.float32),
        "x_act_b": np.zeros(n, np.float32),
        "x_act_events": np.ones(1, np.int64) if events is None else events,
    }
    return store.pack_light(arrays, {"events": 1})


@pytest.mark.parametrize(
    ("light", "why"),
    [
        (
            _light(b"a" * 400_000),
            f"out of range 0..{store.LIGHT_SECTION_MAX_RAW_BYTES}",
        ),  # past the light section's own bound (295,559 bytes)
        (_light(b"a" * (64 * 4 * 128 + 128)), "act_names is"),  # within it, more than 128 names can be
        (_light("é".encode() * 65), "an action name of 65 characters"),  # learn() keeps 64
        (_light(b"a", events=np.ones(2, np.int64)), "act_events has shape"),
        (_light(b"a", events=np.ones(0, np.int64)), "act_events has shape"),
    ],
)
def test_a_light_section_holding_what_no_action_head_writes_is_refused(light: bytes, why: str) -> None:
    """A planted light section within the file's raw bound (160 MB at the default 10 MB bound) but holding a long
    action name: before, it loaded and every light save re-packed it (a 150 MB name: 11-13 s CPU, ~790 MiB each)."""
    data = store.frame(light, b"")
    assert len(data) < 10_000  # (a few KB of file)
    with pytest.raises(TwinStoreError, match=why):
        TwinEngine(None).decode(data, MAX)
    ok = TwinEngine(None)
    ok.decode(store.frame(_light("é".encode() * 64), b""), MAX)  # the longest name learn() keeps loads
    assert ok.actions.actions == ["é" * 64] and ok.actions.events == 1


def test_the_sections_are_bounded_in_all_not_each(full_state: bytes) -> None:
    """Each section under the raw bound, both together over it: refused (the bound is the file's, in all)."""
    parts = store.unpack_parts_untrusted(full_state, 1 << 30)
    assert parts.lm_arrays is not None
    light_raw = sum(a.nbytes for a in parts.light_arrays.values())
    lm_raw = sum(a.nbytes for a in parts.lm_arrays.values())
    assert 0 < light_raw < lm_raw
    store.unpack_parts_untrusted(full_state, light_raw + lm_raw)  # exactly the bound: read
    with pytest.raises(TwinStoreError, match=r"payload over|out of range"):
        store.unpack_parts_untrusted(full_state, light_raw + lm_raw - 1)
    with pytest.raises(TwinStoreError, match=r"payload over|out of range"):
        store.unpack_parts_untrusted(full_state, lm_raw + light_raw // 2)  # (each alone is under this)
