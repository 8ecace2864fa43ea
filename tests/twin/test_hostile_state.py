"""A hostile or corrupt ``twin/state.bin`` (only someone who can write the user's 0700 data dir can plant one):
every unusable file is kept aside as ``state.bin.bad`` and the twin starts fresh, never taking the daemon down;
loading costs one step per n-gram whatever the counts say."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from node.twin import blob, store
from node.twin.engine import Event, TwinEngine
from node.twin.errors import TwinStoreError
from node.twin.personal import PersonalKN
from node.twin.prior import GlobalPrior

from .test_service import Power, make

Arrays = dict[str, np.ndarray[Any, Any]]
Mutate = Callable[[Arrays, dict[str, Any]], None]
BIG = 2**31 - 1


def test_loading_sets_counts_exactly_as_replaying_them() -> None:
    rng = np.random.default_rng(7)
    online = PersonalKN(bos=0)
    for _ in range(300):  # a skewed vocabulary: counts of 1, 2, 3, 4 and far more, in every order
        online.add_message((rng.zipf(1.6, size=int(rng.integers(1, 12))) % 60 + 1).tolist())
    online.refresh_discounts()
    a = online.to_arrays()
    loaded = PersonalKN.from_arrays(0, a["tri"], a["tri_counts"])
    assert loaded.f3 == online.f3 and loaded.s3 == online.s3
    assert loaded.f2 == online.f2 and loaded.s2 == online.s2
    assert loaded.f1 == online.f1 and loaded.s1 == online.s1
    assert loaded.coc == online.coc and loaded.d == online.d
    assert (loaded.trigrams, loaded.tokens) == (online.trigrams, online.tokens)
    assert loaded.probs(3, 4, range(1, 61), 100) == online.probs(3, 4, range(1, 61), 100)


def test_a_huge_count_is_set_not_replayed() -> None:
    """The replaying loader called add() min(count, 10**6) times per trigram: a 3 KB file could cost CPU-days."""
    tri = np.array([[1, 2, 3], [1, 2, 4], [5, 2, 3]], dtype=np.int32)
    m = PersonalKN.from_arrays(0, tri, np.full(3, BIG, dtype=np.int32))
    assert m.f3[(1, 2)] == {3: BIG, 4: BIG} and m.s3[(1, 2)] == [2 * BIG, 0, 0, 2]
    assert m.f2[2] == {3: 2, 4: 1} and m.tokens == 3 * BIG and m.trigrams == 3


@pytest.mark.parametrize(
    ("tri", "counts"),
    [
        (np.tile(np.array([1, 2, 3], dtype=np.int32), (4, 1)), np.full(4, BIG, dtype=np.int32)),  # listed 4 times
        (np.array([[1, 2, 3]], dtype=np.int32), np.array([0], dtype=np.int32)),
        (np.array([[1, 2, 3]], dtype=np.float64), np.array([1], dtype=np.int32)),
        (np.array([[1, 2, 3]], dtype=np.int32), np.array([np.nan])),
    ],
)
def test_bad_trigram_arrays_are_refused(tri: np.ndarray[Any, Any], counts: np.ndarray[Any, Any]) -> None:
    with pytest.raises(TwinStoreError):
        PersonalKN.from_arrays(0, tri, counts)


async def _learn_one(d: Path) -> Path:
    svc = make(d, Power(90, True))
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        svc.record("message", "hello there friend", action="messages.send")
        await svc.idle.wait()
        assert await svc.save_now() > 0
        n.cancel_scope.cancel()
    return svc.path


def _set_meta(key: str, value: Any) -> Mutate:
    return lambda arrays, meta: meta.__setitem__(key, value)


def _set_array(key: str, make_value: Callable[[Arrays], np.ndarray[Any, Any]]) -> Mutate:
    return lambda arrays, meta: arrays.__setitem__(key, make_value(arrays))


def _cpu_bomb(arrays: Arrays, meta: dict[str, Any]) -> None:
    arrays["tri"] = np.tile(np.array([1, 2, 3], dtype=np.int32), 1000)
    arrays["tri_counts"] = np.full(1000, BIG, dtype=np.int32)


HOSTILE: dict[str, Mutate] = {
    "messages is text": _set_meta("messages", "x"),
    "topics is an object": _set_meta("topics", {"a": 1}),
    "events is infinite": _set_meta("events", 1e400),
    "mu is NaN": _set_meta("mu", float("nan")),
    "gate threshold is below -64 bits (gate pinned open)": _set_meta("gate_threshold_bits", -100.0),
    "gate threshold is huge (gate pinned shut)": _set_meta("gate_threshold_bits", 1e9),
    "contacts count is text": _set_meta("contacts", {"alice": "many"}),
    "trigram counts are NaN floats": _set_array("tri_counts", lambda a: np.full(len(a["tri_counts"]), np.nan)),
    "lam is NaN": _set_array("lam", lambda a: np.full(len(a["lam"]), np.nan)),
    "action weights are infinite": _set_array("x_act_w", lambda a: np.full_like(a["x_act_w"], np.inf)),
    "a trigram listed 1000 times with count 2**31-1": _cpu_bomb,
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_a_hostile_state_file_is_kept_aside_and_the_twin_starts_fresh(tmp_path: Path, case: str) -> None:
    path = await _learn_one(tmp_path)
    arrays, meta = blob.unpack_untrusted(path.read_bytes(), store.MAGIC, store.FORMAT_VERSION, max_bytes=1 << 30)
    arrays = dict(arrays)
    HOSTILE[case](arrays, meta)
    planted = blob.pack(store.MAGIC, store.FORMAT_VERSION, arrays, meta)
    path.write_bytes(planted)
    await _check_contained(tmp_path, path, planted)


async def test_a_fifo_or_oversized_state_file_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "twin" / "state.bin"
    path.parent.mkdir(mode=0o700)
    os.mkfifo(path)  # reading it would block the worker thread for ever
    await _check_contained(tmp_path, path, None)
    path.unlink(missing_ok=True)
    (path.parent / "state.bin.bad").unlink()
    too_big = b"AVTS" + b"\0" * (make(tmp_path, Power(90, True)).settings.max_disk_bytes + 1)
    path.write_bytes(too_big)
    await _check_contained(tmp_path, path, too_big)


async def _check_contained(data_dir: Path, path: Path, planted: bytes | None) -> None:
    """The twin runs on the planted file: the learner does not crash (the exception would leave svc.run and the
    nursery), the file is moved to state.bin.bad as it was, and learning starts from nothing."""
    svc = make(data_dir, Power(90, True))
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        svc.record("message", "another one", action="messages.send")
        await svc.idle.wait()
        st = await svc.status()
        assert st["load_error"] and "state.bin.bad" in st["load_error"], st
        assert st["messages_learned"] == 1 and st["learn_errors"] == 0
        assert await svc.save_now() > 0
        n.cancel_scope.cancel()
    bad = path.with_name("state.bin.bad")
    assert bad.exists() or bad.is_symlink()
    if planted is not None:
        assert bad.read_bytes() == planted
    reloaded = make(data_dir, Power(90, True))  # and the fresh state written since loads cleanly
    async with trio.open_nursery() as n:
        await n.start(reloaded.run, None)
        st = await reloaded.status()
        assert st["load_error"] is None and st["messages_learned"] == 1
        n.cancel_scope.cancel()


def test_decode_raises_only_twin_store_errors(tmp_path: Path) -> None:
    """Random single-byte flips of a real state: the only error is TwinStoreError (never ValueError & co)."""
    prior = GlobalPrior.load_packaged()
    eng = TwinEngine(prior)
    for i in range(20):
        eng.observe(Event("message", f"message {i} about the grobnik project", "messages.send", 0))
    data = eng.encode(10_000_000)
    header_end = 10 + int.from_bytes(data[6:10], "big")
    rng = np.random.default_rng(3)
    for _ in range(200):
        b = bytearray(data)
        i = int(rng.integers(10, header_end))  # the JSON header: values and types change, it often still parses
        b[i] = int(rng.integers(32, 127))
        with contextlib.suppress(TwinStoreError):  # anything else fails the test
            TwinEngine(prior).decode(bytes(b), 10_000_000)


@pytest.mark.parametrize("value", [-64.5, 64.5, 1e300])
def test_an_out_of_range_gate_threshold_is_refused_naming_the_key(value: float) -> None:
    prior = GlobalPrior.load_packaged()
    eng = TwinEngine(prior)
    eng.observe(Event("message", "hello there friend", "messages.send", 0))
    eng.gate.threshold_bits = value
    with pytest.raises(TwinStoreError, match="gate_threshold_bits"):
        TwinEngine(prior).decode(eng.encode(10_000_000), 10_000_000)


@pytest.mark.parametrize("value", [-64.0, -0.75, 0.0, 3.25, 64.0])
def test_a_gate_threshold_in_range_is_restored(value: float) -> None:
    prior = GlobalPrior.load_packaged()
    eng = TwinEngine(prior)
    eng.observe(Event("message", "hello there friend", "messages.send", 0))
    eng.gate.threshold_bits = value
    back = TwinEngine(prior)
    back.decode(eng.encode(10_000_000), 10_000_000)
    assert back.gate.threshold_bits == value
