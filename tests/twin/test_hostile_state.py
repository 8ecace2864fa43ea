"""A hostile or corrupt ``twin/state.bin`` (only someone who can write the user's 0700 data dir can plant one):
every unusable file is kept aside as ``state.bin.bad`` and the twin starts fresh, never taking the daemon down;
loading costs one step per n-gram whatever the counts say."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from node.twin import blob, rnn, store
from node.twin.engine import Event, TwinEngine
from node.twin.errors import TwinError, TwinStoreError
from node.twin.gate import SHIPPED_SCORE, START_BITS
from node.twin.personal import PersonalKN, ctx_key
from node.twin.prior import GlobalPrior
from node.twin.service import TwinService
from node.twin.settings import TwinSettings

from .test_service import Power, fake_embed, make

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
    assert m.f3[ctx_key(1, 2)] == {3: BIG, 4: BIG} and m.s3[ctx_key(1, 2)] == [2 * BIG, 0, 0, 2]
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
    "gate threshold is NaN": _set_meta("gate_threshold_bits", float("nan")),
    "gate threshold is infinite": _set_meta("gate_threshold_bits", float("inf")),
    "gate threshold is past a float": _set_meta("gate_threshold_bits", 10**400),
    "gate threshold is text": _set_meta("gate_threshold_bits", "3"),
    "contacts count is text": _set_meta("contacts", {"alice": "many"}),
    "trigram counts are NaN floats": _set_array("tri_counts", lambda a: np.full(len(a["tri_counts"]), np.nan)),
    "lam is NaN": _set_array("lam", lambda a: np.full(len(a["lam"]), np.nan)),
    "action weights are infinite": _set_array("x_act_w", lambda a: np.full_like(a["x_act_w"], np.inf)),
    "a trigram listed 1000 times with count 2**31-1": _cpu_bomb,
    # Past the writer's int32 clamp: it loaded, and one more of that trigram overflowed every save and prune.
    "a trigram count past int32": _set_array("tri_counts", lambda a: np.full(len(a["tri_counts"]), 2**63 - 1)),
    # Review of ingest4: it loaded, and the next action made it 2**63, past int64: every save failed.
    "act_events at int64's maximum": _set_array("x_act_events", lambda a: np.array([2**63 - 1], dtype=np.int64)),
    "act_events negative": _set_array("x_act_events", lambda a: np.array([-1], dtype=np.int64)),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_a_hostile_state_file_is_kept_aside_and_the_twin_starts_fresh(tmp_path: Path, case: str) -> None:
    path = await _learn_one(tmp_path)
    arrays, meta = store.unpack_state(path.read_bytes(), max_bytes=1 << 30)
    arrays = dict(arrays)
    HOSTILE[case](arrays, meta)
    planted = store.pack_state(arrays, meta)
    path.write_bytes(planted)
    await _check_contained(tmp_path, path, planted)


def _with_shape(data: bytes, name: str, shape: list[int]) -> bytes:
    """``data`` (a :func:`blob.pack` blob) with the header's shape of array ``name`` replaced: pack refuses to write
    such shapes, a hostile writer does not ask it."""
    header_len = int.from_bytes(data[6:10], "big")
    header = json.loads(data[10 : 10 + header_len])
    for entry in header["arrays"]:
        if entry["name"] == name:
            entry["shape"] = shape
    raw = json.dumps(header, separators=(",", ":")).encode()
    return data[:6] + len(raw).to_bytes(4, "big") + raw + data[10 + header_len :]


# Review of session 5: an empty array of any shape passed (np.prod wrapped, no bound on a dimension), then
# finite_array(...).tolist() built a list per row: [2**40, 0] was a MemoryError nobody caught (the file stayed in
# place and failed every event), [2**27, 0] 8 GB of empty lists (the daemon OOM-killed, again after each restart).
HOSTILE_SHAPES = {
    "lam shaped [2**40, 0]": ("lam", [2**40, 0]),
    "lam shaped [2**27, 0]": ("lam", [2**27, 0]),
    "lam shaped [3, 0]": ("lam", [3, 0]),
    "kappa shaped [2**40, 0]": ("kappa", [2**40, 0]),
    "lam shaped [2**32, 2**32] (the int64 product wraps to 0)": ("lam", [2**32, 2**32]),
    "lam with three dimensions": ("lam", [1, 1, 0]),
    "lam with no dimension": ("lam", []),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SHAPES))
async def test_a_state_with_a_hostile_shape_is_kept_aside(tmp_path: Path, case: str) -> None:
    name, shape = HOSTILE_SHAPES[case]
    path = await _learn_one(tmp_path)
    arrays, meta = store.unpack_state(path.read_bytes(), max_bytes=1 << 30)
    arrays = dict(arrays)
    arrays[name] = np.zeros(0, dtype=np.float64)
    planted = _with_shape(blob.pack(store.MAGIC, store.V1_FORMAT_VERSION, arrays, meta), name, shape)  # (format 1)
    with pytest.raises(TwinStoreError):  # refused by the reader itself, before anyone builds lists from it
        store.unpack_state(planted, max_bytes=1 << 30)
    path.write_bytes(planted)
    await _check_contained(tmp_path, path, planted)


@pytest.mark.parametrize("shape", [(2**27, 0), (1, 0), (2, 2, 2)])
def test_pack_refuses_the_shapes_the_reader_refuses(shape: tuple[int, ...]) -> None:
    with pytest.raises(TwinStoreError, match="shape"):
        blob.pack(store.MAGIC, store.V1_FORMAT_VERSION, {"a": np.zeros(shape, dtype=np.float32)}, {})


async def test_any_exception_while_loading_keeps_the_file_aside(tmp_path: Path, monkeypatch: Any) -> None:
    """The backstop: a check the decoder misses (here a ValueError planted in it) still moves the file aside
    instead of failing every event and every restart; a second bad file does not overwrite the first one kept."""
    path = await _learn_one(tmp_path)
    planted = path.read_bytes()
    (path.parent / "state.bin.bad").write_bytes(b"an earlier bad file")

    def missed_check(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("a check the decoder missed")

    with monkeypatch.context() as m:
        m.setattr(store, "decode_into", missed_check)
        svc = make(tmp_path, Power(90, True))
        async with trio.open_nursery() as n:
            await n.start(svc.run, None)
            svc.record("message", "another one", action="messages.send")
            await svc.idle.wait()
            st = await svc.status()
            assert st["load_error"] and "ValueError" in st["load_error"], st
            assert st["messages_learned"] == 1 and st["learn_errors"] == 0
            n.cancel_scope.cancel()
    kept = sorted(p.name for p in path.parent.glob("state.bin.bad*"))
    assert len(kept) == 2 and (path.parent / "state.bin.bad").read_bytes() == b"an earlier bad file"
    assert [p.read_bytes() for p in path.parent.glob("state.bin.bad.*")] == [planted]


@pytest.mark.parametrize("failure", [OSError(24, "Too many open files"), MemoryError()])
async def test_a_transient_failure_to_read_the_state_never_loses_it(
    tmp_path: Path, monkeypatch: Any, failure: BaseException
) -> None:
    """The machine, not the file (EMFILE, EIO, no memory): the state stays where it is, nothing learned meanwhile
    is saved over it, and it loads once the failure is gone — on two runs in a row (review of session 5: the first
    run moved it aside, the second overwrote the copy kept aside)."""
    path = await _learn_one(tmp_path)
    good = path.read_bytes()

    def fails(*args: Any, **kwargs: Any) -> Any:
        raise failure

    for _ in range(2):
        with monkeypatch.context() as m:
            m.setattr(store, "read_state", fails)
            svc = make(tmp_path, Power(90, True))
            async with trio.open_nursery() as n:
                await n.start(svc.run, None)
                svc.record("message", "learned while the state cannot be read", action="messages.send")
                await svc.idle.wait()
                st = await svc.status()
                assert st["load_error"] and "the file is kept" in st["load_error"], st
                n.cancel_scope.cancel()
        assert path.read_bytes() == good
        assert not list(path.parent.glob("state.bin.bad*"))
    svc = make(tmp_path, Power(90, True))
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        st = await svc.status()
        assert not st["load_error"] and st["messages_learned"] >= 1, st
        n.cancel_scope.cancel()


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


@pytest.mark.parametrize("value", [-64.0, -40.5, -4.5, 4.0, 40.0, 40.5, 64.0, 1e300])
def test_a_gate_threshold_its_score_could_not_reach_resets_only_the_gate(value: float) -> None:
    """Review twingate3 #2: edgec scores lie within a few bits of 0 (real ones ~±2), so a stored 40 bits pinned
    the gate shut for ~700 messages, and a value past ±40 moved the whole learned state aside. Now a finite
    threshold further than 4 bits from the score's start resets the gate alone: the counts, words and the
    neural adaptation load."""
    prior = GlobalPrior.load_packaged()
    # (every message passes at gate_fraction 1.0: whether one of five similar ones would at 0.5 depends on the tier)
    eng = TwinEngine(prior, neural=rnn.load_packaged(prior.p1, prior.unk, prior.bos), gate_fraction=1.0)
    for i in range(5):
        eng.observe(Event("message", f"hello there friend number {i} of the zorblat club", "messages.send", 0))
    eng.gate.threshold_bits = value
    back = TwinEngine(prior, neural=rnn.load_packaged(prior.p1, prior.unk, prior.bos), gate_fraction=1.0)
    back.decode(eng.encode(10_000_000), 10_000_000)
    assert back.gate.threshold_bits == START_BITS[SHIPPED_SCORE]
    assert back.lm.messages == 5 and back.lm.personal.f3 == eng.lm.personal.f3 and "zorblat" in back.lm.words
    assert back.neural_updates == eng.neural_updates > 0 and back.lm.neural is not None
    assert eng.lm.neural is not None and np.array_equal(back.lm.neural.state()["nn_w"], eng.lm.neural.state()["nn_w"])


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), -float("inf"), 10**400, "3", True],
    ids=["nan", "inf", "-inf", "int", "text", "bool"],
)
def test_a_gate_threshold_that_is_not_a_finite_number_is_refused_naming_the_key(value: Any) -> None:
    """A file whose threshold is not a finite number was not written by the twin (encode writes the start value
    in place of a non-finite one): refused as corrupt, naming the key."""
    prior = GlobalPrior.load_packaged()
    eng = TwinEngine(prior)
    eng.observe(Event("message", "hello there friend", "messages.send", 0))
    arrays, meta = store.unpack_state(eng.encode(10_000_000), max_bytes=1 << 30)
    meta["gate_threshold_bits"] = value
    with pytest.raises(TwinStoreError, match="gate_threshold_bits"):
        TwinEngine(prior).decode(store.pack_state(dict(arrays), meta), 10_000_000)
    eng.gate.threshold_bits = float("nan")  # and the encoder never writes one
    _, written = store.unpack_state(eng.encode(10_000_000), max_bytes=1 << 30)
    assert written["gate_threshold_bits"] == START_BITS[SHIPPED_SCORE]


@pytest.mark.parametrize("value", [-4.25, -0.75, 0.0, 3.25, 3.6])
def test_a_gate_threshold_in_range_is_restored(value: float) -> None:
    prior = GlobalPrior.load_packaged()
    eng = TwinEngine(prior)
    eng.observe(Event("message", "hello there friend", "messages.send", 0))
    eng.gate.threshold_bits = value
    back = TwinEngine(prior)
    back.decode(eng.encode(10_000_000), 10_000_000)
    assert back.gate.threshold_bits == value


_LZMA_DICT_BOMB = r"""
import resource, struct, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from node.twin import blob
from node.twin.errors import TwinError, TwinStoreError
# an .lzma ("alone") body of 45 bytes declaring a 4 GiB dictionary, size unknown
body = bytes([0x5D]) + struct.pack("<I", 0xFFFFFFFF) + b"\xff" * 8 + b"\x00" * 32
header = b'{"arrays":[],"meta":{}}'
data = blob._HEADER.pack(b"AVTS", 1, len(header)) + header + body
try:
    blob.unpack_untrusted(data, b"AVTS", 1, max_bytes=1 << 20)
