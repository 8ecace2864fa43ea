"""TwinService: the twin as trio sees it — a service of the composition root.

It owns one :class:`~node.twin.engine.TwinEngine`, loaded in two steps: at the first event or query its light part
(numpy, the engine's modules, the next-action head, topics and contacts: what a command needs), at the first use
that needs it the language model (the shipped prior, the neural tier, the user's counts: a text event, a suggestion,
the context, an export; ~16 MB more). An idle node imports none of them (:mod:`node.twin.names` is what it needs
before); a node driven by commands only never loads the language model. The MiniLM embedder of the next-action head
is looked up at the first knowledge-base query or document title (the only events it embeds).

Events (what the user does on this node: messages they send, knowledge-base queries, documents they add,
commands) arrive through :meth:`TwinService.record` (non-blocking, bounded channel) and are learned by one learner
task, in a worker thread behind a ``CapacityLimiter(1)`` (the engine is single-threaded; suggestions and status go
through the same limiter).

The :class:`~node.twin.governor.Governor` decides before each event: when learning is paused (battery, heat,
CPU budget) the event waits in a bounded :class:`~node.twin.governor.DeferredQueue`; a poller reads battery
and temperature every ``twin.poll_interval_s`` and drains the queue once learning is allowed again. The CPU
seconds each learning step takes (``time.thread_time`` in the worker) are charged to the hourly budget.

State is written to ``<data dir>/twin/state.bin`` (0600, atomic, at most ``twin.max_disk_bytes``) every
``twin.save_interval_s`` when something changed, and at shutdown. Nothing here talks to the network: the twin
is never served to peers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from node.errors import NodeError
from node.rag.errors import RagError
from node.textsafe import without_lone_surrogates
from node.transports.ble.power import BatteryState, read_battery
from node.twin.errors import PriorMissing, TwinError, TwinStoreError
from node.twin.governor import DeferredQueue, Governor, GovernorLimits, Readings, read_temperature_c
from node.twin.names import KINDS, STATE_FILE, Event, forget_files
from node.twin.settings import TwinSettings

if TYPE_CHECKING:  # numpy, the prior and the models load with the engine, at the first event (_load)
    from node.twin.engine import Embed, TwinEngine

log = logging.getLogger("village.twin")

EVENT_CHANNEL = 256  # events between record() and the learner; beyond this they go to the deferred queue

# An event with the forget generation it was recorded in: forget() starts a new generation, and an event of an
# older one is dropped wherever it waits (channel, deferred queue, the worker's limiter), never learned.
Queued = tuple[int, Event]
TWIN_DIR = "twin"
MAX_SUGGEST = 10
MAX_SET_ASIDE_LISTED = 10  # set-aside state files named by status (the newest; all are counted)
MAX_SAVE_BACKOFF_S = 3600.0  # a save that keeps failing is retried at doubling intervals, at most this far apart

BatteryReader = Callable[[], BatteryState | None]
ThermalReader = Callable[[], float | None]


class TwinService:
    name = "twin"

    def __init__(
        self,
        settings: TwinSettings,
        data_dir: Path,
        *,
        battery_reader: BatteryReader = read_battery,
        thermal_reader: ThermalReader = read_temperature_c,
        embed: Embed | None = None,
    ) -> None:
        self.settings = settings
        self.dir = data_dir / TWIN_DIR
        self.path = self.dir / STATE_FILE
        self._battery_reader = battery_reader
        self._thermal_reader = thermal_reader
        self._embed = embed
        self.governor = Governor(
            GovernorLimits(
                min_battery_percent=settings.min_battery_percent,
                require_charging=settings.require_charging,
                max_temp_c=settings.max_temp_c,
                cpu_budget_s_per_hour=settings.cpu_budget_s_per_hour,
            )
        )
        self.deferred: DeferredQueue[Queued] = DeferredQueue(settings.max_deferred_events, settings.max_deferred_bytes)
        self.engine: TwinEngine | None = None
        self.load_error: str | None = None
        self.actions_note: str | None = None
        self.blas_threads: int | None = None  # the BLAS pool cap set when the engine loaded (None: left alone)
        self._limiter = trio.CapacityLimiter(1)
        self._send: trio.MemorySendChannel[Queued] | None = None
        self._recv: trio.MemoryReceiveChannel[Queued] | None = None
        self._generation = 0  # bumped by forget(); see Queued
        self._dirty = False
        self._rearm = trio.Event()  # set: the saver's wait starts again from now (with the delay of now)
        self.save_error: str | None = None  # why the last save failed (None: it succeeded, or none was tried)
        self.save_failures = 0  # saves failed in a row
        self._learned_events = 0
        self.learn_errors = 0
        self._dropped_unstarted = 0
        self._last_reason = "starting"
        self.ready = trio.Event()
        self.idle = trio.Event()  # set whenever the learner has nothing queued (tests wait on it)
        self._learned_changed = trio.Event()
        self._load_lock = trio.Lock()  # the engine's loads (its light part, its language model, the embedder)
        self._embed_ready = embed is not None  # the embedder looked up (or given)
        self._lm_unreadable = False  # the last load of the language model failed for want of memory
        self._embed_off = False  # the embedder failed (the model is missing): the next-action head goes without
        self._node: Any = None

    # ------------------------------------------------------------ lifecycle
    async def run(self, node: Any = None, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        send, recv = trio.open_memory_channel[Queued](EVENT_CHANNEL)
        self._node = node
        self._send, self._recv = send, recv
        try:
            async with trio.open_nursery() as nursery:
                await self._poll_once()
                nursery.start_soon(self._poller)
                nursery.start_soon(self._learner, recv)
                nursery.start_soon(self._saver)
                self.ready.set()
                task_status.started()
        finally:
            self._send = self._recv = None
            with trio.CancelScope(shield=True):
                await self._save()

    async def _ensure_engine(self) -> TwinEngine:
        """The engine, loaded on first use (a node that never sees its user's activity never pays for it): its
        light part only (the next-action head, topics, contacts; numpy), the language model at the first use
        that needs it (:meth:`_ensure_lm`)."""
        if self.engine is not None:  # (not waiting for a load of the language model under way)
            return self.engine
        async with self._load_lock:
            if self.engine is None:
                self.engine = await trio.to_thread.run_sync(self._load, limiter=self._limiter)
        return self.engine

    async def _ensure_lm(self) -> TwinEngine:
        """The engine with its language model (the shipped prior, the neural tier, the user's counts) loaded: at
        the first text event, suggestion, context or export. Two first uses at once load it once."""
        engine = await self._ensure_engine()
        if not engine.lm_loaded:
            async with self._load_lock:
                if self.engine is not None and not self.engine.lm_loaded:
                    engine = self.engine
                    await trio.to_thread.run_sync(self._load_lm, engine, limiter=self._limiter)
        return engine

    async def _ensure_embed(self, engine: TwinEngine) -> None:
        """The MiniLM embedder for the next-action head, looked up at the first event whose text it embeds (a
        knowledge-base query or document title: the knowledge base is loaded for those anyway): commands and
        messages never load the knowledge base nor the model."""
        if self._embed_ready or not self.settings.actions:
            return
        async with self._load_lock:
            if not self._embed_ready:
                if self._embed is None:
                    self._embed = await self._shared_embed()
                if self._embed is None:
                    self._embed = await trio.to_thread.run_sync(self._own_embed, limiter=self._limiter)
                self._embed_ready = True
        if engine.embed is None and not self._embed_off:
            engine.embed = self._embed

    @staticmethod
    def _own_embed() -> Embed:
        from node.rag.embed import Embedder  # the node's MiniLM (no knowledge base running)

        return Embedder().embed

    async def _shared_embed(self) -> Any:
        """The knowledge base's MiniLM (thread-safe, loaded once), so the daemon holds one copy of the model: looked
        up when the engine loads (the rag service may start after this one). None: no running knowledge base. Its
        calls take the knowledge base's model limiter (never beside an ingest's model call)."""
        if self._node is None:
            return None
        from node.rag.plugin import load_rag_service

        try:
            rag = await load_rag_service(self._node)
        except RagError as exc:  # a broken knowledge base: the twin embeds with its own copy of the model
            self.actions_note = f"the knowledge base could not be loaded, the twin uses its own model: {exc}"
            log.warning("twin: %s", self.actions_note)
            return None
        return None if rag is None else rag.embed_from_thread

    def _load(self) -> TwinEngine:
        """The engine without its language model (numpy and the engine's modules; not the prior nor the neural
        tier), with the state file's light part read (the rest kept for :meth:`_load_lm`)."""
        try:  # numpy: here, on first use
            from node.twin import store
            from node.twin.engine import TwinEngine
            from node.twin.threads import limit_blas_threads
        except ImportError as exc:  # a broken install: status says why, the node goes on
            self.load_error = f"the twin's model could not be loaded on this node: {exc}"
            raise TwinError(self.load_error) from exc

        self.blas_threads = limit_blas_threads(self.settings.blas_threads)

        def fresh() -> TwinEngine:
            return TwinEngine(
                None,
                embed=self._embed if self._embed_ready else None,
                gate_fraction=self.settings.gate_fraction,
                max_personal_words=self.settings.max_personal_words,
            )

        engine = fresh()
        self.load_error = None  # a failure to read it earlier (kept in place) is over once it loads
        try:
            data = store.read_state(self.path, self.settings.max_disk_bytes)
            if data is not None:
                engine.decode(data, self.settings.max_disk_bytes)
                self._log_resets(engine)
        except (OSError, MemoryError) as exc:
            raise self._unreadable(exc) from exc
        except Exception as exc:  # noqa: BLE001 - TwinStoreError expected; anything else is a missed check
            # The content is at fault: keep the file for the user to look at (under a name no later failure
            # overwrites) and start from the prior, so a file that fails every load does not fail every event and
            # every restart.
            self._set_aside(exc, "starting fresh")
            engine = fresh()  # a fresh one: the failed load may have filled part of the first
        return engine

    def _load_lm(self, engine: TwinEngine) -> None:
        """Load the engine's language model: the shipped prior, the neural tier, the saved language-model part.
        An unusable part is kept aside with the file and the model starts fresh (the next-action head, topics and
        contacts stay); the machine failing (memory, I/O) leaves it unloaded, its part kept, to try again."""
        if engine.lm_loaded:
            return
        try:  # the models: here, on first use
            from node.twin import rnn
            from node.twin.prior import GlobalPrior
        except ImportError as exc:
            self.load_error = f"the twin's model could not be loaded on this node: {exc}"
            raise TwinError(self.load_error) from exc
        prior = GlobalPrior.load_packaged()  # (a broken install fails here, as before: the user's file is not at fault)
        neural = None
        if self.settings.neural:
            try:
                neural = rnn.load_packaged(prior.p1, prior.unk, prior.bos)
            except PriorMissing:
                neural = None
        try:
            engine.load_lm(prior, neural, self.settings.max_disk_bytes)
        except MemoryError as exc:
            self._lm_unreadable = True
            raise self._unreadable(exc) from exc
        except Exception as exc:  # noqa: BLE001 - TwinStoreError expected; anything else is a missed check
            self._set_aside(exc, "the language model starts fresh (the next-action head, topics and contacts are kept)")
            engine.load_lm(prior, neural, self.settings.max_disk_bytes, fresh=True)
            self._dirty = True  # the kept part is saved without the unusable one
            return
        if self._lm_unreadable:  # that failure is over (a failure of the light part's load stays said)
            self.load_error, self._lm_unreadable = None, False
        self._log_resets(engine)

    def _log_resets(self, engine: TwinEngine) -> None:
        """A part reset on load (the rest kept): said in the log too, not only by `village twin status` (the
        neural tier's and the gate's reasons are known once the language model has loaded)."""
        resets = (("neural tier", engine.neural_reset_reason), ("message gate", engine.gate_reset_reason))
        for part, why in resets:
            if why:
                log.warning("twin: %s: %s: %s", self.path, part, why)

    def _unreadable(self, exc: OSError | MemoryError) -> TwinError:
        """The machine, not the file: EMFILE, EIO, a full memory. The file may be good: it stays in place, nothing
        is loaded (so nothing is saved over it) and the next event tries again."""
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
        self.load_error = f"{self.path}: could not be read ({why}); the file is kept, learning waits"
        log.warning("twin: %s", self.load_error)
        return TwinError(self.load_error)

    def _set_aside(self, exc: Exception, then: str) -> None:
        """Move the unusable state file aside (under a name no later failure overwrites); raises TwinError when it
        cannot be moved (nothing may be saved over the only copy then)."""
        why = str(exc) if isinstance(exc, TwinStoreError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, TwinStoreError):
            log.error("twin: loading %s raised %s (a check missed in the decoder)", self.path, type(exc).__name__)
        aside = self.path.with_name(self.path.name + ".bad")
        if aside.exists():
            aside = self.path.with_name(f"{self.path.name}.bad.{time.time_ns()}")
        self.load_error = f"{self.path}: {why[:300]}; {then} (the old file is kept as {aside.name})"
        try:
            self.path.replace(aside)
        except OSError as move_exc:
            # Not moved: do not start fresh over it (a save would overwrite the only copy). Try again later.
            self.load_error = f"{self.path}: {why[:300]}; it could not be moved aside ({move_exc.strerror})"
            log.warning("twin: %s", self.load_error)
            raise TwinError(self.load_error) from exc
        log.warning("twin: %s", self.load_error)

    # ------------------------------------------------------------ events
    def record(
        self, kind: str, text: str = "", *, action: str | None = None, at_ms: int = 0, contact: str | None = None
    ) -> bool:
        """Queue one event of the user's (never block). False when it could not be queued."""
        if kind not in KINDS:
            raise TwinError(f"unknown twin event kind {kind!r}")
        # A lone surrogate (a client cutting a string mid-emoji, a file name that is not UTF-8) cannot be written
        # as UTF-8: learned as a word, it would fail every save. It becomes U+FFFD here, before anything keeps it.
        text = without_lone_surrogates(text)
        action = None if action is None else without_lone_surrogates(action)
        contact = None if contact is None else without_lone_surrogates(contact)
        ev = Event(kind, text, action, at_ms, contact)
        if self._send is None:
            self._dropped_unstarted += 1
            return False
        self.idle = trio.Event() if self.idle.is_set() else self.idle
        item = (self._generation, ev)
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self.deferred.push(item, ev.size_bytes)
        return True

    async def _learner(self, recv: trio.MemoryReceiveChannel[Queued]) -> None:
        while True:
            try:
                ev = recv.receive_nowait()
            except trio.WouldBlock:
                self.idle.set()
                ev = await recv.receive()
            await self._learn_or_defer(ev)

    async def _learn_or_defer(self, item: Queued) -> None:
        decision = self.governor.decide(trio.current_time())
        self._last_reason = decision.reason
        if not decision.allowed:
            self.deferred.push(item, item[1].size_bytes)
            return
        await self._drain()
        await self._learn(item)

    async def _learn(self, item: Queued) -> None:
        gen, ev = item
        if gen != self._generation:
            return  # recorded before a forget

        def work(engine: TwinEngine) -> float | None:
            if gen != self._generation:  # checked under the limiter: forget()'s wipe holds it too
                return None
            t0 = time.thread_time()
            engine.observe(ev)
            return time.thread_time() - t0

        try:
            engine = await self._ensure_engine()
            if engine.needs_lm(ev):
                engine = await self._ensure_lm()
            if engine.needs_embed(ev):
                await self._ensure_embed(engine)
        except Exception:  # a bug or an unreadable prior: this event is not learned, the node goes on (logged)
            self.learn_errors += 1
            log.exception("twin: loading the model failed")
            return
        try:
            cpu_s = await trio.to_thread.run_sync(work, engine, limiter=self._limiter)
        except RagError as exc:  # the MiniLM model is missing: the action head is off, the LM still learned
            engine.embed = None
            self._embed_off = True
            self.actions_note = f"next-action head off: {exc}"
            cpu_s = 0.0
        except Exception:  # one event's failure ends that event's learning, never the node (counted, logged)
            self.learn_errors += 1
            self._dirty = True  # what was learned before the failure is kept
            log.exception("twin: learning from a %s event failed", ev.kind)
            return
        if cpu_s is None or gen != self._generation:
            return  # forgotten: before it was learned, or wiped right after
        self.governor.charge(cpu_s, trio.current_time())
        self._learned_events += 1
        self._dirty = True
        self._learned_changed.set()
        self._learned_changed = trio.Event()

    async def _drain(self) -> None:
        while len(self.deferred):
            decision = self.governor.decide(trio.current_time())
            self._last_reason = decision.reason
            if not decision.allowed:
                return
            item = self.deferred.pop()
            if item is not None:
                await self._learn(item)

    async def _poll_once(self) -> None:
        def read() -> Readings:
            return Readings(self._battery_reader(), self._thermal_reader())

        readings = await trio.to_thread.run_sync(read, limiter=self._limiter)
        self.governor.update(readings)
        self._last_reason = self.governor.decide(trio.current_time()).reason

    async def _poller(self) -> None:
        while True:
            await trio.sleep(self.settings.poll_interval_s)
            await self._poll_once()
            await self._drain()

    async def _saver(self) -> None:
        """Save every ``_save_delay_s()``; :meth:`_rearm_saver` starts the wait again from now (after a forget, or
        a save that worked after failures: the backoff's hour-long wait is over)."""
        while True:
            self._rearm = trio.Event()
            with trio.move_on_after(self._save_delay_s()) as waited:
                await self._rearm.wait()
            if waited.cancelled_caught:  # the interval passed (not re-armed)
                await self._save()

    def _rearm_saver(self) -> None:
        self._rearm.set()

    def _save_delay_s(self) -> float:
        """The interval to the next periodic save: ``twin.save_interval_s``, doubled after each failed save in a
        row up to MAX_SAVE_BACKOFF_S (or the interval itself, when longer)."""
        base = self.settings.save_interval_s
        if not self.save_failures:
            return base
        return max(base, min(MAX_SAVE_BACKOFF_S, base * 2.0 ** min(self.save_failures, 32)))

    async def _save(self) -> bool:
        """Write the state if something changed; False when the write failed (``save_error`` says why; the state
        stays dirty and the saver retries, backing off)."""
        engine = self.engine
        if engine is None or not self._dirty:
            return True
        gen = self._generation

        def write() -> None:
            from node.twin import store

            # Cleared here, with the limiter held: cleared before waiting for it, a stop during that wait (a
            # suggestion holding the worker) left the state "clean" and the final save at shutdown wrote nothing.
            self._dirty = False
            if gen != self._generation:  # a forget came first: nothing of what was dirty remains
                return
            try:
                data = engine.encode(self.settings.max_disk_bytes)
            except TwinStoreError:
                if engine.lm_loaded:
                    raise
                # Over the bound without the language model (the next-action head grew): only the loaded model
                # can drop its rarest counts, so it loads now (a rare, one-time cost). Likewise a part read at start
                # that is not what a real state holds (engine.lm_needed_at_save): the model's checked decode drops
                # what it does not read (or sets the file aside) instead of each save repacking it.
                self._load_lm(engine)
                data = engine.encode(self.settings.max_disk_bytes)
            store.write_private(self.path, data)

        try:
            await trio.to_thread.run_sync(write, limiter=self._limiter)
        except Exception as exc:  # a bug in encoding must not end the node (the saver runs in its nursery)
            if gen != self._generation:  # the state that failed to save was forgotten meanwhile: nothing to report
                return False
            self._dirty = True
            self.save_failures += 1
            expected = isinstance(exc, OSError | TwinStoreError)
            self.save_error = str(exc)[:300] if expected else f"{type(exc).__name__}: {str(exc)[:300]}"
            retry = f"retrying in {self._save_delay_s():g} s"
            if self.save_failures == 1 and not expected:  # the traceback once; then one line per retry
                log.exception("twin: saving %s failed (%s)", self.path, retry)
            else:
                log.warning(
                    "twin: could not save %s (%d failures in a row; %s): %s",
                    self.path,
                    self.save_failures,
                    retry,
                    self.save_error,
                )
            return False
        recovered = self.save_failures > 0
        if recovered:
            log.info("twin: saved %s again after %d failed saves", self.path, self.save_failures)
        self.save_error = None
        self.save_failures = 0
        if recovered:  # the backoff is over: the next periodic save is one interval away, not up to an hour
            self._rearm_saver()
        return True

    # ------------------------------------------------------------ queries (control methods)
    async def suggest(self, text: str, k: int = 3) -> list[dict[str, Any]]:
        engine = await self._ensure_lm()
        k = max(1, min(k, MAX_SUGGEST))
        return await trio.to_thread.run_sync(engine.suggest, text, k, limiter=self._limiter)

    async def next_actions(self, k: int = 3) -> list[dict[str, Any]]:
        engine = await self._ensure_engine()
        return await trio.to_thread.run_sync(engine.next_actions, max(1, min(k, MAX_SUGGEST)), limiter=self._limiter)

    async def status(self, *, wait_s: float = 0.0) -> dict[str, Any]:
        """What the twin learned. With ``wait_s``, first wait (that long at most) until the learner has nothing
        queued, so events recorded just before the call are counted; ``queued_events`` says what is still waiting."""
        if wait_s > 0:
            with trio.move_on_after(wait_s):
                await self.idle.wait()
        load_error = None
        try:
            engine = await self._ensure_engine()
        except NodeError as exc:  # the state could not be read just now (kept in place): status still answers, why
            st: dict[str, Any] = {"loaded": False}
            load_error = str(exc)
        else:
            st = await trio.to_thread.run_sync(engine.status, limiter=self._limiter)
        now = trio.current_time()
        decision = self.governor.decide(now)
        r = self.governor.readings
        st.update(
            {
                "learning": "allowed" if decision.allowed else "paused",
                "reason": decision.reason,
                "battery_percent": r.battery.percent if r.battery else None,
                "external_power": r.battery.external_power if r.battery else None,
                "temp_c": r.temp_c,
                "cpu_used_s_this_hour": round(self.governor.cpu_used_s(now), 3),
                "cpu_budget_s_per_hour": self.settings.cpu_budget_s_per_hour,
                "queued_events": self._queued(),
                "deferred_events": len(self.deferred),
                "deferred_bytes": self.deferred.bytes,
                "deferred_dropped": self.deferred.dropped,
                "learn_errors": self.learn_errors,
                "state_path": str(self.path),
                "state_bytes": self.path.stat().st_size if self.path.exists() else 0,
                "set_aside": self.set_aside_files(),
                "max_disk_bytes": self.settings.max_disk_bytes,
                "load_error": self.load_error or load_error,
                "save_error": self.save_error,
                "save_failures": self.save_failures,
                "actions_note": self.actions_note,
                "blas_threads": self.blas_threads,
            }
        )
        return st

    def set_aside_files(self) -> dict[str, Any] | None:
        """The state files set aside (``state.bin.bad*``: unusable here, or written by newer code and refused after a
        downgrade) still on disk, None when there are none: said by every status, whatever restarts came since, so
        what they learned is not forgotten unnoticed. Their count and bytes, and the newest few by name with their
        bytes and age in seconds since last written (a file set aside keeps the time of its last save)."""
        now = time.time()
        found: list[tuple[float, str, int]] = []
        try:
            paths = list(self.path.parent.glob(self.path.name + ".bad*"))
        except OSError:  # (the directory unreadable: nothing to say about it here; loading says it)
            return None
        for p in paths:
            try:
                st = p.lstat()
            except OSError:  # (deleted meanwhile: a forget)
                continue
            found.append((st.st_mtime, p.name, st.st_size))
        if not found:
            return None
        found.sort(reverse=True)
        return {
            "count": len(found),
            "bytes": sum(size for _, _, size in found),
            "files": [
                {"name": name, "bytes": size, "age_s": max(0, round(now - mtime))}
                for mtime, name, size in found[:MAX_SET_ASIDE_LISTED]
            ],
        }

    async def context(self) -> dict[str, Any]:
        """The personal context ``ask`` uses on this node (frequent contacts, recent topics, frequent words)."""
        engine = await self._ensure_lm()
        return await trio.to_thread.run_sync(engine.context, limiter=self._limiter)

    async def export(self) -> dict[str, Any]:
        engine = await self._ensure_lm()
        return await trio.to_thread.run_sync(engine.export, limiter=self._limiter)

    async def wait_learned(self, count: int) -> None:
        """Return once ``count`` events have been learned since the service started."""
        while self._learned_events < count:
            await self._learned_changed.wait()

    async def save_now(self) -> int:
        """Save at once; the state file's size. Raises TwinError when the save failed (the file on disk, if any,
        is an older one)."""
        self._dirty = True
        if not await self._save():
            raise TwinError(f"the twin's state could not be saved: {self.save_error}")
        return self.path.stat().st_size if self.path.exists() else 0

    async def forget(self) -> dict[str, Any]:
        """Delete every learned byte: the files under <data dir>/twin and the in-memory state.

        Events recorded before the call are dropped wherever they wait (the channel, the deferred queue, or a
        learner waiting for the worker): a new generation starts first, and learning checks it under the same
        limiter the wipe holds, so nothing from before is learned or saved after the wipe."""
        self._generation += 1
        self._discard_queued()
        self._dirty = False  # what is dirty now is erased below; only what is learned after marks it again
        # Under the load lock: a load under way ends first (its engine is wiped below), none starts before the
        # files are gone. Not loaded: the files alone are wiped, without loading the engine (which may not load).
        async with self._load_lock:
            engine = self.engine

            def wipe() -> int:
                if engine is not None:
                    engine.forget()
                return forget_files(self.dir)

            erased = await trio.to_thread.run_sync(wipe, limiter=self._limiter)
        # Every learned byte is gone, and with it what failed to save: no stale save error in status, no backoff
        # (the next save is one interval away, not up to an hour).
        if self.save_failures or self.save_error is not None:
            self.save_error, self.save_failures = None, 0
            self._rearm_saver()
        return {"erased_bytes": erased, "path": str(self.dir)}

    def _queued(self) -> int:
        """Events in the channel, not yet taken by the learner (deferred ones are counted apart)."""
        recv = self._recv
        return 0 if recv is None else recv.statistics().current_buffer_used

    def _discard_queued(self) -> None:
        """Drop every queued event (all of an older generation: record() has not run since the bump)."""
        while self.deferred.pop() is not None:
            pass
        while self._recv is not None:
            try:
                self._recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
