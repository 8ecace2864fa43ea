"""Bayesian trust: a Beta reputation per source, a subjective-logic opinion per chunk (claim).

Sources. A source is named by a key: ``file:<path or URI>`` for a local document, ``peer:<hex peer ID>`` for
what a peer sent us (a document with ``origin_peer`` set, or a federated hit), ``user:local`` for this node's
user. Each source has evidence counts ``r`` (good) and ``s`` (bad), decayed by exponential forgetting with a
half-life ``H``: evidence ``Δt`` seconds old weighs ``λ = 2^(−Δt / H)``. Stored as (r, s, updated_at); read at
``now`` as ``r·λ, s·λ``. Feedback adds 1 to ``r`` (good) or ``s`` (bad) after decaying. The Beta reputation is

    α = α0 + r,  β = β0 + s  (prior α0 = β0 = 1),   reputation E = α / (α + β).

Opinions (Jøsang, *Subjective Logic*, 2016). An opinion is (b, d, u, a) with b + d + u = 1, base rate a.
Evidence (r, s) maps to ``b = r/(r+s+W), d = s/(r+s+W), u = W/(r+s+W)`` with W = 2 and a = α0/(α0+β0) = 0.5, so
the projected probability ``E = b + a·u = (r + 1)/(r + s + 2)`` equals the Beta mean above.

Claims. A chunk's claim is its text, normalised (Unicode NFKC, lowercase, words of letters/digits joined by one
space) and hashed: chunks with the same normalised text — the same content from several documents, files or
peers, or a near-duplicate differing only in case, spacing or punctuation — are one claim. Each source that
asserts a claim is one piece of evidence about it: (r, s) = (1, 0) if it supports it, (0, 1) if it contradicts
it. That opinion is *discounted* by the source's reputation P (probability-sensitive discounting):

    b' = P·b,  d' = P·d,  u' = 1 − P·(b + d),  a' = a

and the discounted opinions of independent sources are combined by *cumulative fusion*:

    κ = u1 + u2 − u1·u2;   b = (b1·u2 + b2·u1)/κ,  d = (d1·u2 + d2·u1)/κ,  u = u1·u2/κ,
    a = (a1·u2 + a2·u1 − (a1 + a2)·u1·u2)/(u1 + u2 − 2·u1·u2)  (a = (a1 + a2)/2 when u1 = u2 = 1);
    when u1 = u2 = 0 (two dogmatic opinions): b, d, a are the averages and u = 0.

The user's own stance (``user:local``) is first-hand evidence: it is fused without discounting.

What *supports* and *contradicts* means here — kept deliberately simple and honest:

* Support: every document (of any source) that contains the claim supports it. Nothing else is read into text;
  we do not detect paraphrase or entailment.
* Contradiction is only ever explicit: a stance recorded with :meth:`TrustStore.record_stance` — written when the
  user marks a result bad (:meth:`TrustStore.feedback_chunk`: the user contradicts that claim, and the bad mark
  counts against the chunk's source), or by a caller that knows a source disputes a claim (e.g. a peer's answer
  flagged as contradicting). A recorded stance of a source replaces its implicit support of that claim.

Results show ``trust`` = E of the chunk's fused opinion and ``uncertainty`` = its u.
"""

from __future__ import annotations

import hashlib
import math
import re
import sqlite3
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from node.rag.errors import DocumentNotFound, RagError

W = 2.0  # the non-informative prior weight of subjective logic's evidence mapping
PRIOR_ALPHA = 1.0  # Beta prior α0 (uniform)
PRIOR_BETA = 1.0  # Beta prior β0
DEFAULT_HALF_LIFE_S = 90 * 86_400.0  # evidence weighs half after 90 days
USER_SOURCE = "user:local"
MAX_SOURCES_PER_CLAIM = 64  # sources fused per claim (bounded work per result)

