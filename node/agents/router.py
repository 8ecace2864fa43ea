"""The King's router: which agents a request goes to, by capability.

Each agent is represented by its roster mission and example requests, plus the requests users confirmed or
corrected for it (feedback learned online). A request's score for an agent adds three parts:

* ``prototype``: the best cosine between the request's MiniLM embedding (``node.rag.embed``) and the agent's
  mission, examples and confirmed requests;
* ``classifier``: the agent's probability under a softmax regression over the same embeddings, refitted
  (full batch, a few hundred steps on at most a few thousand vectors) after feedback changes the memory;
* ``lexical``: a TF-IDF overlap of the request's words with the agent's texts (``lexical_weight``);
* ``bayes``: the agent's posterior under a multinomial naive Bayes over the words of the same texts (Laplace
  smoothing ``bayes_alpha``), weighted ``bayes_weight``: unlike the overlap it learns which words single an agent
  out ("quiz" for Tutor, "reindex" for Gardener) from the confirmed requests.

A fresh node's router is **seeded** (``seeds``) with the shipped labelled requests (``seed_requests.txt``, the
322 requests of ``tests/data/agent_requests.txt``): they join the agent's examples, so a node routes from its first
request as one that has had that much feedback, and the feedback memory stays free for the user's own requests.

Weights were chosen by cross-validation on ``tests/data/agent_requests.txt`` (``bench/routing_cv.py``; its test
split was evaluated too often in session 3 and now counts as dev data); ``tests/data/agent_requests_heldout.txt``
is never used for tuning or feedback (``bench/agents.py`` reports both). The router is pure numpy
(no I/O); ``embed`` is blocking, so the King calls :meth:`Router.route` in a worker thread. Memory is bounded
per agent (:data:`MAX_FEEDBACK_PER_AGENT`, oldest replaced).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from node.agents.errors import AgentError
from node.agents.roster import Roster

log = logging.getLogger("village.agents")

Vectors = npt.NDArray[np.float32]
Embed = Callable[[Sequence[str]], Vectors]
MAX_FEEDBACK_PER_AGENT = 256
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


SEED_VECTORS = "seed_vectors.npy"  # the seeds' MiniLM vectors (float16), built by scripts/build_seed_vectors.py
SEED_VECTORS_KEY = "seed_vectors.json"  # {"model": embedder MODEL_ID, "seeds_sha256": of the seed texts, "count"}


def seeds_digest(seeds: Sequence[tuple[str, str]]) -> str:
    return hashlib.sha256("\n".join(f"{a} | {t}" for a, t in seeds).encode()).hexdigest()


SEED_DIM = 384  # the embedder's vector width (node.rag.embed.DIM, not imported: that module loads the model)
_SEED_DTYPES = (np.dtype("<f2"), np.dtype("<f4"))


def _read_seed_vectors(f: IO[bytes], rows: int, dim: int) -> Vectors:
    """An .npy of exactly ``rows`` x ``dim`` little-endian float16/float32 finite values, checked from its header
    before any data is read (so a forged shape costs nothing); anything else raises ValueError."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"npy format version {version} is not 1.0 or 2.0")
    if dtype not in _SEED_DTYPES or fortran:
        raise ValueError(f"dtype {dtype} (fortran order {fortran}) is not little-endian float16/float32")
    if shape != (rows, dim):
        raise ValueError(f"shape {shape} is not ({rows}, {dim})")
    size = rows * dim * dtype.itemsize
    data = f.read(size)
    if len(data) != size or f.read(1):
        raise ValueError(f"data is not {size} bytes")
    vecs = np.frombuffer(data, dtype=dtype).reshape(rows, dim).astype(np.float32)
    if not np.isfinite(vecs).all():
        raise ValueError("not every value is finite")
    return vecs


def shipped_seed_vectors(seeds: Sequence[tuple[str, str]], model_id: str, dim: int = SEED_DIM) -> Vectors | None:
    """The shipped vectors of ``seeds`` if they were built from these very seeds with this embedder model, else
    None (the router then embeds the seeds itself, which costs a few seconds at start). A damaged or forged file
    is never trusted and never raises: it is logged and ignored."""
    pkg = resources.files("node.agents")
    try:
        key = json.loads(pkg.joinpath(SEED_VECTORS_KEY).read_text())
        if key != {"model": model_id, "seeds_sha256": seeds_digest(seeds), "count": len(seeds)}:
            log.info("%s: built from other seeds or another embedder; embedding the seeds", SEED_VECTORS)
            return None
        with pkg.joinpath(SEED_VECTORS).open("rb") as f:
            return _read_seed_vectors(f, len(seeds), dim)
    except Exception as exc:  # noqa: BLE001 - broad: a damaged shipped file falls back, never fails the start
        log.warning("%s: %s; embedding the seeds", SEED_VECTORS, exc)
        return None


