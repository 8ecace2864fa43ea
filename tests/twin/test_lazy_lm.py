"""The twin's language model loads on its first use only (issue 17's footprint): commands and documents are learned,
next actions predicted and the state saved without it; a save without it keeps the user's language-model state byte
for byte; two first uses at once load it once; an unusable language-model part is kept aside and the rest stays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

from node.twin import engine as engine_mod
from node.twin import rnn, store
from node.twin.engine import LIGHT_ARRAYS, LIGHT_META, LM_EMPTY, Event, TwinEngine
from node.twin.errors import TwinError, TwinStoreError
from node.twin.prior import GlobalPrior
from node.twin.service import TwinService
from node.twin.settings import TwinSettings

from .test_service import Power, fake_embed

MAX = 10_000_000
TEXTS = ("see you at the vorpal lounge", "the vorpal lounge opens at nine", "meet me at the vorpal lounge")


@pytest.fixture(scope="module")
def prior() -> GlobalPrior:
    return GlobalPrior.load_packaged()


@pytest.fixture(scope="module")
def full_state(prior: GlobalPrior) -> bytes:
    """A state with every part: counts, words, the neural adaptation, the action head, topics and contacts."""
    neural = rnn.load_packaged(prior.p1, prior.unk, prior.bos)
    eng = TwinEngine(prior, neural=neural, embed=fake_embed, gate_fraction=1.0)  # (every message adapts it)
    for i in range(6):
        eng.observe(Event("message", TEXTS[i % 3] + f" {i} zorblat", "messages.send", 0, contact="ab12"))
        eng.observe(Event("command", "", "node.status", 0))
        eng.observe(Event("document", "pump guide", "rag.add", 0))
    return eng.encode(MAX)


def _lm_part(data: bytes) -> tuple[dict[str, tuple[str, tuple[int, ...], bytes]], dict[str, Any]]:
    arrays, meta = store.unpack_state(data, max_bytes=1 << 30)
    lm_arrays = {
        k: (v.dtype.name, v.shape, v.tobytes())
        for k, v in arrays.items()
        if not (k.startswith("x_") and k[2:] in LIGHT_ARRAYS)
    }
    return lm_arrays, {k: v for k, v in meta.items() if k not in LIGHT_META}


def test_a_save_without_the_language_model_keeps_its_state_byte_for_byte(prior: GlobalPrior, full_state: bytes) -> None:
    light = TwinEngine(None, embed=fake_embed)
    light.decode(full_state, MAX)
    assert not light.lm_loaded and light.status()["language_model"] == {"loaded": False, "loads_at_save": None}
    assert light.status()["messages_learned"] == 6 and light.status()["personal_words"] >= 1
    for _ in range(3):
        light.observe(Event("command", "", "rag.stats", 0))
        light.observe(Event("command", "", "node.status", 0))
    with pytest.raises(TwinError, match="not loaded"):
        light.observe(Event("message", "a text needs the model", "messages.send", 0))
    saved = light.encode(MAX)
    assert not light.lm_loaded  # saving did not load it
    lm_before, meta_before = _lm_part(full_state)
    lm_after, meta_after = _lm_part(saved)
    assert lm_after == lm_before and meta_after == meta_before  # every array (dtype, shape, bytes), every value
    assert len(lm_before) >= 10 and "x_nn_w" in lm_before and "tri" in lm_before
    # ... and the light part is the new one: the action head learned the six commands
    again = TwinEngine(prior, neural=rnn.load_packaged(prior.p1, prior.unk, prior.bos))
    again.decode(saved, MAX)
    assert again.events == 18 + 6 and again.actions.events == 18 + 6 and "rag.stats" in again.actions.actions
    before = TwinEngine(prior, neural=rnn.load_packaged(prior.p1, prior.unk, prior.bos))
    before.decode(full_state, MAX)
    assert again.suggest("see you at the ", 5) == before.suggest("see you at the ", 5)
    assert again.suggest("see you at the ", 1)[0]["token"] == "vorpal"
    assert again.status()["neural"] == before.status()["neural"]


def test_the_language_model_loads_later_with_the_state_read_at_start(prior: GlobalPrior, full_state: bytes) -> None:
    light = TwinEngine(None, embed=fake_embed)
    light.decode(full_state, MAX)
    light.observe(Event("command", "", "rag.stats", 0))
    light.load_lm(prior, rnn.load_packaged(prior.p1, prior.unk, prior.bos), MAX)
    whole = TwinEngine(prior, neural=rnn.load_packaged(prior.p1, prior.unk, prior.bos))
    whole.decode(full_state, MAX)
    assert light.lm_loaded and light.suggest("meet me at the ", 5) == whole.suggest("meet me at the ", 5)
    st, ref = light.status(), whole.status()
    assert st["language_model"] == {"loaded": True} and st["messages_learned"] == ref["messages_learned"] == 6
    assert st["neural"] == ref["neural"] and st["neural"]["updates"] > 0
    assert light.events == whole.events + 1
    # the state it writes now is the whole engine's plus that command
    assert _lm_part(light.encode(MAX))[0].keys() == _lm_part(whole.encode(MAX))[0].keys()


def test_a_node_that_never_had_text_saves_no_language_model(prior: GlobalPrior) -> None:
    light = TwinEngine(None, embed=fake_embed)
    light.observe(Event("command", "", "node.status", 0))
    light.observe(Event("document", "pump guide", "rag.add", 0))  # an embedded title: no language model either
    light.observe(Event("command", "", "rag.stats", 0))
    data = light.encode(MAX)
    arrays, meta = store.unpack_state(data, max_bytes=1 << 30)
    assert meta[LM_EMPTY] is True and "prior" not in meta and set(arrays) == {f"x_{k}" for k in LIGHT_ARRAYS}
    assert len(data) < 10_000
    whole = TwinEngine(prior)  # read by an engine with its model: as shipped, plus the action head
    whole.decode(data, MAX)
    assert whole.events == 3 and whole.lm.messages == 0
    assert whole.actions.actions == ["node.status", "rag.add", "rag.stats"]
    assert np.array_equal(whole.actions.w, light.actions.w) and np.array_equal(whole.actions.bias, light.actions.bias)
    reread = TwinEngine(None)
    reread.decode(data, MAX)
    assert np.array_equal(reread.actions.w, light.actions.w) and reread.status()["messages_learned"] == 0


def _service(tmp_path: Path, **kw: Any) -> TwinService:
    settings = TwinSettings(neural=True, gate_fraction=1.0, poll_interval_s=60, save_interval_s=3600, **kw)
    power = Power(90, True)
    return TwinService(settings, tmp_path, battery_reader=power, thermal_reader=lambda: 35.0, embed=fake_embed)


async def test_commands_never_load_the_language_model_and_text_does_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[int] = []
    real = GlobalPrior.load_packaged.__func__  # type: ignore[attr-defined]

    def counted(cls: type[GlobalPrior]) -> GlobalPrior:
        loads.append(1)
        return real(cls)  # type: ignore[no-any-return]

    monkeypatch.setattr(GlobalPrior, "load_packaged", classmethod(counted))
    svc = _service(tmp_path)
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        for method in ("node.status", "rag.stats", "node.status"):
            svc.record("command", "", action=method)
        await svc.idle.wait()
        st = await svc.status()
        assert st["events"] == 3 and st["language_model"] == {"loaded": False, "loads_at_save": None} and loads == []
        assert (await svc.next_actions(2))[0]["action"] == "rag.stats"
        assert await svc.save_now() > 0 and loads == []
        # two first uses at once (two suggestions and a text event): one load
        results: list[Any] = []

        async def suggest() -> None:
            results.append(await svc.suggest("see you at the "))

        for text in TEXTS:
            svc.record("message", text, action="messages.send")
        n.start_soon(suggest)
        n.start_soon(suggest)
        await svc.wait_learned(6)
        await svc.idle.wait()
        assert loads == [1]
        st = await svc.status()
        assert st["language_model"] == {"loaded": True} and st["messages_learned"] == 3 and len(results) == 2
        assert (await svc.suggest("at the vorpal "))[0]["token"] == "lounge"
        n.cancel_scope.cancel()


async def test_a_restart_keeps_the_language_model_through_light_saves(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        for text in TEXTS:
            svc.record("message", text, action="messages.send")
        await svc.wait_learned(3)
        n.cancel_scope.cancel()  # saved at stop
    first = svc.path.read_bytes()
    for _ in range(2):  # two runs of commands only: each saves without the model
        again = _service(tmp_path)
        async with trio.open_nursery() as n:
            await n.start(again.run, None)
            again.record("command", "", action="node.status")
            await again.wait_learned(1)
            assert await again.save_now() > 0
            st = await again.status()
            assert st["language_model"] == {"loaded": False, "loads_at_save": None} and st["messages_learned"] == 3, st
            n.cancel_scope.cancel()
    assert _lm_part(svc.path.read_bytes()) == _lm_part(first) and svc.path.read_bytes() != first
    last = _service(tmp_path)
    async with trio.open_nursery() as n:
        await n.start(last.run, None)
        assert (await last.suggest("see you at the "))[0]["token"] == "vorpal"
        st = await last.status()
        assert st["events"] == 5 and st["actions_known"] == 2 and st["neural"]["updates"] > 0, st
        n.cancel_scope.cancel()


async def test_an_unusable_language_model_part_is_kept_aside_and_the_rest_stays(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        svc.record("message", TEXTS[0], action="messages.send")
        svc.record("command", "", action="node.status")
        await svc.wait_learned(2)
        n.cancel_scope.cancel()
    arrays, meta = store.unpack_state(svc.path.read_bytes(), max_bytes=1 << 30)
    arrays = dict(arrays)
    arrays["tri"] = np.full_like(arrays["tri"], 2**30)  # ids out of range: found only when the model loads
    planted = store.pack_state(arrays, meta)
    svc.path.write_bytes(planted)
    again = _service(tmp_path)
    async with trio.open_nursery() as n:
        await n.start(again.run, None)
        again.record("command", "", action="rag.stats")
        await again.wait_learned(1)
        assert (await again.status())["load_error"] is None  # not seen yet: the model is not loaded
        again.record("message", "a new message", action="messages.send")
        await again.wait_learned(2)
        st = await again.status()
        assert st["load_error"] and "ids out of range" in st["load_error"] and "state.bin.bad" in st["load_error"]
        assert st["messages_learned"] == 1 and st["actions_known"] == 3 and st["events"] == 4, st
        assert await again.save_now() > 0
        n.cancel_scope.cancel()
    assert svc.path.with_name("state.bin.bad").read_bytes() == planted


async def test_a_light_state_over_its_bound_loads_the_model_to_drop_the_rarest_counts(tmp_path: Path) -> None:
    """The next-action head grows (up to ~260 KB of weights) while the language model is not loaded: when the state
    no longer fits in twin.max_disk_bytes, the model loads so its recency cache and rarest counts can go (never the
    head's weights)."""
    bound = 100_000
    rng = np.random.default_rng(5)
    whole = TwinEngine(GlobalPrior.load_packaged())
    words = [f"w{i}x" for i in range(3000)]  # own words: each costs the state some bytes
    while len(whole.encode(bound)) < 70_000:
        for _ in range(50):
            whole.observe(Event("message", " ".join(rng.choice(words, 12)), "messages.send", 0))
    path = tmp_path / "twin" / "state.bin"
    path.parent.mkdir(mode=0o700)
    path.write_bytes(whole.encode(bound))
    svc = _service(tmp_path, max_disk_bytes=bound)
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        for i in range(40):  # embedded titles: dense rows of weights (~60 KB compressed)
            svc.record("document", f"guide number {i}", action=f"tool.{i}")
        await svc.wait_learned(40)
        assert (await svc.status())["language_model"] == {"loaded": False, "loads_at_save": None}
        assert await svc.save_now() <= bound
        st = await svc.status()
        assert st["language_model"] == {"loaded": True} and st["save_error"] is None and st["actions_known"] == 41
        n.cancel_scope.cancel()
    arrays, meta = store.unpack_state(path.read_bytes(), max_bytes=1 << 30)
    assert meta["messages"] == whole.lm.messages and arrays["x_act_w"].shape == (41, 384 + 41)  # the whole head kept


def _repack(data: bytes, **changes: Any) -> bytes:
    """``data`` with arrays replaced or added (a value of None drops one) and header values (``meta__name``)."""
    arrays, meta = store.unpack_state(data, max_bytes=1 << 30)
    arrays, meta = dict(arrays), dict(meta)
    for name, value in changes.items():
        if name.startswith("meta__"):
            meta[name[6:]] = value
        elif value is None:
            arrays.pop(name, None)
        else:
            arrays[name] = value
    return store.pack_state(arrays, meta)


def _sparse_junk(n: int) -> np.ndarray[Any, Any]:
    """Bytes that LZMA packs ~20x but slowly (the reviewer's planted array, small here)."""
    rng = np.random.default_rng(1)
    return ((rng.random(n) < 0.02) * rng.integers(1, 256, n)).astype(np.uint8)


def test_a_real_state_is_written_back_as_read(full_state: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    light = TwinEngine(None)
    light.decode(full_state, MAX)
    assert light.lm_needed_at_save is None
    arrays, _ = store.unpack_state(full_state, max_bytes=1 << 30)
    raw = sum(a.nbytes for k, a in arrays.items() if not store.is_light(k))  # (the language model's part)
    assert raw <= 8 * len(full_state)  # the margin the check leaves
    monkeypatch.setattr(engine_mod, "LIGHT_MAX_RAW_BYTES", raw - 1)  # the absolute bound, checked too
    light = TwinEngine(None)
    light.decode(full_state, MAX)
    assert light.lm_needed_at_save is not None and f"{raw - 1} bytes" in light.lm_needed_at_save


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"junk": _sparse_junk(1 << 20)}, "unknown arrays"),  # an array the model never reads
        ({"rc_uni_c": np.zeros(1 << 20)}, "unpack to more than"),  # a known one, far larger than it can be
        (  # (incompressible: within 8x the file)
            {"x_nn_w": np.random.default_rng(2).integers(0, 255, (1 << 20) + 4096, dtype=np.uint8).view(np.float32)},
            "neural adaptation array",
        ),
        ({"rc_uni": np.zeros(40_001, np.int32), "rc_uni_c": _sparse_junk(8 * 40_001).view(np.float64)}, "recency"),
        ({"tri_counts": np.ones(1, dtype=np.int64)}, "differ in number"),
        (  # (more rows than bytes: under a 2000-byte bound below)
            {"tri": _sparse_junk(4 * 3 * 2001).view(np.int32), "tri_counts": _sparse_junk(8 * 2001).view(np.int64)},
            "more n-grams",
        ),
        ({"words": np.frombuffer(b"\n" * 60_000, np.uint8)}, "more words"),
        ({"lam": np.zeros(3)}, "mixture weights"),
    ],
)
def test_a_planted_language_model_part_loads_the_model_at_the_first_save(
    full_state: bytes, changes: dict[str, Any], why: str
) -> None:
    """A light save writes the part read at start back (LZMA: ~1 s of CPU per MB unpacked) only when it is what a
    real state holds; anything else waits for the model's checked decode (the service loads it, then saves)."""
    light = TwinEngine(None)
    light.decode(_repack(full_state, **changes), 2000 if why == "more n-grams" else MAX)
    assert light.lm_needed_at_save is not None and why in light.lm_needed_at_save
    light.observe(Event("command", "", "node.status", 0))
    with pytest.raises(TwinStoreError, match="needs the model"):
        light.encode(MAX)


