"""Does knowledge-graph expansion help retrieval? nDCG@10 on SciFact with and without ``node.rag.graph.expand``.

First stage: the knowledge base's own FTS5 BM25 (``Store.bm25``, porter stemming) over the 5,183 abstracts, one
chunk per abstract (or ``--sentences-per-chunk N``: ~30k chunks with N = 1, the size the query budget is set
for), ``--candidates`` hits per query, ranked per document by its best chunk. Expanded: the same hits re-scored by
``graph.expand`` (personalised PageRank over the keyphrase graph, see its docstring). Parameters are chosen on
the SciFact *training* claims (``--split train``); the figure to report is ``--split test`` (the 300 BEIR test
queries) with the parameters fixed beforehand.

Prints one summary line per figure: nDCG@10 without and with expansion, their difference, the graph's size and
build time, and the expansion's median/p95 time per query as a ratio to the BM25 query it follows (same run).

    python bench/graph_eval.py --split test
    python bench/graph_eval.py --split train --sweep     # small parameter grid on the training claims
    python bench/graph_eval.py --split test --pipeline   # the real RagService (BM25 + MiniLM fused, chunked)

``--pipeline`` ingests the abstracts as files through ``RagService.add`` (chunking, embeddings, graph) into
``--cache`` (kept between runs: a re-run finds every file unchanged) and compares ``RagService.ranked`` with
``use_graph`` off and on, best chunk per document.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import scifact_data
import trio

from node.rag import graph
from node.rag.service import RagService
from node.rag.settings import RagSection
from node.rag.store import NewChunk, Store

DEFAULTS = graph.ExpandParams()


def ndcg_at_10(ranked: list[str], relevant: set[str]) -> float:
    dcg = sum(1.0 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(10, len(relevant))))
    return dcg / ideal if ideal else 0.0


def _pieces(text: str, sentences_per_chunk: int) -> list[str]:
    if sentences_per_chunk <= 0:
        return [text]
    sentences = re.split(r"(?<=[.!?])\s+", text)
    return [" ".join(sentences[i : i + sentences_per_chunk]) for i in range(0, len(sentences), sentences_per_chunk)]


def build(docs: dict[str, str], path: Path, sentences_per_chunk: int = 0) -> tuple[Store, dict[int, str], float]:
    store = Store(path)
    chunk_doc: dict[int, str] = {}
    with store.transaction() as conn:
        pending: list[tuple[int, str]] = []
        for did, text in docs.items():
            pieces = _pieces(text, sentences_per_chunk)
            _, ids = store.insert_document(
                conn,
                source=f"scifact:{did}",
                content_hash=did,
                origin_peer=None,
                added_at=0.0,
                shared=False,
                title="",
                mime="text/plain",
                size_bytes=len(text),
                chunks=[NewChunk(i, piece, 0, len(piece), None) for i, piece in enumerate(pieces)],
            )
            for cid, piece in zip(ids, pieces, strict=True):
                chunk_doc[cid] = did
                pending.append((cid, piece))
        t_graph = time.perf_counter()
        graph.index_chunks(conn, pending)
        graph_s = time.perf_counter() - t_graph
    return store, chunk_doc, graph_s


def evaluate(
    store: Store,
    chunk_doc: dict[int, str],
    queries: dict[str, str],
    qrels: dict[str, set[str]],
    candidates: int,
    params: graph.ExpandParams,
    timings: list[tuple[float, float]] | None = None,
) -> tuple[float, float]:
    base, expanded = [], []
    for qid, rel in qrels.items():
        text = queries[qid]
        t0 = time.perf_counter()
        bm = store.bm25(text, candidates)
        t1 = time.perf_counter()
        scores = graph.expand(store.conn, text, dict(bm), params)
        t2 = time.perf_counter()
        if timings is not None:
            timings.append((t1 - t0, t2 - t1))
        base.append(ndcg_at_10(_doc_order(bm, chunk_doc), rel))
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        expanded.append(ndcg_at_10(_doc_order(ranked, chunk_doc), rel))
    return statistics.fmean(base), statistics.fmean(expanded)


def _doc_order(ranked: list[tuple[int, float]], chunk_doc: dict[int, str]) -> list[str]:
    seen: dict[str, None] = {}
    for cid, _ in ranked:
        did = chunk_doc.get(cid)
        if did is not None:
            seen.setdefault(did, None)
    return list(seen)


async def pipeline(data: scifact_data.SciFact, qrels: dict[str, set[str]], cache: Path) -> None:
    docs_dir = cache / "docs"
    docs_dir.mkdir(parents=True, exist_ok=True)
    for did, text in data.docs.items():
        f = docs_dir / f"{did}.txt"
        if not f.exists():
            f.write_text(text, encoding="utf-8")
    svc = RagService(RagSection(), cache / "rag")
    async with trio.open_nursery() as nursery:
        await nursery.start(svc.run)
        t0 = time.perf_counter()
        summary = await svc.add([str(docs_dir)])
        print(
            f"ingest: {summary.get('added', 0)} added, {summary.get('unchanged', 0)} unchanged in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        store = svc._store
        assert store is not None
        rows = store.conn.execute("SELECT c.id, d.source FROM chunks c JOIN documents d ON d.id = c.doc_id")
        chunk_doc = {int(cid): Path(src).stem for cid, src in rows}
        base, expanded, t_base, t_graph = [], [], [], []
        for qid, rel in qrels.items():
            text = data.queries[qid]
            qvec = (await trio.to_thread.run_sync(svc.embedder.embed, [text]))[0]
            a = time.perf_counter()
            plain = svc.ranked(text, qvec, "hybrid", False)
            b = time.perf_counter()
            with_graph = svc.ranked(text, qvec, "hybrid", True)
            c = time.perf_counter()
            t_base.append(b - a)
            t_graph.append((c - b) - (b - a))
            base.append(ndcg_at_10(_doc_order(plain, chunk_doc), rel))
            expanded.append(ndcg_at_10(_doc_order(with_graph, chunk_doc), rel))
        nb, ne = statistics.fmean(base), statistics.fmean(expanded)
        print(
            f"nDCG@10 ({len(qrels)} queries, RagService hybrid, {len(chunk_doc)} chunks): without graph {nb:.4f}, "
            f"with graph {ne:.4f} (delta {ne - nb:+.4f})"
        )
        print(
            f"graph expansion adds p50 {statistics.median(t_graph) * 1000:.2f} ms per query to the fused ranking "
            f"(p50 {statistics.median(t_base) * 1000:.2f} ms without it) in this run"
        )
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=("train", "test"), default="test")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--sweep", action="store_true", help="try a small grid of expansion parameters")
    ap.add_argument(
        "--sentences-per-chunk", type=int, default=0, help="split abstracts into chunks of N sentences (0: whole)"
    )
    ap.add_argument("--pipeline", action="store_true", help="measure through RagService (hybrid, chunked)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "village-graph-eval")
    ap.add_argument("--graph-weight", type=float, default=DEFAULTS.graph_weight)
    ap.add_argument("--damping", type=float, default=DEFAULTS.damping)
    ap.add_argument("--passage-share", type=float, default=DEFAULTS.passage_reset_share)
    ap.add_argument("--relation-weight", type=float, default=DEFAULTS.relation_weight)
    args = ap.parse_args(argv)
    try:
        data = scifact_data.load()
    except FileNotFoundError as exc:
        print(f"graph_eval: SciFact data not found ({exc}); set VILLAGE_SHARED_DIR", file=sys.stderr)
        return 2
    qrels = data.test_qrels if args.split == "test" else data.train_qrels
    if args.pipeline:
        trio.run(pipeline, data, qrels, args.cache)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        store, chunk_doc, graph_s = build(data.docs, Path(tmp) / "rag.sqlite3", args.sentences_per_chunk)
        n_ent = store.conn.execute("SELECT count(*) FROM entities").fetchone()[0]
        n_men = store.conn.execute("SELECT count(*) FROM mentions").fetchone()[0]
        n_rel = store.conn.execute("SELECT count(*) FROM relations").fetchone()[0]
        print(
            f"graph: {len(chunk_doc)} chunks, {n_ent} entities, {n_men} mentions, {n_rel} relations; "
            f"built in {graph_s:.1f} s ({len(chunk_doc) / graph_s:.0f} chunks/s)"
        )
        params = graph.ExpandParams(
            graph_weight=args.graph_weight,
            damping=args.damping,
            passage_reset_share=args.passage_share,
            relation_weight=args.relation_weight,
        )
        grid = [params]
        if args.sweep:
            grid = [
                dataclasses.replace(params, graph_weight=gw, damping=dp, passage_reset_share=ps)
                for gw in (0.1, 0.2, 0.3, 0.5)
                for dp in (0.5, 0.85)
                for ps in (0.3, 0.5, 0.8)
            ]
        timings: list[tuple[float, float]] = []
        for i, p in enumerate(grid):
            base, expanded = evaluate(
                store, chunk_doc, data.queries, qrels, args.candidates, p, timings if i == 0 else None
            )
            print(
                f"nDCG@10 {args.split} ({len(qrels)} queries): bm25 {base:.4f}, bm25+graph {expanded:.4f} "
                f"(delta {expanded - base:+.4f}) graph_weight={p.graph_weight} damping={p.damping} "
                f"passage_share={p.passage_reset_share} relation_weight={p.relation_weight}"
            )
        bm_t, ex_t = [a for a, _ in timings], [b for _, b in timings]
        bm_med, ex_med = statistics.median(bm_t), statistics.median(ex_t)
        ex_p95 = sorted(ex_t)[int(0.95 * (len(ex_t) - 1))]
        print(
            f"expand time per query: p50 {ex_med * 1000:.2f} ms, p95 {ex_p95 * 1000:.2f} ms; "
            f"{ex_med / bm_med:.2f}x the BM25 query (p50 {bm_med * 1000:.2f} ms) in this run"
        )
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