except TwinStoreError as exc:
    print("refused:", exc)
"""


def test_a_body_declaring_a_huge_lzma_dictionary_is_refused_under_a_memory_limit() -> None:
    """Review of session 5: the decoder had no memlimit, so under ``ulimit -v`` (32-bit Pi OS, Termux) a 70-byte
    file was a MemoryError, not a store error, and was never moved aside. Run with a 1 GiB address-space limit."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", _LZMA_DICT_BOMB], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert out.returncode == 0 and "refused:" in out.stdout and "Memory usage limit" in out.stdout, out


@pytest.mark.parametrize("name", ["words", "x_act_names"])
def test_a_newline_bomb_is_refused_before_it_is_split(name: str) -> None:
    """A word list (or action names) of 32 million newlines: 32 MB of payload from a small file, and splitting it
    would hold a 256 MB list before the count was checked. The count is checked on the bytes: loading costs no
    more memory than unpacking the file does."""
    prior = GlobalPrior.load_packaged()
    eng = TwinEngine(prior)
    eng.observe(Event("message", "hello there friend", "messages.send", 0))
    eng.observe(Event("command", "", "messages.send", 0))
    arrays, meta = store.unpack_state(eng.encode(10_000_000), max_bytes=1 << 30)
    arrays = dict(arrays)
    arrays[name] = np.frombuffer(b"\n" * 32_000_000, dtype=np.uint8)
    # Action names in a format-2 light section are refused by its own bound (test_save_sections); in a format-1 file
    # (one blob, the file's raw bound) the head's checks on the bytes refuse them.
    v1 = name == "x_act_names"
    data = blob.pack(store.MAGIC, store.V1_FORMAT_VERSION, arrays, meta) if v1 else store.pack_state(arrays, meta)
    tracemalloc.start()
    try:
        store.unpack_state(data, max_bytes=10_000_000 * store.MAX_RAW_FACTOR)
        unpack_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    fresh = TwinEngine(prior)
    tracemalloc.start()
    try:
        with pytest.raises(TwinStoreError, match=r"out of bounds|does not fit"):
            fresh.decode(data, 10_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < unpack_peak + 32_000_000, (peak, unpack_peak)  # the split alone: 256 MB


def test_oversized_mixture_weights_are_refused_by_their_shape() -> None:
    prior = GlobalPrior.load_packaged()
    eng = TwinEngine(prior)
    eng.observe(Event("message", "hello there friend", "messages.send", 0))
    arrays, meta = store.unpack_state(eng.encode(10_000_000), max_bytes=1 << 30)
    arrays = dict(arrays)
    arrays["lam"] = np.zeros(1_000_000)
    with pytest.raises(TwinStoreError, match="mixture weights"):
        TwinEngine(prior).decode(store.pack_state(arrays, meta), 10_000_000)


@pytest.mark.parametrize(
    ("mutate", "said"),
    [
        (_set_meta("gate_threshold_bits", 40.0), "(40 bits) is not one its score could reach"),
        (_set_meta("gate_score", "mixture"), "another gate score (mixture)"),
        (lambda arrays, meta: meta.pop("gate_score"), "another gate score (unrecorded)"),
    ],
    ids=["out-of-range", "other-score", "no-score"],
)
async def test_twin_status_says_why_a_stored_gate_was_reset(tmp_path: Path, mutate: Mutate, said: str) -> None:
    """A gate threshold reset on load (the rest kept) is reported by status, as the neural tier's reset is; a
    state whose gate loads says nothing."""

    def make(d: Path, power: Power) -> TwinService:  # the gate steers the neural tier: status shows it with it
        settings = TwinSettings(neural=True, poll_interval_s=60, save_interval_s=3600)
        return TwinService(settings, d, battery_reader=power, thermal_reader=lambda: 35.0, embed=fake_embed)

    svc = make(tmp_path, Power(90, True))
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        svc.record("message", "hello there friend of the zorblat club", action="messages.send")
        await svc.idle.wait()
        assert await svc.save_now() > 0
        n.cancel_scope.cancel()
    clean = make(tmp_path, Power(90, True))
    async with trio.open_nursery() as n:
        await n.start(clean.run, None)
        await clean.suggest("hello ")  # the language model (and the gate with it) loads at its first use
        st = await clean.status()
        assert st["neural"]["gate_reset"] is None and st["neural"]["reset"] is None, st
        n.cancel_scope.cancel()
    arrays, meta = store.unpack_state(svc.path.read_bytes(), max_bytes=1 << 30)
    arrays = dict(arrays)
    mutate(arrays, meta)
    svc.path.write_bytes(store.pack_state(arrays, meta))
    again = make(tmp_path, Power(90, True))
    async with trio.open_nursery() as n:
        await n.start(again.run, None)
        await again.suggest("hello ")
        st = await again.status()
        reason = st["neural"]["gate_reset"]
        assert reason is not None and said in reason and f"{START_BITS[SHIPPED_SCORE]:g} bits" in reason, st
        assert st["neural"]["gate_threshold_bits"] == START_BITS[SHIPPED_SCORE]
        assert st["load_error"] is None and st["neural"]["reset"] is None and st["messages_learned"] == 1, st
        n.cancel_scope.cancel()


async def test_a_save_that_fails_unexpectedly_neither_ends_the_node_nor_loses_the_state(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The saver runs in the node's nursery: an exception the encoder was never meant to raise is logged and the
    state stays dirty (saved once it works again), instead of ending the twin and, with it, the node."""
    svc = make(tmp_path, Power(90, True))
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        svc.record("message", "hello there friend", action="messages.send")
        await svc.idle.wait()
        engine = svc.engine
        assert engine is not None

        def broken(*args: Any, **kwargs: Any) -> bytes:
            raise OverflowError("Python int too large to convert to C long")

        with monkeypatch.context() as m:
            m.setattr(engine, "encode", broken)
            with pytest.raises(TwinError, match="OverflowError"):  # nothing written: save_now says so
                await svc.save_now()
        assert not svc.path.exists()  # and the service is still running
        st = await svc.status()
        assert st["messages_learned"] == 1
        svc.record("message", "still learning", action="messages.send")
        await svc.idle.wait()
        assert (await svc.status())["messages_learned"] == 2
        assert await svc.save_now() > 0  # the state kept since the failure is saved now
        n.cancel_scope.cancel()


def test_a_state_decompressing_past_its_raw_bound_is_refused() -> None:
    """Review of ingest4: the payload cap was 64x twin.max_disk_bytes (640 MB as one bytes object at the default, from
    ~100 KB of zeros). Real states decompress x2.5-x6.2 (bench/twin_state_ratio.py): the cap is now 16x the bound,
    and never under MIN_RAW_BOUND_BYTES, so a small bound's state that compresses unusually well still loads."""
    assert store.raw_bound(10_000_000) == 16 * 10_000_000
    prior = GlobalPrior.load_packaged()
    eng = TwinEngine(prior)
    eng.observe(Event("message", "hello there friend", "messages.send", 0))
    max_bytes = 100_000  # the smallest twin.max_disk_bytes: its raw bound is the floor
    assert store.raw_bound(max_bytes) == store.MIN_RAW_BOUND_BYTES > 16 * max_bytes
    arrays, meta = store.unpack_state(eng.encode(max_bytes), max_bytes=1 << 30)
    arrays = dict(arrays)
    arrays["x_zeros"] = np.zeros(store.MIN_RAW_BOUND_BYTES + 1, dtype=np.uint8)  # past the floor, a file of ~KB
    data = store.pack_state(arrays, meta)
    assert len(data) < max_bytes
    with pytest.raises(TwinStoreError, match=r"payload over|dimension out of range"):  # (from its header, now)
        TwinEngine(prior).decode(data, max_bytes)
    arrays["x_zeros"] = np.zeros(20 * max_bytes, dtype=np.uint8)  # 20x a small bound, under the floor: it loads
    TwinEngine(prior).decode(store.pack_state(arrays, meta), max_bytes)