async def test_planted_junk_is_dropped_at_the_first_save_and_the_counts_kept(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        for text in TEXTS:
            svc.record("message", text, action="messages.send")
        await svc.wait_learned(3)
        n.cancel_scope.cancel()
    planted = _repack(svc.path.read_bytes(), junk=_sparse_junk(4 << 20))
    svc.path.write_bytes(planted)
    again = _service(tmp_path)
    async with trio.open_nursery() as n:
        await n.start(again.run, None)
        again.record("command", "", action="node.status")
        await again.wait_learned(1)
        assert (await again.status())["language_model"] == {"loaded": False, "loads_at_save": "unknown arrays (junk)"}
        size = await again.save_now()
        st = await again.status()
        assert st["language_model"] == {"loaded": True} and st["save_error"] is None and st["load_error"] is None
        assert st["messages_learned"] == 3 and st["events"] == 4, st
        n.cancel_scope.cancel()
    arrays, meta = store.unpack_state(svc.path.read_bytes(), max_bytes=1 << 30)
    assert "junk" not in arrays and "tri" in arrays and meta["messages"] == 3 and size < len(planted)
    assert not svc.path.with_name("state.bin.bad").exists()  # nothing else was wrong with it


def test_status_shows_a_counter_of_messages_read_without_the_model(full_state: bytes) -> None:
    for bad in (-5, 2**70, "12", True):
        light = TwinEngine(None)
        light.decode(_repack(full_state, meta__messages=bad), MAX)
        assert light.status()["messages_learned"] == 0


async def _learn_three(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        for text in ("zorblat meets qwixel", "zorblat at noon", "qwixel and zorblat"):
            svc.record("message", text, action="messages.send", contact="alice")
        await svc.wait_learned(3)
        n.cancel_scope.cancel()


async def test_forget_while_the_model_is_not_loaded_forgets_its_part(tmp_path: Path) -> None:
    await _learn_three(tmp_path)
    again = _service(tmp_path)
    async with trio.open_nursery() as n:
        await n.start(again.run, None)
        again.record("command", "", action="node.status")
        await again.wait_learned(1)
        st = await again.status()
        assert st["language_model"] == {"loaded": False, "loads_at_save": None} and st["messages_learned"] == 3
        assert (await again.forget())["erased_bytes"] > 0
        assert (await again.status())["messages_learned"] == 0
        again.record("command", "", action="rag.stats")
        await again.wait_learned(2)
        assert await again.save_now() > 0
        arrays, meta = store.unpack_state(again.path.read_bytes(), max_bytes=1 << 30)
        assert meta.get(LM_EMPTY) is True and not set(arrays) - {f"x_{k}" for k in LIGHT_ARRAYS}, (arrays, meta)
        assert "zorblat" not in (await again.context())["frequent_words"]
        ex = await again.export()
        assert ex["personal_words"] == [] and ex["trigram_counts"] == [] and ex["status"]["messages_learned"] == 0
        assert ex["actions"] == ["rag.stats"]
        n.cancel_scope.cancel()


async def test_export_while_the_model_is_not_loaded_loads_it_with_the_saved_part(tmp_path: Path) -> None:
    await _learn_three(tmp_path)
    again = _service(tmp_path)
    async with trio.open_nursery() as n:
        await n.start(again.run, None)
        again.record("command", "", action="node.status")
        await again.wait_learned(1)
        assert (await again.status())["language_model"] == {"loaded": False, "loads_at_save": None}
        ex = await again.export()
        assert {"zorblat", "qwixel"} <= set(ex["personal_words"]) and ex["status"]["messages_learned"] == 3
        assert ex["trigram_counts"] and ex["neural_adaptation"] is not None
        assert ex["status"]["language_model"] == {"loaded": True}
        assert ex["actions"] == ["messages.send", "node.status"]
        assert "zorblat" in (await again.context())["frequent_words"]
        n.cancel_scope.cancel()


async def test_two_first_uses_at_once_load_the_model_once_even_with_two_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load lock, not the worker limiter, makes two first uses load once: with a limiter of two, the first load
    waits (in its worker) until every task is blocked — the second first use at the lock, or, without the lock, in
    its own worker loading a second model."""
    loads: list[int] = []
    real = GlobalPrior.load_packaged.__func__  # type: ignore[attr-defined]

    def counted(cls: type[GlobalPrior]) -> GlobalPrior:
        loads.append(1)
        if len(loads) == 1:
            trio.from_thread.run(trio.testing.wait_all_tasks_blocked)
        return real(cls)  # type: ignore[no-any-return]

    monkeypatch.setattr(GlobalPrior, "load_packaged", classmethod(counted))
    await _learn_three(tmp_path)
    loads.clear()
    svc = _service(tmp_path)
    results: list[Any] = []

    async def suggest() -> None:
        results.append(await svc.suggest("zorblat meets "))

    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        svc.record("command", "", action="node.status")
        await svc.wait_learned(1)
        svc._limiter = trio.CapacityLimiter(2)
        async with trio.open_nursery() as both:
            both.start_soon(suggest)
            both.start_soon(suggest)
        assert loads == [1] and len(results) == 2 and results[0] == results[1]
        assert results[0][0]["token"] == "qwixel"
        n.cancel_scope.cancel()