_WORD = re.compile(r"[^\W_]+", re.UNICODE)

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS trust_sources (
        source_key TEXT PRIMARY KEY,
        good REAL NOT NULL DEFAULT 0,       -- r: decayed good evidence as of updated_at
        bad REAL NOT NULL DEFAULT 0,        -- s: decayed bad evidence as of updated_at
        updated_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS trust_claims (
        chunk_id INTEGER PRIMARY KEY,
        claim_hash TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS trust_claims_hash ON trust_claims(claim_hash)",
    """CREATE TABLE IF NOT EXISTS trust_stances (
        claim_hash TEXT NOT NULL,
        source_key TEXT NOT NULL,
        supports INTEGER NOT NULL,          -- 1 supports, 0 contradicts
        at REAL NOT NULL,
        PRIMARY KEY (claim_hash, source_key)
    )""",
]


class TrustError(RagError):
    """A trust value or key is out of range."""


@dataclass(frozen=True, slots=True)
class Opinion:
    """A binomial subjective-logic opinion: belief, disbelief, uncertainty (summing to 1) and base rate."""

    b: float
    d: float
    u: float
    a: float = 0.5

    @property
    def expected(self) -> float:
        """The projected probability E = b + a·u."""
        return self.b + self.a * self.u

    @classmethod
    def from_evidence(cls, r: float, s: float, *, a: float = 0.5, w: float = W) -> Opinion:
        if r < 0 or s < 0:
            raise TrustError(f"evidence counts must be >= 0, got r={r}, s={s}")
        total = r + s + w
        return cls(r / total, s / total, w / total, a)

    @classmethod
    def vacuous(cls, a: float = 0.5) -> Opinion:
        return cls(0.0, 0.0, 1.0, a)

    def to_json(self) -> dict[str, float]:
        return {
            "belief": round(self.b, 6),
            "disbelief": round(self.d, 6),
            "uncertainty": round(self.u, 6),
            "base_rate": self.a,
            "expected": round(self.expected, 6),
        }


def discount(p: float, o: Opinion) -> Opinion:
    """Probability-sensitive discounting of ``o`` by a trust probability ``p`` in its source."""
    if not 0.0 <= p <= 1.0:
        raise TrustError(f"a trust probability must be in [0, 1], got {p}")
    return Opinion(p * o.b, p * o.d, 1.0 - p * (o.b + o.d), o.a)


def fuse(o1: Opinion, o2: Opinion) -> Opinion:
    """Cumulative fusion of two opinions from independent sources (formulas in the module docstring)."""
    u1, u2 = o1.u, o2.u
    if u1 == 0.0 and u2 == 0.0:
        return Opinion((o1.b + o2.b) / 2, (o1.d + o2.d) / 2, 0.0, (o1.a + o2.a) / 2)
    k = u1 + u2 - u1 * u2
    b = (o1.b * u2 + o2.b * u1) / k
    d = (o1.d * u2 + o2.d * u1) / k
    u = u1 * u2 / k
    if u1 == 1.0 and u2 == 1.0:
        a = (o1.a + o2.a) / 2
    else:
        a = (o1.a * u2 + o2.a * u1 - (o1.a + o2.a) * u1 * u2) / (u1 + u2 - 2 * u1 * u2)
    return Opinion(b, d, u, a)


def fuse_all(opinions: Iterable[Opinion]) -> Opinion:
    out: Opinion | None = None
    for o in opinions:
        out = o if out is None else fuse(out, o)
    return out if out is not None else Opinion.vacuous()


def decay(value: float, age_s: float, half_life_s: float) -> float:
    """Evidence ``value`` recorded ``age_s`` seconds ago, as it weighs now."""
    return value * math.pow(2.0, -max(0.0, age_s) / half_life_s)


def claim_hash(text: str) -> str:
    """The claim key of a chunk: its normalised text (NFKC, lowercase, alphanumeric words), hashed."""
    words = _WORD.findall(unicodedata.normalize("NFKC", text).lower())
    return hashlib.sha256(" ".join(words).encode()).hexdigest()[:32]


def source_key_for(source: str, origin_peer: str | None) -> str:
    """The trust source of a document: the peer it came from, else the local file/URI."""
    return f"peer:{origin_peer.lower()}" if origin_peer else f"file:{source}"


def peer_source_key(peer_hex: str) -> str:
    return f"peer:{peer_hex.lower()}"


@dataclass(frozen=True, slots=True)
class Reputation:
    source_key: str
    alpha: float
    beta: float
    opinion: Opinion  # trust in the source, from its (decayed) evidence

    @property
    def expected(self) -> float:
        """α / (α + β), equal to ``opinion.expected``."""
        return self.alpha / (self.alpha + self.beta)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source_key,
            "alpha": round(self.alpha, 6),
            "beta": round(self.beta, 6),
            "reputation": round(self.expected, 6),
            "uncertainty": round(self.opinion.u, 6),
        }


