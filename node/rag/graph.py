"""The local knowledge graph and personalised-PageRank expansion of a query (HippoRAG 2 style).

Tables (created by :func:`ensure_schema` in the knowledge base's SQLite file, keyed by ``chunks.id``)::

    entities(id INTEGER PRIMARY KEY, key TEXT UNIQUE, df INTEGER)     -- normalised keyphrase, #chunks with it
    mentions(chunk_id, entity_id, count)  PK (chunk_id, entity_id)     -- entity occurs in chunk
    relations(chunk_id, src, dst, weight) PK (chunk_id, src, dst)      -- entities co-occurring in a sentence
    graph_stats(key TEXT PRIMARY KEY, value INTEGER)                  -- n_chunks indexed

Entities come from :mod:`node.rag.keyphrases` (no model). Relations are co-occurrences within a sentence of a
chunk (weight = number of sentences), at most :data:`MAX_RELATIONS_PER_CHUNK` per chunk.

Expansion (:func:`expand`): the graph has entity nodes and passage (chunk) nodes; passage–entity edges weigh
the entity's IDF, entity–entity edges the relation weight (scaled by ``relation_weight``). A query builds a
*bounded local subgraph*: the query's own entities and the most specific entities of the seed passages (at most
:data:`ENTITIES_PER_SEED` each, only entities in at most ``max_df`` chunks), the passages mentioning those
entities (at most :data:`MAX_FANOUT` each), and the relations among them. Personalised PageRank then runs on it
with the reset vector split between the query's entities (IDF-weighted) and the top :data:`MAX_SEEDS` seed
passages (their scaled retrieval scores), as HippoRAG 2 seeds both phrase and passage nodes. The PageRank mass
of each passage (best = 1) is blended with its first-stage score: ``(1 − λ)·seed + λ·ppr``. Work per query is
bounded by the caps (a few hundred entity rows and a few thousand passage edges), not by the corpus size.

Whether expansion helps is measured by ``bench/graph_eval.py`` (nDCG@10 on SciFact with and without it).
"""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from node.rag import trust
from node.rag.keyphrases import extract

MAX_ENTITIES_PER_CHUNK = 48  # keyphrases kept per chunk (most frequent/marked first)
MAX_RELATIONS_PER_CHUNK = 96  # co-occurrence pairs kept per chunk
MAX_KEYS_PER_SENTENCE = 10  # co-occurrence pairs come from the first keys of a sentence (<= 45 pairs)
SQL_BATCH = 500  # ids per IN (...) list

# Expansion bounds (per query).
MAX_SEEDS = 20  # seed passages used
ENTITIES_PER_SEED = 8  # most specific entities taken from each seed passage
MAX_ENTITIES = 96  # entity nodes in the subgraph
MAX_FANOUT = 64  # passages taken per entity (entities in more chunks than max_df are skipped)
SEED_FLOOR = 0.05  # added to every scaled seed weight, so the last seed still restarts some walks


@dataclass(frozen=True, slots=True)
class ExpandParams:
    damping: float = 0.5  # probability of following an edge (HippoRAG uses 0.5)
    iterations: int = 20
    passage_reset_share: float = 0.5  # share of the reset mass on seed passages (rest on query entities)
    relation_weight: float = 0.3  # entity–entity edges relative to passage–entity edges
    max_df_fraction: float = 0.05  # entities in more than this fraction of chunks are too generic to follow
    max_df: int = MAX_FANOUT
    graph_weight: float = 0.3  # λ: weight of the PageRank score against the first-stage score in expand()


