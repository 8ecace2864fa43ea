"""TwinLM: the personal KN tier mixed with the shipped global prior by weights learned online.

``p(w | h) = lam_b * p_personal(w | h) + (1 - lam_b) * p_prior(w | h)``, where ``b`` is a bucket of how often
the user has typed the context ``h`` (the personal trigram context count, or its bigram context when the
trigram context is new). Each ``lam_b`` is learned online: after every token the posterior responsibility of
the personal tier ``r = lam p_p / p`` moves ``lam_b`` towards it (a running average with step
``max(1 / (n_b + 20), LAMBDA_MIN_STEP)``, i.e. online EM).

Words the prior does not know get ids after the prior's (``V + i``, at most ``max_personal_words``); the prior
gives such a word ``p(<unk> | h) / UNK_TYPES``. Surprisal is ``-log2 p`` in bits.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from node.twin.cache import RecencyCache
from node.twin.gate import MAX_GATED_TOKENS, MessageGate, SurpriseGate
from node.twin.personal import PersonalKN
from node.twin.prior import GlobalPrior
from node.twin.rnn import NeuralTier, RecurrentLM
from node.twin.tokens import BOS, EOS, UNK, is_word, message_tokens

UNK_TYPES = 20_000  # the prior's <unk> mass is spread over this many unseen word types
BUCKET_EDGES = (0, 1, 3, 10, 30)  # personal trigram-context counts: 0 | 1-2 | 3-9 | 10-29 | 30+
LAMBDA_INIT = 0.3
MU_INIT = 0.2
NEURAL_LR = 0.02  # SGD step of the on-device neural adaptation (the feed-forward tier's; each tier says its own)
LAMBDA_MIN_STEP = 0.002
MIN_P = 1e-12
KAPPA_INIT = 0.1
CACHE_EDGES = (0.05, 1.0, 3.0)  # recency-cache context counts (decayed): < 0.05 | < 1 | < 3 | 3+
HISTORY = 8  # previous tokens handed to the prior and the neural tier (each uses its own tail of them)
PREFIX_CANDIDATES = 64  # prior words scored for a typed prefix (the likeliest under the unigram)
MAX_SEEN = MAX_GATED_TOKENS  # neural distributions kept per message for the bias step and the gated W/b step
# (later tokens skip both: a message gated in adapts on its first MAX_SEEN tokens, what the gate's budget counts)
BIAS_BLOCK_ROWS = 32  # the bias step's block starts this tall when the message's length is not known (doubled
# up to MAX_SEEN); observe sizes it to the message: min(tokens, MAX_SEEN) rows
NEURAL_CANDIDATES = 8  # the neural tier's likeliest next words added to the n-gram tiers' candidates
# Suggestions see the text being typed from a window of its last 49-64 tokens whose start moves in steps of 16:
# the recurrent tier recomputes its states from where the text changed, so a long text edited near its start
# cost ~513 GRU steps per call (~80 ms behind the twin's one worker); now at most 64, one per typed token mostly.
SUGGEST_CONTEXT_TOKENS = 64
SUGGEST_CONTEXT_STRIDE = 16
REPLAY_TOKENS = 1  # the W/b step runs when this many gated tokens wait in the replay buffer
MAX_REPLAY_TOKENS = 512  # bound on the replay buffer and so on one step's batch (each entry holds a 4,096-float
# distribution): a message's tokens that would overflow it make what waits learn first


@dataclass(frozen=True, slots=True)
class Suggestion:
    token: str
    p: float


@dataclass(frozen=True, slots=True)
class _Mix:
    p: np.ndarray[Any, Any]  # the final mixture
    p_ngram: np.ndarray[Any, Any]  # personal + prior
    pp: np.ndarray[Any, Any]  # personal tier
    pn: np.ndarray[Any, Any] | None  # neural tier
    bucket: int
    lam: float
    pc: np.ndarray[Any, Any] | None = None  # recency cache
    p_base: np.ndarray[Any, Any] | None = None  # everything but the cache
    cache_bucket: int = 0
    kappa: float = 0.0


def _bucket(c3: int, c2: int) -> int:
    if c3 == 0:
        return 0 if c2 == 0 else 1
    for i, edge in enumerate(BUCKET_EDGES[2:], start=2):
        if c3 < edge:
            return i
    return len(BUCKET_EDGES)


N_BUCKETS = len(BUCKET_EDGES) + 1
N_CACHE_BUCKETS = len(CACHE_EDGES) + 1


def _cache_bucket(c: float) -> int:
    return bisect.bisect_right(CACHE_EDGES, c)


class TwinLM:
    def __init__(
        self,
        prior: GlobalPrior,
        *,
        max_personal_words: int = 50_000,
        fixed_lambda: float | None = None,
        neural: NeuralTier | None = None,
        neural_lr: float | None = None,
        bias_lr: float | None = None,
        recency: bool = True,
        recency_decay: float | None = None,
        bias_always: bool = True,
        batched_steps: bool = True,
        neural_candidates: int = NEURAL_CANDIDATES,
        replay_tokens: int = REPLAY_TOKENS,
    ) -> None:
        if not 1 <= replay_tokens <= MAX_REPLAY_TOKENS:
            raise ValueError(f"replay_tokens must be between 1 and {MAX_REPLAY_TOKENS}")
        self.prior = prior
        self.neural = neural
        self.neural_lr = neural_lr if neural_lr is not None else neural.adapt_lr if neural is not None else NEURAL_LR
        # the always-on output-bias step's own size (bias_always); with bias_always off, c moves in the
        # expensive step at neural_lr
        self.bias_lr = bias_lr if bias_lr is not None else neural.bias_lr if neural is not None else NEURAL_LR
        self.mu = MU_INIT  # weight of the neural tier, learned online like lam
        self.mu_n = 0
        self.fixed_lambda = fixed_lambda  # benchmarks: 0 = prior only, 1 = personal only; None = learned
        self.max_personal_words = max_personal_words
        self.words: list[str] = []  # the user's words the prior does not know; id = prior.v + index
        self.word_index: dict[str, int] = {}
        self.personal = PersonalKN(prior.bos)
        self.lam = [LAMBDA_INIT] * N_BUCKETS
        self.lam_n = [0] * N_BUCKETS
        self.recency = (
            None
            if not recency
            else RecencyCache(prior.bos)
            if recency_decay is None
            else RecencyCache(prior.bos, decay=recency_decay)
        )
        self.kappa = [KAPPA_INIT] * N_CACHE_BUCKETS
        self.kappa_n = [0] * N_CACHE_BUCKETS
        self.bias_always = bias_always
        self.neural_candidates = neural_candidates  # the neural tier's top-k join the ranked candidates
        self.batched_steps = batched_steps  # the neural step from the predictions' forward passes (adapt_batch)
        # this message's neural distributions for the output-bias step: the predictions write them as the rows
        # of a block (a fresh one per message: the W/b step's queue keeps views of the rows) and its targets
        self._pblock: np.ndarray[Any, Any] | None = None
        self._pn = 0
        self._bias_targets: list[int] = []
        self._fwd: list[tuple[Any, Any, Any, int]] = []  # this message's forward passes (x, h, p, target)
        self.last_neural_bits: float | None = None  # the neural tier's surprisal of the last learned token
        self.msg_neural_bits: list[float] = []  # ... of each token of the message being learned
        self.msg_resp: list[float] = []  # the neural tier's responsibility for each token in the final mixture
        self.want_resp = False  # fill msg_resp (only a message gate scoring resp/grad reads it; observe sets it)
        self._rows_hint = 0  # the message being learned: how many bias rows it needs (0: unknown, grow)
        self.replay_tokens = replay_tokens
        self._replay: list[tuple[Any, Any, Any, int, float]] = []  # gated forward passes waiting for the step
        self.messages = 0
        order = sorted(range(3, prior.v), key=prior.vocab.__getitem__)
        self._sorted_words = [prior.vocab[i] for i in order]
        self._sorted_ids = np.asarray(order, dtype=np.int64)

    # ------------------------------------------------------------ ids
    @property
    def vocab_size(self) -> int:
        return self.prior.v + len(self.words)

    def token_id(self, token: str, *, add: bool) -> int:
        i = self.prior.index.get(token)
        if i is not None:
            return i
        j = self.word_index.get(token)
        if j is not None:
            return j
        if add and len(self.words) < self.max_personal_words:
            j = self.prior.v + len(self.words)
            self.words.append(token)
            self.word_index[token] = j
            return j
        return self.prior.unk

    def token_str(self, i: int) -> str:
        return self.prior.vocab[i] if i < self.prior.v else self.words[i - self.prior.v]

    def ids(self, tokens: Sequence[str], *, add: bool = False) -> list[int]:
        return [self.token_id(t, add=add) for t in tokens]

    # ------------------------------------------------------------ probabilities
    def _history(self, history: Sequence[int]) -> tuple[int, int, list[int]]:
        h = [self.prior.bos, self.prior.bos, *history[-HISTORY:]]
        prior_h = [t if t < self.prior.v else self.prior.unk for t in h]
        return h[-2], h[-1], prior_h

    def _nn_history(self, history: Sequence[int]) -> list[int]:
        """The message so far in prior ids, whole: the recurrent tier continues its states over it (the
        feed-forward tier takes its own BOS-padded tail)."""
        v, unk = self.prior.v, self.prior.unk
        return [t if t < v else unk for t in history]

    def _mix(self, history: Sequence[int], cand: np.ndarray[Any, Any]) -> _Mix:
        u, v, prior_h = self._history(history)
        known = cand < self.prior.v
        pc = np.where(known, cand, self.prior.unk)
        pg = self.prior.probs(prior_h, pc)
        pg = np.where(known, pg, pg / UNK_TYPES)
        pp = np.asarray(self.personal.probs(u, v, cand.tolist(), self.vocab_size + 1), dtype=np.float64)
        b = _bucket(*self.personal.context_count(u, v))
        lam = self.lam[b] if self.fixed_lambda is None else self.fixed_lambda
        p_ngram = lam * pp + (1 - lam) * pg
        pn = None
        p_base = p_ngram
        if self.neural is not None:
            pn = self.neural.probs(self._nn_history(history), pc)
            pn = np.where(known, pn, pn / UNK_TYPES)
            p_base = self.mu * pn + (1 - self.mu) * p_ngram
        if self.recency is None:
            return _Mix(p_base, p_ngram, pp, pn, b, lam)
        pr = np.asarray(self.recency.probs(v, cand.tolist()), dtype=np.float64)
        cb = _cache_bucket(self.recency.context_count(v))
        kappa = self.kappa[cb]
        return _Mix(kappa * pr + (1 - kappa) * p_base, p_ngram, pp, pn, b, lam, pr, p_base, cb, kappa)

    def prob(self, history: Sequence[int], token_id: int) -> float:
        m = self._mix(history, np.asarray([token_id], dtype=np.int64))
        return max(float(m.p[0]), MIN_P)

    def surprisal_bits(self, history: Sequence[int], token_id: int) -> float:
        return -math.log2(self.prob(history, token_id))

    def candidates(self, history: Sequence[int]) -> np.ndarray[Any, Any]:
        u, v, prior_h = self._history(history)
        g = self.prior.candidates(prior_h)
        pers = self.personal.candidates(u, v)
        if self.recency is not None:
            pers = pers + self.recency.candidates(v)
        if self.neural is not None and self.neural_candidates > 0:
            g = np.concatenate([g, self.neural.top_ids(self._nn_history(history), self.neural_candidates)])
        cand = np.unique(np.concatenate([g, np.asarray(pers, dtype=np.int64)])) if pers else g
        out: np.ndarray[Any, Any] = cand[(cand != self.prior.bos) & (cand != self.prior.unk)]
        return out

    def _prefix_candidates(self, history: Sequence[int], prefix: str) -> np.ndarray[Any, Any]:
        """Context candidates with ``prefix``, the prior's likeliest words with it, and the user's own words."""
        found = [c for c in self.candidates(history).tolist() if self.token_str(c).startswith(prefix)]
        lo = bisect.bisect_left(self._sorted_words, prefix)
        hi = bisect.bisect_left(self._sorted_words, prefix + "\U0010ffff")
        ids = self._sorted_ids[lo:hi]
        if len(ids) > PREFIX_CANDIDATES:
            ids = ids[np.argpartition(-self.prior.p1[ids], PREFIX_CANDIDATES)[:PREFIX_CANDIDATES]]
        found.extend(ids.tolist())
        found.extend(self.word_index[w] for w in self.words if w.startswith(prefix))
        return np.unique(np.asarray(found, dtype=np.int64))

    def top(self, history: Sequence[int], k: int, *, prefix: str = "") -> list[tuple[int, float]]:
        """The k most likely next token ids (restricted to those starting with ``prefix``)."""
        cand = self._prefix_candidates(history, prefix) if prefix else self.candidates(history)
        if len(cand) == 0:
            return []
        p = self._mix(history, cand).p
        order = np.argsort(-p, kind="stable")[:k]
        return [(int(cand[i]), float(p[i])) for i in order]

    # ------------------------------------------------------------ learning
    def learn_weights(self, history: Sequence[int], token_id: int) -> float:
        """Update the mixture weights from one observed token (online EM); returns its surprisal in bits."""
        nn = self.neural
        if not history:
            self._pn = 0
            self._bias_targets = []
        row = self.bias_always and nn is not None and self._pn < MAX_SEEN and self._pn == len(history)
        if row and nn is not None:
            self._bias_row(nn.vn)
            nn.out_row = self._pblock[self._pn] if self._pblock is not None else None
        try:
            m = self._mix(history, np.asarray([token_id], dtype=np.int64))
        finally:
            if nn is not None:
                nn.out_row = None
        pm = max(float(m.p[0]), MIN_P)
        self.last_neural_bits = -math.log2(max(float(m.pn[0]), MIN_P)) if m.pn is not None else None
        if not history:
            self._fwd.clear()
            self.msg_neural_bits = []
            self.msg_resp = []
        if self.last_neural_bits is not None and len(self.msg_neural_bits) == len(history):
            self.msg_neural_bits.append(self.last_neural_bits)
            if self.want_resp and m.pn is not None:  # d log p / d log p_neural: how much the mixture's loss
                # moves with the neural tier's
                self.msg_resp.append((1.0 - m.kappa) * self.mu * float(m.pn[0]) / pm)
        target = token_id if token_id < self.prior.v else self.prior.unk
        if row and nn is not None and nn.last_p is not None:
            self._pn += 1
            self._bias_targets.append(target)
        if (
            self.batched_steps
            and nn is not None
            and nn.last_p is not None
            and nn.last_x is not None
            and nn.last_h is not None
            and len(self._fwd) == len(history) < MAX_SEEN
        ):
            self._fwd.append((nn.last_x, nn.last_h, nn.last_p, target))
        pbase = pm
        if m.pc is not None and m.p_base is not None:
            pbase = max(float(m.p_base[0]), MIN_P)
            rc = m.kappa * float(m.pc[0]) / pm
            cb = m.cache_bucket
            self.kappa_n[cb] += 1
            step_c = max(1.0 / (self.kappa_n[cb] + 20), LAMBDA_MIN_STEP)
            self.kappa[cb] = min(0.9, max(0.01, self.kappa[cb] + step_c * (rc - self.kappa[cb])))
        if m.pn is not None:
            rn = self.mu * float(m.pn[0]) / pbase
            self.mu_n += 1
            step_n = max(1.0 / (self.mu_n + 20), LAMBDA_MIN_STEP)
            self.mu = min(0.9, max(0.02, self.mu + step_n * (rn - self.mu)))
        if self.fixed_lambda is None:
            r = m.lam * float(m.pp[0]) / max(float(m.p_ngram[0]), MIN_P)
            b = m.bucket
            self.lam_n[b] += 1
            step = max(1.0 / (self.lam_n[b] + 20), LAMBDA_MIN_STEP)
            self.lam[b] = min(0.98, max(0.02, self.lam[b] + step * (r - self.lam[b])))
        return -math.log2(pm)

    def _bias_row(self, vn: int) -> None:
        """Make room for the next distribution: a fresh block at a message's first token (as tall as the message
        when :meth:`observe` said how long it is, so a queued row pins no more than its message's own rows),
        doubled when full."""
        blk = self._pblock
        if self._pn == 0 or blk is None or blk.shape[1] != vn:
            rows = min(self._rows_hint, MAX_SEEN) if self._rows_hint > 0 else BIAS_BLOCK_ROWS
            self._pblock = np.empty((rows, vn), dtype=np.float32)
        elif self._pn >= len(blk):
            grown = np.empty((min(2 * len(blk), MAX_SEEN), vn), dtype=np.float32)
            grown[: self._pn] = blk[: self._pn]
            self._pblock = grown

    def learn_counts(self, ids: Sequence[int]) -> None:
        self.personal.add_message(ids)
        if self.recency is not None:
            self.recency.add_message(ids)
        self.messages += 1

    def observe(
        self,
        text: str,
        *,
        learn: bool = True,
        gate: SurpriseGate | MessageGate | None = None,
        gate_counts: bool = False,
    ) -> list[float]:
        """Predict every token of one message (surprisal in bits each), then learn it. The main entry point.

        Cheap statistics (personal counts, mixture weights, the neural output bias) learn every token; the
        neural tier's W/b step learns the tokens the ``gate`` passes (every token without a gate): a
        :class:`MessageGate` passes the whole message or none of it, a :class:`SurpriseGate` samples tokens.
        ``gate_counts`` (benchmarks) gates the counts too (with a SurpriseGate).
        """
        tokens = message_tokens(text)
        ids = self.ids(tokens, add=learn)
        bits = []
        self.want_resp = isinstance(gate, MessageGate) and gate.score in ("resp", "grad")
        self._rows_hint = len(ids)
        try:
            for i, t in enumerate(ids):
                if learn:
                    bits.append(self.learn_weights(ids[:i], t))
                else:
                    bits.append(self.surprisal_bits(ids[:i], t))
        finally:
            self._rows_hint = 0
        if not learn:
            return bits
        if gate_counts and not isinstance(gate, MessageGate):
            self.learn_counts_gated(ids, [gate.check(b) for b in bits] if gate is not None else [True] * len(ids))
        else:
            self.learn_counts(ids)
            if self.neural is not None:
                self.adapt_neural(ids, self.gate_weights(gate, bits))
        self.message_done(ids)
        return bits

    def message_done(self, ids: Sequence[int]) -> None:
        """The message ``ids`` was learned: the recurrent tier carries it as the next message's context."""
        if isinstance(self.neural, RecurrentLM):
            self.neural.end_message(ids)

    def gate_weights(self, gate: SurpriseGate | MessageGate | None, bits: Sequence[float]) -> list[float]:
        """The weight of each token of the message just learned in the W/b step (0: skipped)."""
        if gate is None:
            return [1.0] * len(bits)
        if isinstance(gate, MessageGate):
            nbits = self.msg_neural_bits if len(self.msg_neural_bits) == len(bits) else []
            resp = self.msg_resp if len(self.msg_resp) == len(bits) else []
            hit = 1.0 if gate.decide(list(bits), nbits, resp) else 0.0
            if hit and gate.token_select:  # (a bench option: only some of the passed message's tokens)
                return gate.token_weights(bits, nbits)[:MAX_SEEN] + [0.0] * max(0, len(bits) - MAX_SEEN)
            return [hit] * min(len(bits), MAX_SEEN) + [0.0] * max(0, len(bits) - MAX_SEEN)  # (the budget's cap)
        return [gate.sample(b) for b in bits]

    def adapt_neural(self, ids: Sequence[int], weights: Sequence[float]) -> int:
        """The expensive update: the neural tier learns from every token with a non-zero weight (its step is
        scaled by it); returns how many tokens it took (learned now or queued for the next step).

        With ``batched_steps`` (the default) the tokens whose forward pass the prediction kept (the message's
        first :data:`MAX_SEEN`) join the replay buffer, and one mini-batch step (:meth:`NeuralLM.adapt_batch`)
        learns the buffer once ``replay_tokens`` wait in it (the step's fixed cost is paid once per batch; every
        forward pass in the buffer was taken at the current W and b, which only the step changes, but with
        ``bias_always`` the output bias c moves after every message: with ``replay_tokens`` > 1 a queued token's
        distribution was computed at the c of its own message, up to the buffer's age old, and the step uses it
        as it was). The buffer never holds more than :data:`MAX_REPLAY_TOKENS` entries: the tokens of a message
        that would overflow it wait until what is queued has been learned. The other tokens, and every token
        without ``batched_steps``, get one SGD step each with its own forward pass."""
        if self.neural is None:
            return 0
        bias = not self.bias_always
        if self.bias_always:
            if self._pn and self._pblock is not None:
                self.neural.adapt_bias_rows(self._pblock[: self._pn], self._bias_targets, self.bias_lr)
            self._pn = 0
            self._bias_targets = []
        n = 0
        fwd = self._fwd if self.batched_steps and len(self._fwd) <= len(ids) else []
        if fwd and max(weights, default=0.0) > 0:  # (any weight > 0, without a generator per token)
            queued = [(x, h, p, t, w) for (x, h, p, t), w in zip(fwd, weights, strict=False) if w > 0]
            if self.replay_tokens > 1:  # a row waiting past this message must not pin its message's whole block
                queued = [(x, h, p.copy(), t, w) for x, h, p, t, w in queued]
            if len(self._replay) + len(queued) > MAX_REPLAY_TOKENS:  # (queued <= MAX_SEEN < MAX_REPLAY_TOKENS)
                self.flush_neural()
            self._replay.extend(queued)
            n += len(queued)
            if len(self._replay) >= self.replay_tokens:
                self.flush_neural()
        self._fwd = []
        for i in range(len(fwd), len(weights)):  # the tokens the prediction kept no forward pass of
            wgt = weights[i]
            if wgt > 0:
                t = ids[i] if ids[i] < self.prior.v else self.prior.unk
                self.neural.adapt(self._nn_history(ids[:i]), t, self.neural_lr * wgt, bias=bias)
                n += 1
        return n

    def flush_neural(self) -> int:
        """Run the W/b step on the replay buffer now (before the state is saved); returns the tokens learned."""
        if self.neural is None or not self._replay:
            self._replay = []
            return 0
        batch, self._replay = self._replay, []
        return self.neural.adapt_batch(batch, self.neural_lr, bias=not self.bias_always)

    def learn_counts_gated(self, ids: Sequence[int], mask: Sequence[bool]) -> int:
        """Learn only the tokens whose mask is set; returns how many were learned."""
        h = [self.prior.bos, self.prior.bos, *ids]
        n = 0
        for i, on in enumerate(mask):
            if on:
                self.personal.add(h[i], h[i + 1], h[i + 2])
                if self.recency is not None:
                    self.recency.add(h[i + 1], h[i + 2])
                n += 1
        self.personal.tick(n)
        self.messages += 1
        return n

    # ------------------------------------------------------------ suggestions
    def suggest(self, text: str, k: int = 3) -> list[Suggestion]:
        """Completions of the text being typed: if it ends inside a word, words with that prefix."""
        from node.twin.tokens import tokenize

        toks = tokenize(text)
        prefix = ""
        if toks and text and not text[-1].isspace() and is_word(toks[-1]):
            prefix = toks.pop()
        hist = self.ids(toks)
        over = max(0, len(hist) - SUGGEST_CONTEXT_TOKENS)
        hist = hist[-(-over // SUGGEST_CONTEXT_STRIDE) * SUGGEST_CONTEXT_STRIDE :]
        out = []
        for i, p in self.top(hist, k, prefix=prefix):
            s = self.token_str(i)
            if s not in (BOS, UNK):
                out.append(Suggestion(s if s != EOS else EOS, p))
        return out