@dataclass(frozen=True, slots=True)
class ChunkTrust:
    chunk_id: int
    claim: str
    opinion: Opinion
    supporting: tuple[str, ...]  # source keys
    contradicting: tuple[str, ...]

    @property
    def trust(self) -> float:
        return self.opinion.expected

    @property
    def uncertainty(self) -> float:
        return self.opinion.u

    def to_json(self) -> dict[str, Any]:
        return {
            "trust": round(self.trust, 6),
            "uncertainty": round(self.uncertainty, 6),
            "opinion": self.opinion.to_json(),
            "supporting": list(self.supporting),
            "contradicting": list(self.contradicting),
        }


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the trust tables if they are missing (idempotent)."""
    for stmt in _SCHEMA:
        conn.execute(stmt)


def index_chunks(conn: sqlite3.Connection, chunks: Sequence[tuple[int, str]]) -> None:
    """Record each chunk's claim key (called by :func:`node.rag.graph.index_chunks`)."""
    ensure_schema(conn)
    conn.executemany(
        "INSERT OR REPLACE INTO trust_claims(chunk_id, claim_hash) VALUES (?, ?)",
        [(cid, claim_hash(text)) for cid, text in chunks],
    )


def remove_chunks(conn: sqlite3.Connection, chunk_ids: Sequence[int]) -> None:
    ensure_schema(conn)
    conn.executemany("DELETE FROM trust_claims WHERE chunk_id = ?", [(cid,) for cid in chunk_ids])