_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS entities (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, df INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS mentions (
        chunk_id INTEGER NOT NULL, entity_id INTEGER NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (chunk_id, entity_id)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS mentions_entity ON mentions(entity_id, chunk_id)",
    """CREATE TABLE IF NOT EXISTS relations (
        chunk_id INTEGER NOT NULL, src INTEGER NOT NULL, dst INTEGER NOT NULL, weight REAL NOT NULL,
        PRIMARY KEY (chunk_id, src, dst)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS relations_src ON relations(src, dst)",
    "CREATE TABLE IF NOT EXISTS graph_stats (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
]


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the graph (and trust) tables if missing (idempotent)."""
    for stmt in _SCHEMA:
        conn.execute(stmt)
    trust.ensure_schema(conn)


def _batches(items: Sequence[int], n: int = SQL_BATCH) -> list[Sequence[int]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def n_chunks(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM graph_stats WHERE key = 'n_chunks'").fetchone()
    return int(row[0]) if row else 0


def _add_n_chunks(conn: sqlite3.Connection, delta: int) -> None:
    conn.execute(
        "INSERT INTO graph_stats(key, value) VALUES ('n_chunks', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = max(0, value + excluded.value)",
        (delta,),
    )


def _entity_ids(conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, tuple[int, int]]:
    """key -> (entity id, df) for the keys that exist."""
    out: dict[str, tuple[int, int]] = {}
    unique = list(dict.fromkeys(keys))
    for i in range(0, len(unique), SQL_BATCH):
        part = unique[i : i + SQL_BATCH]
        for eid, key, df in conn.execute(f"SELECT id, key, df FROM entities WHERE key IN ({_marks(len(part))})", part):
            out[str(key)] = (int(eid), int(df))
    return out


def index_chunks(conn: sqlite3.Connection, chunks: Sequence[tuple[int, str]]) -> None:
    """Extract entities and relations of ``(chunk_id, text)`` pairs and store them (re-indexing a chunk replaces
    its rows). Also records each chunk's claim key for :mod:`node.rag.trust`. Runs in the caller's transaction."""
    ensure_schema(conn)
    if not chunks:
        return
    remove_chunks(conn, [cid for cid, _ in chunks])
    extracted = [(cid, extract(text, max_entities=MAX_ENTITIES_PER_CHUNK)) for cid, text in chunks]
    all_keys = [k for _, ex in extracted for k in ex.counts]
    conn.executemany("INSERT OR IGNORE INTO entities(key, df) VALUES (?, 0)", [(k,) for k in dict.fromkeys(all_keys)])
    ids = _entity_ids(conn, all_keys)
    df_delta: dict[int, int] = defaultdict(int)
    mention_rows: list[tuple[int, int, int]] = []
    relation_rows: list[tuple[int, int, int, float]] = []
    for cid, ex in extracted:
        for key, count in ex.counts.items():
            eid = ids[key][0]
            mention_rows.append((cid, eid, count))
            df_delta[eid] += 1
        pairs: dict[tuple[int, int], float] = defaultdict(float)
        for sentence in ex.sentences:
            eids = sorted({ids[k][0] for k in sentence[:MAX_KEYS_PER_SENTENCE]})
            for a, b in combinations(eids, 2):
                pairs[(a, b)] += 1.0
        best = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_RELATIONS_PER_CHUNK]
        relation_rows.extend((cid, a, b, w) for (a, b), w in best)
    conn.executemany("INSERT INTO mentions(chunk_id, entity_id, count) VALUES (?, ?, ?)", mention_rows)
    conn.executemany("INSERT INTO relations(chunk_id, src, dst, weight) VALUES (?, ?, ?, ?)", relation_rows)
    conn.executemany("UPDATE entities SET df = df + ? WHERE id = ?", [(d, eid) for eid, d in df_delta.items()])
    _add_n_chunks(conn, len({cid for cid, _ in chunks}))
    trust.index_chunks(conn, chunks)


def remove_chunks(conn: sqlite3.Connection, chunk_ids: Sequence[int]) -> None:
    """Forget the graph rows (and claim keys) of these chunks. Entities no chunk mentions any more are deleted."""
    ensure_schema(conn)
    ids = list(dict.fromkeys(chunk_ids))
    removed = 0
    for part in _batches(ids):
        marks = _marks(len(part))
        rows = conn.execute(
            f"SELECT entity_id, count(*) FROM mentions WHERE chunk_id IN ({marks}) GROUP BY entity_id", list(part)
        ).fetchall()
        removed += conn.execute(
            f"SELECT count(DISTINCT chunk_id) FROM mentions WHERE chunk_id IN ({marks})", list(part)
        ).fetchone()[0]
        conn.executemany("UPDATE entities SET df = df - ? WHERE id = ?", [(n, eid) for eid, n in rows])
        conn.execute(f"DELETE FROM mentions WHERE chunk_id IN ({marks})", list(part))
        conn.execute(f"DELETE FROM relations WHERE chunk_id IN ({marks})", list(part))
        if rows:
            eids = [eid for eid, _ in rows]
            conn.execute(f"DELETE FROM entities WHERE df <= 0 AND id IN ({_marks(len(eids))})", eids)
    if removed:
        _add_n_chunks(conn, -removed)
    trust.remove_chunks(conn, ids)


def query_entities(conn: sqlite3.Connection, query_text: str) -> dict[int, float]:
    """Entity id -> IDF weight for the query's keyphrases found in the graph."""
    n = max(1, n_chunks(conn))
    found = _entity_ids(conn, list(extract(query_text).counts))
    return {eid: _idf(n, df) for eid, df in found.values() if df > 0}


def _idf(n: int, df: int) -> float:
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def expand(
    conn: sqlite3.Connection,
    query_text: str,
    seeds: dict[int, float],
    params: ExpandParams | None = None,
) -> dict[int, float]:
    """Re-score a first-stage candidate set through the graph. ``seeds``: chunk id -> retrieval score (higher is
    better, any scale). Returns chunk id -> ``(1 − λ)·seed + λ·ppr`` for the seeds and every passage the graph
    reached, where ``seed`` is the seed score min-max scaled to [0, 1] (0 for a passage that was no seed), ``ppr``
    the personalised-PageRank mass scaled so the best is 1, and λ = ``params.graph_weight``. With nothing relevant
    in the graph the seeds come back (scaled), in the same order."""
    p = params or ExpandParams()
    norm = _minmax(seeds)
    ppr = graph_scores(conn, query_text, norm, p)
    lam = p.graph_weight if ppr else 0.0
    return {cid: (1.0 - lam) * norm.get(cid, 0.0) + lam * ppr.get(cid, 0.0) for cid in {*norm, *ppr}}


def _minmax(scores: dict[int, float]) -> dict[int, float]:
    finite = {k: v for k, v in scores.items() if math.isfinite(v)}
    if not finite:
        return {}
    lo, hi = min(finite.values()), max(finite.values())
    if hi <= lo:
        return dict.fromkeys(finite, 1.0)
    return {k: (v - lo) / (hi - lo) for k, v in finite.items()}


def graph_scores(
    conn: sqlite3.Connection, query_text: str, seeds: dict[int, float], params: ExpandParams | None = None
) -> dict[int, float]:
    """Personalised PageRank over the local subgraph around the query's entities and the seed passages
    (chunk id -> weight >= 0). Returns chunk id -> PageRank mass scaled to max 1, for the seeds and the passages
    the graph reached; empty when the graph knows nothing relevant."""
    p = params or ExpandParams()
    n = max(1, n_chunks(conn))
    max_df = max(2, min(p.max_df, int(p.max_df_fraction * n) or 2))
    top_seeds = sorted(seeds.items(), key=lambda kv: -kv[1])[:MAX_SEEDS]
    seed_w = {cid: max(0.0, s) + SEED_FLOOR for cid, s in top_seeds}
    q_ent = {eid: w for eid, w in query_entities(conn, query_text).items()}

    # Entities: the query's own (any df: they anchor the reset vector) and the seeds' most specific ones.
    ent_weight: dict[int, float] = dict(q_ent)
    ent_df: dict[int, int] = {}
    seed_ids = list(seed_w)
    if seed_ids:
        rows = conn.execute(
            f"SELECT m.chunk_id, e.id, e.df FROM mentions m JOIN entities e ON e.id = m.entity_id "
            f"WHERE m.chunk_id IN ({_marks(len(seed_ids))})",
            seed_ids,
        ).fetchall()
        per_seed: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for cid, eid, df in rows:
            ent_df[int(eid)] = int(df)
            if 1 < df <= max_df:  # df 1: only this seed, leads nowhere
                per_seed[int(cid)].append((int(df), int(eid)))
        for cid in seed_ids:
            for df, eid in sorted(per_seed.get(cid, []))[:ENTITIES_PER_SEED]:
                ent_weight.setdefault(eid, _idf(n, df))
    if not ent_weight and not seed_w:
        return {}
    entities = sorted(ent_weight, key=lambda e: (e not in q_ent, -ent_weight[e], e))[:MAX_ENTITIES]

    # Passages mentioning those entities (bounded fan-out per entity).
    edges_pe: list[tuple[int, int, float]] = []  # (entity, chunk, weight)
    if entities:
        eids = list(entities)
        for part in _batches(eids):
            rows = conn.execute(
                f"SELECT e.id, e.df FROM entities e WHERE e.id IN ({_marks(len(part))})", list(part)
            ).fetchall()
            for eid, df in rows:
                ent_df[int(eid)] = int(df)
        for eid in eids:
            if ent_df.get(eid, 0) > max_df:  # too generic to follow (a query entity still restarts walks)
                continue
            w = ent_weight[eid]
            for (cid,) in conn.execute(
                "SELECT chunk_id FROM mentions WHERE entity_id = ? LIMIT ?", (eid, MAX_FANOUT)
            ).fetchall():
                edges_pe.append((eid, int(cid), w))
    # Seed passages also link to their entities already in the subgraph (covered above when df <= max_df).
    ent_set = set(entities)
    edges_ee: list[tuple[int, int, float]] = []
    if p.relation_weight > 0 and len(entities) > 1:
        marks = _marks(len(entities))
        for a, b, w in conn.execute(
            f"SELECT src, dst, sum(weight) FROM relations WHERE src IN ({marks}) AND dst IN ({marks}) "
            "GROUP BY src, dst",
            [*entities, *entities],
        ).fetchall():
            if a in ent_set and b in ent_set:
                edges_ee.append((int(a), int(b), p.relation_weight * math.log1p(float(w))))
    if not edges_pe and not edges_ee:
        return {}  # nothing links anything: PageRank would only echo the seeds
    return _ppr(q_ent, seed_w, edges_pe, edges_ee, p)


def _ppr(
    q_ent: dict[int, float],
    seed_w: dict[int, float],
    edges_pe: list[tuple[int, int, float]],
    edges_ee: list[tuple[int, int, float]],
    p: ExpandParams,
) -> dict[int, float]:
    index: dict[tuple[str, int], int] = {}

    def node(kind: str, ident: int) -> int:
        return index.setdefault((kind, ident), len(index))

    src: list[int] = []
    dst: list[int] = []
    wts: list[float] = []
    for eid, cid, w in edges_pe:
        a, b = node("e", eid), node("p", cid)
        src += [a, b]
        dst += [b, a]
        wts += [w, w]
    for ea, eb, w in edges_ee:
        a, b = node("e", ea), node("e", eb)
        src += [a, b]
        dst += [b, a]
        wts += [w, w]
    for cid in seed_w:
        node("p", cid)
    for eid in q_ent:
        node("e", eid)
    size = len(index)
    reset = np.zeros(size)
    q_total, s_total = sum(q_ent.values()), sum(seed_w.values())
    share = p.passage_reset_share if q_total > 0 and s_total > 0 else (1.0 if s_total > 0 else 0.0)
    for eid, w in q_ent.items():
        if q_total > 0:
            reset[index[("e", eid)]] += (1.0 - share) * w / q_total
    for cid, w in seed_w.items():
        if s_total > 0:
            reset[index[("p", cid)]] += share * w / s_total
    if reset.sum() <= 0:
        return {}
    s_arr, d_arr, w_arr = np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64), np.array(wts)
    out_w: np.ndarray = np.bincount(s_arr, weights=w_arr, minlength=size) if len(s_arr) else np.zeros(size)
    norm_w = w_arr / np.where(out_w[s_arr] > 0, out_w[s_arr], 1.0) if len(s_arr) else w_arr
    dangling = out_w == 0
    x = reset.copy()
    for _ in range(p.iterations):
        spread = np.bincount(d_arr, weights=x[s_arr] * norm_w, minlength=size) if len(s_arr) else np.zeros(size)
        # Mass on nodes without edges returns to the reset vector (no mass is lost).
        x = (1.0 - p.damping) * reset + p.damping * (spread + x[dangling].sum() * reset)
    passages = {ident: float(x[i]) for (kind, ident), i in index.items() if kind == "p"}
    best = max(passages.values(), default=0.0)
    if best <= 0:
        return {}
    return {cid: v / best for cid, v in passages.items() if v > 0}


__all__ = [
    "ExpandParams",
    "ensure_schema",
    "expand",
    "graph_scores",
    "index_chunks",
    "n_chunks",
    "query_entities",
    "remove_chunks",
]