def load_seeds(path: Path | None = None) -> list[tuple[str, str]]:
    """Labelled requests ``Agent | request`` (``#`` comments), by default the shipped ``seed_requests.txt``."""
    raw = path.read_text() if path else resources.files("node.agents").joinpath("seed_requests.txt").read_text()
    out = []
    for n, line in enumerate(raw.splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            agent, sep, text = line.partition(" | ")
            if not sep or not text.strip():
                raise AgentError(f"router seeds line {n}: not 'Agent | request'")
            out.append((agent.strip(), text.strip()))
    return out


@dataclass(frozen=True, slots=True)
class RouterSettings:
    prototype_weight: float = 1.0
    classifier_weight: float = 1.0
    lexical_weight: float = 0.3
    temperature: float = 10.0  # logits scale of the softmax regression over unit vectors
    l2: float = 1e-3
    fit_steps: int = 300  # from zero, at start
    refit_steps: int = 40  # warm-started from the previous weights, after feedback
    fit_rate: float = 0.5
    # When no agent scores at least this, the generalist (``fallback_agent``) comes first: a request no specialist
    # recognises is a general question. Chosen by 4-fold cross-validation inside the train split (dev top-1
    # 0.859 -> 0.875; 0.45 and 0.5 tie). 0 turns it off.
    fallback_below: float = 0.475
    fallback_agent: str = "Sage"
    # Naive Bayes over words: 7-fold cross-validation on the 322 train + dev requests, top-1 88.2 % without it,
    # 88.8 / 90.4 / 91.0 / 90.7 / 90.1 / 89.8 % at weights 0.3 / 0.5 / 0.6 / 0.7 / 0.8 / 1.0; alpha 0.2 / 1.0: 90.1 /
    # 89.4 %; posterior scale 0.5: 88.5 %.
    bayes_weight: float = 0.6
    bayes_alpha: float = 0.5
    bayes_scale: float = 1.0


@dataclass(frozen=True, slots=True)
class Choice:
    agent: str
    score: float


class Router:
    def __init__(
        self,
        roster: Roster,
        embed: Embed,
        settings: RouterSettings | None = None,
        seeds: Sequence[tuple[str, str]] = (),
        seed_vectors: Vectors | None = None,
    ) -> None:
        """``seeds``: labelled requests ``(agent, text)`` learned at start (an unknown agent is an error), with
        their vectors if known (``seed_vectors``, one row per seed; else they are embedded here)."""
        self.settings = settings or RouterSettings()
        self.embed = embed
        self.names = roster.names
        base_texts = [[a.mission, *a.examples] for a in roster]
        vecs = embed([t for ts in base_texts for t in ts])
        if seeds and (seed_vectors is None or seed_vectors.shape != (len(seeds), vecs.shape[1])):
            seed_vectors = embed([t for _, t in seeds])
        per_agent: list[list[Vectors]] = [[] for _ in self.names]
        at = 0
        for i, ts in enumerate(base_texts):
            per_agent[i].append(vecs[at : at + len(ts)])
            at += len(ts)
        for j, (agent, text) in enumerate(seeds):
            i = self._index(agent)
            base_texts[i].append(text)
            assert seed_vectors is not None
            per_agent[i].append(seed_vectors[j : j + 1])
        self._base: list[tuple[list[str], Vectors]] = [
            (ts, np.vstack(vs).astype(np.float32)) for ts, vs in zip(base_texts, per_agent, strict=True)
        ]
        self._fb_texts: list[list[str]] = [[] for _ in self.names]
        self._fb_vecs: list[list[Vectors]] = [[] for _ in self.names]
        self.feedback_count = 0
        self._dirty = True
        self._w: npt.NDArray[np.float64] | None = None
        self._b = np.zeros(len(self.names))
        self._refit()

    def _index(self, agent: str) -> int:
        for i, n in enumerate(self.names):
            if n.lower() == agent.lower():
                return i
        raise AgentError(f"no agent named {agent!r}")

    def _refit(self) -> None:
        s = self.settings
        xs: list[Vectors] = []
        ys: list[int] = []
        self._protos: list[Vectors] = []
        docs: list[Counter[str]] = []
        for i, (texts, vecs) in enumerate(self._base):
            fb = np.stack(self._fb_vecs[i]) if self._fb_vecs[i] else np.zeros((0, vecs.shape[1]), np.float32)
            all_vecs = np.vstack([vecs, fb]).astype(np.float32)
            self._protos.append(all_vecs)
            xs.append(all_vecs)
            ys += [i] * len(all_vecs)
            docs.append(Counter(w for t in [*texts, *self._fb_texts[i]] for w in words(t)))
        x = np.vstack(xs).astype(np.float64)
        y = np.array(ys)
        n_cls = len(self.names)
        warm = self._w is not None
        w = self._w if self._w is not None else np.zeros((n_cls, x.shape[1]), dtype=np.float64)
        b = self._b
        for _ in range(s.refit_steps if warm else s.fit_steps):
            # einsum's own loops, not BLAS: for matrices this small, BLAS threads only contend on a busy machine
            z = (np.einsum("nd,cd->nc", x, w) + b) * s.temperature
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(y)), y] -= 1.0
            w -= s.fit_rate * (np.einsum("nc,nd->cd", p, x) / len(y) + s.l2 * w)
            b -= s.fit_rate * p.mean(axis=0)
        self._w, self._b = w, b
        df = Counter(word for d in docs for word in d)
        self._idf = {word: math.log(1 + len(docs) / c) for word, c in df.items()}
        self._docs = docs
        vocab = {word for d in docs for word in d}
        self._vocab_size = max(1, len(vocab))
        self._doc_totals = [sum(d.values()) for d in docs]
        self._dirty = False

    def _bayes(self, text: str) -> npt.NDArray[np.float64]:
        s = self.settings
        q = [t for t in words(text) if t in self._idf]
        out = np.zeros(len(self._docs))
        if not q:
            return out
        for i, d in enumerate(self._docs):
            denom = math.log(self._doc_totals[i] + s.bayes_alpha * self._vocab_size)
            out[i] = sum(math.log(d[t] + s.bayes_alpha) - denom for t in q)
        z: npt.NDArray[np.float64] = np.exp((out - out.max()) * s.bayes_scale)
        return z / float(z.sum())

    def _lexical(self, text: str) -> npt.NDArray[np.float64]:
        q = set(words(text))
        out = np.zeros(len(self._docs))
        for i, d in enumerate(self._docs):
            out[i] = sum(self._idf[t] * (1 + math.log(d[t])) for t in q if t in d)
        norm = float(np.linalg.norm(out))
        return out / norm if norm else out

    def scores(self, text: str, q: Vectors) -> list[Choice]:
        s = self.settings
        if self._dirty:
            self._refit()
        assert self._w is not None
        proto = np.array([float((p @ q).max()) for p in self._protos])
        z = (self._w @ q + self._b) * s.temperature
        z = np.exp(z - z.max())
        total = s.prototype_weight * proto + s.classifier_weight * z / z.sum() + s.lexical_weight * self._lexical(text)
        if s.bayes_weight:
            total += s.bayes_weight * self._bayes(text)
        order = [int(i) for i in np.argsort(-total, kind="stable")]
        if total[order[0]] < s.fallback_below and s.fallback_agent in self.names:
            fb = self.names.index(s.fallback_agent)
            order = [fb, *(i for i in order if i != fb)]
        return [Choice(self.names[i], float(total[i])) for i in order]

    def route(self, text: str, k: int = 3) -> list[Choice]:
        """The ``k`` best agents for ``text``. Blocking (embeds the text)."""
        return self.scores(text, self.embed([text])[0])[:k]

    def feedback(self, text: str, q: Vectors, agent: str) -> None:
        """Learn online that ``agent`` was the right one for this request (a confirmation or a correction).
        The classifier is refitted (warm) before the next routing."""
        i = self._index(agent)
        if len(self._fb_vecs[i]) >= MAX_FEEDBACK_PER_AGENT:
            self._fb_vecs[i].pop(0)
            self._fb_texts[i].pop(0)
        self._fb_vecs[i].append(np.asarray(q, dtype=np.float32))
        self._fb_texts[i].append(text)
        self.feedback_count += 1
        self._dirty = True