class TrustStore:
    """Reputations and opinions over the knowledge base's SQLite connection. Every call takes ``now`` (wall-clock
    seconds, the same clock as ``documents.added_at``); nothing here reads a clock. Writes are the caller's
    transaction's (no commit here)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        half_life_s: float = DEFAULT_HALF_LIFE_S,
        prior_alpha: float = PRIOR_ALPHA,
        prior_beta: float = PRIOR_BETA,
    ) -> None:
        if half_life_s <= 0 or prior_alpha <= 0 or prior_beta <= 0:
            raise TrustError("the half-life and the Beta prior must be > 0")
        self.conn = conn
        self.half_life_s = half_life_s
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.base_rate = prior_alpha / (prior_alpha + prior_beta)
        ensure_schema(conn)

    # ------------------------------------------------------------ sources
    def _evidence(self, source_key: str, now: float) -> tuple[float, float]:
        row = self.conn.execute(
            "SELECT good, bad, updated_at FROM trust_sources WHERE source_key = ?", (source_key,)
        ).fetchone()
        if row is None:
            return 0.0, 0.0
        age = now - float(row[2])
        return decay(float(row[0]), age, self.half_life_s), decay(float(row[1]), age, self.half_life_s)

    def reputation(self, source_key: str, now: float) -> Reputation:
        r, s = self._evidence(source_key, now)
        opinion = Opinion.from_evidence(r, s, a=self.base_rate, w=self.prior_alpha + self.prior_beta)
        return Reputation(source_key, self.prior_alpha + r, self.prior_beta + s, opinion)

    def feedback(self, source_key: str, good: bool, now: float, *, weight: float = 1.0) -> Reputation:
        """Add one piece of good or bad evidence about a source (after forgetting the old) and return its
        reputation now."""
        if not source_key or ":" not in source_key:
            raise TrustError(f"a source key looks like 'file:<path>' or 'peer:<hex id>', not {source_key!r}")
        if weight <= 0:
            raise TrustError("feedback weight must be > 0")
        r, s = self._evidence(source_key, now)
        r, s = (r + weight, s) if good else (r, s + weight)
        self.conn.execute(
            "INSERT OR REPLACE INTO trust_sources(source_key, good, bad, updated_at) VALUES (?, ?, ?, ?)",
            (source_key, r, s, now),
        )
        return self.reputation(source_key, now)

    def sources(self, now: float, *, limit: int = 1000) -> list[Reputation]:
        keys = [
            r[0]
            for r in self.conn.execute("SELECT source_key FROM trust_sources ORDER BY source_key LIMIT ?", (limit,))
        ]
        return [self.reputation(k, now) for k in keys]

    # ------------------------------------------------------------ claims
    def record_stance(self, claim: str, source_key: str, supports: bool, now: float) -> None:
        """A source explicitly supports or contradicts a claim (replacing its earlier stance on it)."""
        self.conn.execute(
            "INSERT OR REPLACE INTO trust_stances(claim_hash, source_key, supports, at) VALUES (?, ?, ?, ?)",
            (claim, source_key, int(supports), now),
        )

    def chunk_claim(self, chunk_id: int) -> str:
        row = self.conn.execute("SELECT claim_hash FROM trust_claims WHERE chunk_id = ?", (chunk_id,)).fetchone()
        if row is not None:
            return str(row[0])
        text = self.conn.execute("SELECT text FROM chunks WHERE id = ?", (chunk_id,)).fetchone()
        if text is None:
            raise DocumentNotFound(f"no chunk with id {chunk_id}")
        return claim_hash(str(text[0]))

    def chunk_source(self, chunk_id: int) -> str:
        row = self.conn.execute(
            "SELECT d.source, d.origin_peer FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE c.id = ?",
            (chunk_id,),
        ).fetchone()
        if row is None:
            raise DocumentNotFound(f"no chunk with id {chunk_id}")
        return source_key_for(str(row[0]), row[1])

    def claim_sources(self, claim: str) -> list[str]:
        """Source keys of every document holding a chunk with this claim (implicit support)."""
        rows = self.conn.execute(
            """SELECT DISTINCT d.source, d.origin_peer FROM trust_claims t
               JOIN chunks c ON c.id = t.chunk_id JOIN documents d ON d.id = c.doc_id
               WHERE t.claim_hash = ? LIMIT ?""",
            (claim, MAX_SOURCES_PER_CLAIM),
        ).fetchall()
        return sorted({source_key_for(str(s), p) for s, p in rows})

    def opinion_for_claim(
        self, claim: str, now: float, *, extra_support: Iterable[str] = (), implicit: Iterable[str] | None = None
    ) -> ChunkTrust:
        """The fused opinion on a claim. ``extra_support``: sources known to assert it that are not in the store
        (e.g. peers that returned it in a federated answer). ``implicit``: the supporting sources if already known
        (else read from the store)."""
        stances: dict[str, bool] = {
            str(k): bool(v)
            for k, v in self.conn.execute(
                "SELECT source_key, supports FROM trust_stances WHERE claim_hash = ? LIMIT ?",
                (claim, MAX_SOURCES_PER_CLAIM),
            )
        }
        support = set(self.claim_sources(claim) if implicit is None else implicit) | set(extra_support)
        verdicts = {k: True for k in support}
        verdicts.update(stances)  # an explicit stance replaces implicit support
        opinions: list[Opinion] = []
        for key, supports in sorted(verdicts.items())[:MAX_SOURCES_PER_CLAIM]:
            evidence = Opinion.from_evidence(1.0 if supports else 0.0, 0.0 if supports else 1.0, a=self.base_rate)
            if key == USER_SOURCE:
                opinions.append(evidence)  # first-hand
            else:
                opinions.append(discount(self.reputation(key, now).expected, evidence))
        return ChunkTrust(
            chunk_id=-1,
            claim=claim,
            opinion=fuse_all(opinions) if opinions else Opinion.vacuous(self.base_rate),
            supporting=tuple(sorted(k for k, v in verdicts.items() if v)),
            contradicting=tuple(sorted(k for k, v in verdicts.items() if not v)),
        )

    def opinion_for_chunk(self, chunk_id: int, now: float) -> ChunkTrust:
        ct = self.opinion_for_claim(self.chunk_claim(chunk_id), now, extra_support=[self.chunk_source(chunk_id)])
        return ChunkTrust(chunk_id, ct.claim, ct.opinion, ct.supporting, ct.contradicting)

    def opinions_for_chunks(self, chunk_ids: Sequence[int], now: float) -> dict[int, ChunkTrust]:
        return {cid: self.opinion_for_chunk(cid, now) for cid in chunk_ids}

    def feedback_claim(self, claim: str, source_key: str, good: bool, now: float) -> Reputation:
        """The user marks a claim a source asserted (e.g. a peer's result) good or bad: the source gains evidence
        and the user's stance on the claim is recorded. Returns the source's new reputation."""
        self.record_stance(claim, USER_SOURCE, good, now)
        return self.feedback(source_key, good, now)

    def feedback_chunk(self, chunk_id: int, good: bool, now: float) -> Reputation:
        """The user marks a result good or bad: the chunk's source gains good/bad evidence, and the user's own
        stance on the claim is recorded (bad = the user contradicts it). Returns the source's new reputation."""
        claim, source = self.chunk_claim(chunk_id), self.chunk_source(chunk_id)
        self.record_stance(claim, USER_SOURCE, good, now)
        return self.feedback(source, good, now)


__all__ = [
    "USER_SOURCE",
    "ChunkTrust",
    "Opinion",
    "Reputation",
    "TrustError",
    "TrustStore",
    "claim_hash",
    "decay",
    "discount",
    "ensure_schema",
    "fuse",
    "fuse_all",
    "index_chunks",
    "peer_source_key",
    "remove_chunks",
    "source_key_for",
]
