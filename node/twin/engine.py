"""The twin's engine: one user's language model, neural tier, next-action head and surprise log, in one object.

Synchronous and clock-free (the service passes ``at_ms`` and runs every call in a worker thread). Events:

* ``message`` / ``query`` — text the user wrote (a message they sent, a knowledge-base question): predicted
  token by token (surprisal in bits), then learned by the language model;
* ``document`` — a document the user added: its title joins the recent topics (not the language model:
  documents are other people's prose);
* every event with an ``action`` (the control method or tool the user called) trains the next-action head,
  whose context is the previous action and the MiniLM embedding of the previous event's text when it was a
  query or a document title (:data:`EMBEDDED_KINDS`: the knowledge base loads that model for them anyway;
  a sent message or a bare command contributes a zero vector, so sending a message never loads the model).

Messages received from others never reach the engine (the service only sees the user's own calls).

The language model (the shipped prior, the neural tier and the user's counts, words, mixture and gate) is the
engine's heavy part (~16 MB): an engine built without a prior (``TwinEngine(None)``, the service's) learns commands
and documents, predicts next actions and saves without it, and loads it with :meth:`TwinEngine.load_lm` only when
something needs it (:meth:`TwinEngine.needs_lm`: a text event, a suggestion, the context, an export). Until then
the language-model section of the state file read at start is kept as it was read (compressed, checked once) and
each save copies its bytes (:data:`LIGHT_ARRAYS` and :data:`LIGHT_META` are the rest, the light section: the only
part such a save packs); a node that never had text saves no language-model section (the model as shipped).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from node.textsafe import safe_text
from node.twin import store
from node.twin.actions import ActionHead
from node.twin.cache import MAX_ENTRIES
from node.twin.errors import TwinError, TwinStoreError
from node.twin.gate import SHIPPED_FIXED_COST_TOKENS, SHIPPED_SCORE, START_BITS, MessageGate, sane_threshold
from node.twin.model import MU_INIT, N_BUCKETS, N_CACHE_BUCKETS, TwinLM
from node.twin.names import EMBEDDED_KINDS, TEXT_KINDS
from node.twin.names import Event as Event  # re-exported: the record the engine learns from
from node.twin.personal import MAX_TRIGRAMS, ctx_of
from node.twin.prior import GlobalPrior
from node.twin.rnn import NeuralTier, RecurrentLM
from node.twin.store import LIGHT_ARRAYS as LIGHT_ARRAYS  # re-exported: the state file's light part
from node.twin.store import LIGHT_META as LIGHT_META  # re-exported
from node.twin.store import LM_EMPTY as LM_EMPTY  # re-exported: format 1's flag of a state without a model part

MAX_EVENT_TEXT_CHARS = 4000  # longer texts are learned from their start
RECENT_EVENTS = 50  # surprisal log kept for status
RECENT_TOPICS = 20
MAX_CONTACT_CHARS = 64

Embed = Callable[[Sequence[str]], np.ndarray[Any, Any]]
# The language model's arrays in a state file (store.encode's, the recency cache's, the neural tier's "x_nn_*").
LM_ARRAYS = frozenset(
    ("tri", "tri_counts", "words", "lam", "lam_n", "kappa", "kappa_n", "rc_uni", "rc_uni_c", "rc_bi", "rc_bi_c")
) | {"x_nn_c", "x_nn_w", "x_nn_b", "x_nn_s"}
# A language-model part read without the model is written back by each save only if its arrays unpack to at most
# this many times the file (real states: x2.5-x6.2, bench/README); a larger one (a planted file whose junk would
# cost every save minutes of LZMA work) loads the model at the first save instead: one checked decode.
LIGHT_RAW_FACTOR = 8
# ... and to at most this much in all (a real state's: at most ~3 MB, 50,000 n-grams, the recency cache, the
# neural adaptation, the words), each neural array to at most LIGHT_NN_ARRAY_BYTES (the shipped model's: 256 KiB).
LIGHT_MAX_RAW_BYTES = 8 << 20
LIGHT_NN_ARRAY_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class LmSummary:
    """What a saved language-model part holds, read from its arrays' sizes (for status before it loads; not
    validated: the load checks everything)."""

    messages: int = 0
    tokens: int = 0
    trigrams: int = 0
    words: int = 0

    @classmethod
    def of(cls, arrays: dict[str, np.ndarray[Any, Any]], meta: dict[str, Any]) -> LmSummary:
        try:
            counts = arrays.get("tri_counts")
            words = bytes(arrays["words"]) if "words" in arrays else b""
            try:  # (status shows it before anything checked it: a counter, or 0)
                messages = store.meta_int(meta, "messages")
            except TwinStoreError:
                messages = 0
            return cls(
                messages=messages,
                tokens=int(counts.sum(dtype=np.float64)) if counts is not None and counts.size else 0,
                trigrams=0 if counts is None else int(counts.size),
                words=words.count(b"\n") + 1 if words else 0,
            )
        except (TypeError, ValueError, OverflowError):
            return cls()


@dataclass(frozen=True, slots=True)
class Observed:
    kind: str
    at_ms: int
    tokens: int
    bits_per_token: float | None
    action_bits: float | None
    neural_updates: int


class TwinEngine:
    def __init__(
        self,
        prior: GlobalPrior | None,
        *,
        neural: NeuralTier | None = None,
        embed: Embed | None = None,
        gate_fraction: float = 0.5,
        max_personal_words: int = 50_000,
    ) -> None:
        self.prior, self.neural = prior, neural
        self.embed = embed
        self.gate_fraction = gate_fraction
        self.max_personal_words = max_personal_words
        self._lm: TwinLM | None = None
        self._reset()

    def _fresh_lm(self, prior: GlobalPrior, neural: NeuralTier | None) -> tuple[TwinLM, MessageGate]:
        if neural is not None:
            neural.reset()
        lm = TwinLM(prior, neural=neural, max_personal_words=self.max_personal_words)
        return lm, MessageGate(self.gate_fraction, score=SHIPPED_SCORE, fixed_cost_tokens=SHIPPED_FIXED_COST_TOKENS)

    def _reset(self) -> None:
        # The language-model part read while the model is not loaded: its section as read (format 2, or packed
        # once from a format-1 file), or a whole format-1 file whose part is not carried (lm_needed_at_save).
        self._lm_data: bytes | None = None
        self.lm_needed_at_save: str | None = None  # why that part is not written back unread (the model loads)
        self.lm_summary = LmSummary()
        if self.prior is not None:
            self._lm, self.gate = self._fresh_lm(self.prior, self.neural)
        else:
            self._lm, self.gate = None, MessageGate(self.gate_fraction, score=SHIPPED_SCORE)
        self.actions = ActionHead()
        self.prev_action: str | None = None
        self.prev_vec: np.ndarray[Any, Any] | None = None
        self.recent: deque[Observed] = deque(maxlen=RECENT_EVENTS)
        self.topics: deque[str] = deque(maxlen=RECENT_TOPICS)
        self.contacts: Counter[str] = Counter()
        self.events = 0
        self.neural_updates = 0
        self.neural_reset_reason: str | None = None  # why a loaded state's neural adaptation was dropped
        self.gate_reset_reason: str | None = None  # why a loaded state's gate threshold was not taken

    # ------------------------------------------------------------ the language model, loaded when needed
    @property
    def lm(self) -> TwinLM:
        """The language model; raises TwinError when it is not loaded (:meth:`load_lm`)."""
        if self._lm is None:
            raise TwinError("the twin's language model is not loaded")
        return self._lm

    @property
    def lm_loaded(self) -> bool:
        return self._lm is not None

    @staticmethod
    def needs_lm(ev: Event) -> bool:
        """Whether learning ``ev`` needs the language model (a text event with text; commands and documents
        do not)."""
        return ev.kind in TEXT_KINDS and bool(ev.text[:MAX_EVENT_TEXT_CHARS].strip())

    @staticmethod
    def needs_embed(ev: Event) -> bool:
        """Whether learning ``ev`` calls the embedder (a query or a document title, with an action)."""
        return bool(ev.action) and ev.kind in EMBEDDED_KINDS and bool(ev.text[:MAX_EVENT_TEXT_CHARS].strip())

    def load_lm(self, prior: GlobalPrior, neural: NeuralTier | None, max_bytes: int, *, fresh: bool = False) -> None:
        """Load the language model over ``prior`` and ``neural``, with the language-model part of the state read
        by :meth:`decode` (``fresh``: without it, as shipped). Raises TwinStoreError, and only that, on an
        unusable part (the engine is then left as it was: not loaded, the part kept)."""
        if self._lm is not None:
            return
        lm, gate = self._fresh_lm(prior, neural)
        data = None if fresh else self._lm_data
        reasons = (self.neural_reset_reason, self.gate_reset_reason, self.neural_updates)
        if data is not None:
            try:
                extra, meta = store.decode_into(lm, data, max_bytes)
                self._decode_lm(lm, gate, extra, meta)
            except (ValueError, TypeError, OverflowError, KeyError, IndexError) as exc:  # a check missed
                self.neural_reset_reason, self.gate_reset_reason, self.neural_updates = reasons
                raise TwinStoreError(f"corrupt twin state: {type(exc).__name__}: {exc}") from exc
            except BaseException:
                self.neural_reset_reason, self.gate_reset_reason, self.neural_updates = reasons
                raise
        self.prior, self.neural = prior, neural
        self._lm, self.gate = lm, gate
        self._lm_data = None

    def observe(self, ev: Event) -> Observed:
        text = ev.text[:MAX_EVENT_TEXT_CHARS]
        tokens, bits_tok, n_updates = 0, None, 0
        if self.needs_lm(ev):
            before = self.lm.neural.updates if self.lm.neural is not None else 0
            bits = self.lm.observe(text, gate=self.gate)
            tokens = len(bits)
            bits_tok = sum(bits) / len(bits)
            n_updates = (self.lm.neural.updates if self.lm.neural is not None else 0) - before
            self.neural_updates += n_updates
            self._note_dropped()
        if ev.kind == "document" and text.strip():
            self.topics.append(text[:200])
        if ev.contact and len(self.contacts) < 10_000:
            self.contacts[ev.contact[:MAX_CONTACT_CHARS]] += 1
        action_bits = None
        if ev.action:
            zero = np.zeros(self.actions.dim, dtype=np.float32)
            vec = self.prev_vec if self.prev_vec is not None else zero
            action_bits = self.actions.learn(vec, self.prev_action, ev.action)
            if self.embed is not None and ev.kind in EMBEDDED_KINDS and text.strip():
                self.prev_vec = np.asarray(self.embed([text])[0], dtype=np.float32)
            else:
                self.prev_vec = zero
        if ev.action:
            self.prev_action = ev.action
        self.events += 1
        obs = Observed(ev.kind, ev.at_ms, tokens, bits_tok, action_bits, n_updates)
        self.recent.append(obs)
        return obs

    def suggest(self, text: str, k: int = 3) -> list[dict[str, Any]]:
        out = [{"token": s.token, "p": round(s.p, 6)} for s in self.lm.suggest(text, k)]
        self._note_dropped()
        return out

    def _note_dropped(self, lm: TwinLM | None = None) -> None:
        """The neural tier dropped a damaged adaptation (non-finite predictions, an adapter out of range): status
        says why, and its weight in the mixture starts again from the default (it was learned against NaN).
        ``lm``: the language model being loaded (default: the loaded one)."""
        lm = self.lm if lm is None else lm
        nn = lm.neural
        if isinstance(nn, RecurrentLM) and nn.dropped is not None:
            self.neural_reset_reason, nn.dropped = nn.dropped, None
            lm.mu, lm.mu_n = MU_INIT, 0

    def _drop_unusable_adaptation(self, state: dict[str, np.ndarray[Any, Any]]) -> None:
        """Before a save: an adaptation that is not finite (or, recurrent, out of range) is reset, never written
        (its next load would refuse the whole file and lose the counts with it)."""
        nn = self.lm.neural
        if nn is None:
            return
        ok = all(bool(np.isfinite(v).all()) for v in state.values())
        if isinstance(nn, RecurrentLM):
            ok = ok and nn.adaptation_ok()
        if not ok:
            nn.reset()
            self.neural_reset_reason = (
                "the neural adaptation was not finite or out of range; it starts again from the shipped model"
            )
            self.lm.mu, self.lm.mu_n, self.neural_updates = MU_INIT, 0, 0
            state.update(nn.state())

    def next_actions(self, k: int = 3) -> list[dict[str, Any]]:
        if self.prev_vec is None:
            return []
        return [{"action": a, "p": round(p, 6)} for a, p in self.actions.predict(self.prev_vec, self.prev_action, k)]

    def context(self) -> dict[str, Any]:
        """Personal context for `ask` (all local): frequent contacts, recent topics, frequent words."""
        words = sorted(self.lm.personal.f1.items(), key=lambda kv: -kv[1])[:20]
        return {
            "contacts": [c for c, _ in self.contacts.most_common(5)],
            "recent_topics": list(self.topics)[-5:],
            "frequent_words": [self.lm.token_str(w) for w, _ in words if self.lm.token_str(w).isalpha()][:10],
        }

    def status(self) -> dict[str, Any]:
        recent_bits = [o.bits_per_token for o in self.recent if o.bits_per_token is not None]
        if self._lm is None:  # what the saved part holds, from its sizes: status never loads the model
            s = self.lm_summary
            return {
                "events": self.events,
                "messages_learned": s.messages,
                "tokens_learned": s.tokens,
                "personal_trigrams": s.trigrams,
                "personal_words": s.words,
                "mixture_personal_weights": None,
                "neural": None,
                "actions_known": len(self.actions.actions),
                "recent_bits_per_token": round(statistics.mean(recent_bits), 3) if recent_bits else None,
                "prior_bytes": None,
                "language_model": {"loaded": False, "loads_at_save": self.lm_needed_at_save},
            }
        neural = self.lm.neural
        return {
            "events": self.events,
            "messages_learned": self.lm.messages,
            "tokens_learned": self.lm.personal.tokens,
            "personal_trigrams": self.lm.personal.trigrams,
            "personal_words": len(self.lm.words),
            "mixture_personal_weights": [round(x, 3) for x in self.lm.lam],
            "neural": None
            if neural is None
            else {
                "params": neural.params,
                "weight": round(self.lm.mu, 3),
                "updates": self.neural_updates,
                "gate_threshold_bits": round(self.gate.threshold_bits, 2),
                "gate_pass_rate": round(self.gate.pass_rate, 3),
                "gate_reset": self.gate_reset_reason,
                "model": neural.model_id,
                "reset": self.neural_reset_reason,
            },
            "actions_known": len(self.actions.actions),
            "recent_bits_per_token": round(statistics.mean(recent_bits), 3) if recent_bits else None,
            "prior_bytes": self.lm.prior.size_bytes,
            "language_model": {"loaded": True},
        }

    # ------------------------------------------------------------ state
    def _light_meta(self) -> dict[str, Any]:
        return {"events": self.events, "topics": list(self.topics), "contacts": dict(self.contacts.most_common(100))}

    def encode(self, max_bytes: int) -> bytes:
        """The state file's bytes, at most ``max_bytes``. Without the language model loaded, its part of the
        state read at start is written back as it was (every array and header value unchanged); raises
        TwinStoreError when that and the rest do not fit (the caller loads the model, then the rarest counts go)."""
        if self._lm is None:
            return self._encode_light(max_bytes)
        self.lm.flush_neural()  # tokens waiting in the replay buffer are learned, not lost with the process
        self._note_dropped()
        extra = dict(self.actions.state())
        if self.lm.neural is not None:
            with np.errstate(invalid="ignore", over="ignore"):
                nn_state = self.lm.neural.state()
            self._drop_unusable_adaptation(nn_state)
            extra.update(nn_state)
        meta = {
            "events": self.events,  # (the light part: LIGHT_META)
            "mu": self.lm.mu,
            "mu_n": self.lm.mu_n,
            "neural_updates": self.neural_updates,
            "neural_model": self.lm.neural.model_id if self.lm.neural is not None else None,
            "gate_score": self.gate.score,
            "gate_threshold_bits": t if math.isfinite(t := self.gate.threshold_bits) else START_BITS[self.gate.score],
            **self._light_meta(),
        }
        if self.lm.neural is None:
            return store.encode_bounded(self.lm, max_bytes, extra, meta)
        data = store.encode(self.lm, extra, meta)  # everything, no count pruned
        if len(data) <= max_bytes:
            return data
        # Over twin.max_disk_bytes: the neural adaptation (the GRU adapter, 256 KiB) goes first — it is
        # relearnt from the next messages, while pruned personal counts are gone for good — then the rarest counts.
        # The state says so: on load the tier starts from the shipped model with its default weight.
        for name in ("nn_c", "nn_w", "nn_b", "nn_s"):
            extra.pop(name, None)
        meta.update(neural_updates=0, neural_model=None, neural_dropped=True)
        meta.pop("mu", None)
        meta.pop("mu_n", None)
        return store.encode_bounded(self.lm, max_bytes, extra, meta)

    def decode(self, data: bytes, max_bytes: int) -> None:
        """Load a state written by :meth:`encode` into this fresh engine. Raises TwinStoreError, and only that,
        on an unusable file (the service then keeps it aside and starts fresh)."""
        try:
            self._decode(data, max_bytes)
        except (ValueError, TypeError, OverflowError, KeyError, IndexError) as exc:  # a check missed below
            raise TwinStoreError(f"corrupt twin state: {type(exc).__name__}: {exc}") from exc

    def _encode_light(self, max_bytes: int) -> bytes:
        """The state with the language-model section read at start, its bytes copied as they were read (no LZMA
        work on them: they were checked once at read), or none, and the light section as it is now."""
        if self._lm_data is not None and self.lm_needed_at_save is not None:  # the caller loads the model, then saves
            raise TwinStoreError(f"the saved language-model part needs the model to be saved: {self.lm_needed_at_save}")
        lm = b"" if self._lm_data is None else self._lm_data
        if lm and lm[:4] != store.LM_MAGIC:  # (a format-1 file is carried only once packed as a section, at read)
            raise TwinStoreError("the saved language-model part is not a section: it needs the model to be saved")
        light = store.pack_light({f"x_{k}": v for k, v in self.actions.state().items()}, self._light_meta())
        if store.FRAME_BYTES + len(light) + len(lm) > max_bytes:  # (checked before joining up to max_bytes)
            raise TwinStoreError(
                f"twin state does not fit in {max_bytes} bytes (twin.max_disk_bytes) without the language model"
            )
        return store.frame(light, lm)

    def _decode(self, data: bytes, max_bytes: int) -> None:
        if self._lm is None:  # the light part now, the language model's when it loads (load_lm)
            parts = store.unpack_parts_untrusted(data, store.raw_bound(max_bytes))
            self._decode_light({k[2:]: v for k, v in parts.light_arrays.items()}, parts.light_meta)
            if parts.lm_arrays is None or parts.lm_meta is None:
                self.lm_summary, self._lm_data, self.lm_needed_at_save = LmSummary(), None, None
                return
            self.lm_summary = LmSummary.of(parts.lm_arrays, parts.lm_meta)
            section = parts.lm_section
            unfit = self._light_copy_unfit(parts.lm_arrays, len(data if section is None else section), max_bytes)
            if section is None and unfit is None:  # format 1: its part packed as a section once, then copied
                section = store.pack_lm(parts.lm_arrays, parts.lm_meta)
            # (a part not carried is kept as read: the model's checked decode reads it at the first save)
            self._lm_data, self.lm_needed_at_save = (data if section is None else section), unfit
            return
        # An engine built with its prior (tests, benchmarks): both parts now.
        prior, neural, self._lm = self._lm.prior, self._lm.neural, None
        try:
            self._decode(data, max_bytes)
            self.load_lm(prior, neural, max_bytes)
        finally:
            if self._lm is None:  # refused: left fresh, as built
                self._lm, self.gate = self._fresh_lm(prior, neural)

    def _light_copy_unfit(self, arrays: dict[str, np.ndarray[Any, Any]], file_bytes: int, max_bytes: int) -> str | None:
        """Why the language-model part of a state read without the model must not be written back as read (None:
        it may): the checks that need no prior. Anything found here loads the model at the first save, whose checked
        decode keeps only what the model reads (or sets the file aside)."""
        unknown = sorted(k for k in arrays if k not in LM_ARRAYS)
        if unknown:
            return f"unknown arrays ({safe_text(','.join(unknown)[:60])})"
        raw = sum(a.nbytes for a in arrays.values())
        if raw > LIGHT_RAW_FACTOR * file_bytes or raw > LIGHT_MAX_RAW_BYTES:
            return f"its arrays unpack to more than {LIGHT_RAW_FACTOR} times the file or {LIGHT_MAX_RAW_BYTES} bytes"
        if any(k.startswith("x_nn_") and a.nbytes > LIGHT_NN_ARRAY_BYTES for k, a in arrays.items()):
            return "a neural adaptation array larger than a shipped model's"
        if any(k.startswith("rc_") and a.size > 2 * MAX_ENTRIES for k, a in arrays.items()):
            return "a recency cache larger than it keeps"
        tri, counts, words = arrays.get("tri"), arrays.get("tri_counts"), arrays.get("words")
        rows = 0 if tri is None else tri.size // 3
        if tri is not None and (tri.size % 3 or rows > min(max_bytes, MAX_TRIGRAMS)):
            return "more n-grams than a state holds"
        if rows != (0 if counts is None else counts.size):
            return "n-grams and counts differ in number"
        if words is not None and bytes(words).count(b"\n") >= self.max_personal_words:
            return "more words than twin.max_personal_words"
        sizes = {"lam": N_BUCKETS, "lam_n": N_BUCKETS, "kappa": N_CACHE_BUCKETS, "kappa_n": N_CACHE_BUCKETS}
        if any(name in arrays and arrays[name].size != n for name, n in sizes.items()):
            return "mixture weights out of bounds"
        return None

    def _decode_light(self, extra: dict[str, np.ndarray[Any, Any]], meta: dict[str, Any]) -> None:
        for name in ("act_w", "act_b"):
            if name in extra:
                store.finite_array(extra, name)
        if "act_events" in extra:
            store.int_array(extra, "act_events")
        self.actions.load_state(extra)
        self.events = store.meta_int(meta, "events")
        topics, contacts = meta.get("topics", []), meta.get("contacts", {})
        if not isinstance(topics, list) or not isinstance(contacts, dict):
            raise TwinStoreError("twin state header: topics is not a list or contacts not an object")
        self.topics.extend(str(t)[:200] for t in topics[:RECENT_TOPICS])
        for k, _ in list(contacts.items())[:100]:
            self.contacts[str(k)[:MAX_CONTACT_CHARS]] = store.meta_int(contacts, k)

    def _decode_lm(
        self, lm: TwinLM, gate: MessageGate, extra: dict[str, np.ndarray[Any, Any]], meta: dict[str, Any]
    ) -> None:
        """The language model's part of a state (``lm`` and ``gate`` fresh; the counts already read into ``lm``
        by :func:`store.decode_into`): the neural adaptation, the mixture's neural weight and the gate."""
        # The header's numbers are checked whatever the tier (the encoder writes numbers there: anything else is a
        # corrupt file); the neural arrays are the tier's own business (_load_neural).
        mu = min(0.9, max(0.02, store.meta_float(meta, "mu", lm.mu)))
        mu_n = store.meta_int(meta, "mu_n")
        neural_updates = store.meta_int(meta, "neural_updates")
        if lm.neural is not None:
            learned_on = meta.get("neural_model")
            complete = all(name in extra for name in ("nn_c", "nn_w", "nn_b"))
            if learned_on == lm.neural.model_id and complete:
                if self._load_neural(lm.neural, extra):
                    lm.mu, lm.mu_n, self.neural_updates = mu, mu_n, neural_updates
                    self._note_dropped(lm)  # (an output bias beyond its bound: the adaptation reset, status says why)
            elif meta.get("neural_dropped") is True:
                self.neural_reset_reason = (
                    "the neural adaptation was not saved (it did not fit in twin.max_disk_bytes); it starts again"
                    " from the shipped model"
                )
            elif learned_on == lm.neural.model_id:
                self.neural_reset_reason = (
                    "the saved neural adaptation is incomplete (a damaged or edited state); it starts again from the"
                    " shipped model"
                )
            else:
                # Learned on another neural model (a state older than the model id, or a new neural.bin): its
                # deltas and the tier's learned weight would be applied to weights they were not learned on. The
                # neural adaptation starts again from the shipped model; the counts, words and mixture stay.
                # (from the file: shown with its control characters escaped, never raw on a terminal)
                was = safe_text(learned_on[:16]) if isinstance(learned_on, str) else "unrecorded"
                self.neural_reset_reason = (
                    f"the neural adaptation was learned on another neural model ({was}); it starts again from the"
                    " shipped one"
                )
        # Not a finite number (NaN, inf, text; the encoder never writes one): the file is corrupt, refused. A
        # finite threshold its score's messages could not have moved the gate to (40 bits pinned the edgec gate
        # shut for ~700 messages) resets the gate alone to its start: the rest of what was learned is kept.
        threshold = store.meta_float(meta, "gate_threshold_bits", gate.threshold_bits)
        # (a state of another gate, session 4's: its threshold is not ours)
        stored_score = meta.get("gate_score")
        if stored_score == gate.score and sane_threshold(gate.score, threshold):
            gate.threshold_bits = threshold
        else:
            start = f"it starts again from {gate.threshold_bits:g} bits"
            if stored_score == gate.score:
                why = f"the saved gate threshold ({threshold:.6g} bits) is not one its score could reach"
            else:
                was = safe_text(stored_score[:16]) if isinstance(stored_score, str) else "unrecorded"
                why = f"the saved gate threshold belongs to another gate score ({was})"
            self.gate_reset_reason = f"{why}; {start}"

    def _load_neural(self, nn: NeuralTier, extra: dict[str, np.ndarray[Any, Any]]) -> bool:
        """The saved neural adaptation, checked whole; False when it could not be used. Such an adaptation (an
        adapter beyond rnn.MAX_ADAPTER, weights that are not finite or overflow float32, a context state outside
        [-1, 1], shapes that are not the shipped model's) resets the neural tier alone to the shipped model, and
        status says why: the counts, words, cache and action head are kept (it used to set the whole file aside,
        and with it everything the user's messages taught)."""
        try:
            for name in ("nn_c", "nn_w", "nn_b", "nn_s"):  # (numbers, not text, before any arithmetic)
                if name in extra and not np.issubdtype(extra[name].dtype, np.number):
                    raise TwinStoreError(f"neural adaptation: {name} is not an array of numbers")
            nn.load_state(extra)  # all or nothing: it assigns only once every check passed
        except TwinStoreError as exc:
            nn.reset()
            self.neural_reset_reason = (
                f"the saved neural adaptation could not be used ({str(exc)[:200]}); it starts again from the shipped"
                " model (the rest of what was learned is kept)"
            )
            return False
        return True

    def export(self) -> dict[str, Any]:
        """Everything learned, readable (for `village twin export`), the neural adaptation's numbers included."""
        lm = self.lm
        tri = [
            {"ngram": [lm.token_str(u), lm.token_str(v), lm.token_str(w)], "count": c}
            for (u, v), fol in ((ctx_of(k), f) for k, f in lm.personal.f3.items())
            for w, c in fol.items()
        ]
        return {
            "format": "aivillage-twin-export/1",
            "status": self.status(),
            "personal_words": list(lm.words),
            "trigram_counts": tri,
            "mixture_personal_weights": lm.lam,
            "actions": list(self.actions.actions),
            "context": self.context(),
            "action_weights": {
                k: np.round(v.astype(np.float64), 6).tolist()
                for k, v in self.actions.state().items()
                if k in ("act_w", "act_b")
            },
            "neural_adaptation": self._export_neural(),
        }

    def _export_neural(self) -> dict[str, Any] | None:
        """The neural tier's adaptation, every number of it: derived from the user's text, kept in state.bin,
        erased by forget (as deltas from the shipped model; ``nn_s``: the recurrent tier's carried context)."""
        nn = self.lm.neural
        if nn is None:
            return None
        with np.errstate(invalid="ignore", over="ignore"):
            state = nn.state()
        self._drop_unusable_adaptation(state)  # (JSON has no NaN)
        arrays = {k: np.round(v.astype(np.float64), 6).tolist() for k, v in state.items()}
        return {"model": nn.model_id, "shapes": {k: list(v.shape) for k, v in state.items()}, "arrays": arrays}

    def forget(self) -> None:
        """Drop everything learned in memory (the service deletes the files)."""
        self._reset()
