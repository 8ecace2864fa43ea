"""Retrieval quality and speed of the knowledge base on SciFact, through a real running node.

What it does:

1. Writes the 5,183 SciFact abstracts (title + sentences) as ``<doc_id>.txt`` files, starts ``village run`` on a
   fresh data dir (default ``[rag]`` settings), and ingests the folder with one ``rag.add`` over the control
   socket: **ingest docs/s**. Baseline in the same run: the embedding model alone, in this process, on the
   first ``--baseline-docs`` documents' chunks (the ratio shows what chunking, SQLite, FTS5, hnswlib and the
   knowledge graph cost on top of the model).
2. Runs the 300 test queries through ``rag.query`` (k = 100, best chunk per document) for BM25-only, dense-only,
   the default pipeline and the default pipeline with graph expansion: **nDCG@10, Recall@10, Recall@100**.
3. Times each test query again with k = 10 in each mode: **p50/p95 latency** through the control socket, as a
   ratio to ``node.status`` calls on the same socket (the floor of a round trip).
4. **Peak RSS** of the node (``VmHWM``), as a ratio to the RSS of an idle node before ingest.

Prints one summary line per figure. ``--data`` (default ``../shared/data/scifact``, or $VILLAGE_SHARED_DIR)
points at the files; ``--keep DIR`` keeps the node's data dir so ``--reuse DIR`` can rerun step 2-4 without
re-ingesting; ``--limit-queries N`` for quick runs.

    python bench/scifact.py
    python bench/scifact.py --reuse /tmp/scifact-node --limit-queries 50
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import scifact_data

from node.control.client import ControlClient

REPO = Path(__file__).resolve().parent.parent
VILLAGE = [str(Path(sys.executable).parent / "village")]
CONFIG = '[betanet]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\nmdns = false\n'
MODES: dict[str, dict[str, Any]] = {
    "bm25": {"mode": "bm25", "graph": False},
    "dense": {"mode": "dense", "graph": False},
    "default": {},
    "graph": {"graph": True},
}


def ndcg_at(ranked: list[str], relevant: set[str], k: int = 10) -> float:
    dcg = sum(1.0 / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if d in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal if ideal else 0.0


def recall_at(ranked: list[str], relevant: set[str], k: int) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def rss_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class Daemon:
    def __init__(self, data: Path) -> None:
        self.data = data
        notify_path = data.parent / "notify.sock"
        notify_path.unlink(missing_ok=True)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(notify_path))
        self.notify.settimeout(120)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "VILLAGE_DATA_DIR": str(data)}
        if not (data / "identity").exists():
            subprocess.run([*VILLAGE, "init", "--data-dir", str(data)], check=True, capture_output=True)
        self.proc = subprocess.Popen([*VILLAGE, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if self.notify.recv(64) != b"READY=1":
            raise RuntimeError("the node did not start")

    def client(self) -> ControlClient:
        return ControlClient(self.data / "control.sock", timeout_s=None)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.notify.close()


def baseline_embed_rate(sf: scifact_data.SciFact, n_docs: int) -> float:
    """Documents/s of the embedding model alone on the first n_docs documents (same chunking as the node)."""
    from node.rag.chunking import chunk_text
    from node.rag.embed import Embedder, EmbedderSettings
    from node.rag.settings import RagSection

    cfg = RagSection()
    emb = Embedder(EmbedderSettings(intra_op_threads=cfg.embed_threads, batch_size=cfg.embed_batch))
    emb.embed(["warm up"])
    texts = [
        c.text
        for text in list(sf.docs.values())[:n_docs]
        for c in chunk_text(text, chunk_chars=cfg.chunk_chars, overlap_chars=cfg.chunk_overlap_chars)
    ]
    start = time.perf_counter()
    emb.embed(texts)
    return n_docs / (time.perf_counter() - start)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def query_ms(c: ControlClient, text: str, params: dict[str, Any]) -> float:
    start = time.perf_counter()
    c.call("rag.query", text=text, k=10, **params)
    return (time.perf_counter() - start) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="SciFact folder (default: ../shared/data/scifact)")
    ap.add_argument("--keep", type=Path, help="keep the node's data dir here")
    ap.add_argument("--reuse", type=Path, help="reuse a data dir kept with --keep (skips ingest)")
    ap.add_argument("--limit-queries", type=int, default=0, help="only the first N test queries")
    ap.add_argument("--baseline-docs", type=int, default=300, help="documents embedded for the baseline rate")
    ap.add_argument("--modes", default="bm25,dense,default,graph", help="comma-separated: " + ",".join(MODES))
    args = ap.parse_args()

    sf = scifact_data.load(args.data)
    qids = sorted(sf.test_qrels, key=int)
    if args.limit_queries:
        qids = qids[: args.limit_queries]
    work = Path(tempfile.mkdtemp(prefix="scifact-", dir="/tmp"))
    try:
        if args.reuse:
            data = args.reuse
        else:
            data = (args.keep or work / "node").resolve()
            data.mkdir(parents=True, exist_ok=False, mode=0o700)
            (data / "config.toml").write_text(CONFIG)
        corpus = work / "corpus"
        daemon = Daemon(data)
        try:
            idle_rss = rss_kb(daemon.proc.pid, "VmRSS")
            if not args.reuse:
                corpus.mkdir()
                for doc_id, text in sf.docs.items():
                    (corpus / f"{doc_id}.txt").write_text(text)
                with daemon.client() as c:
                    secs, res = timed(lambda: c.call("rag.add", paths=[str(corpus)]))
                rate = res["added"] / secs
                print(f"ingest: {res['added']} docs ({res['chunks']} chunks) in {secs:.1f} s = {rate:.1f} docs/s")
                base = baseline_embed_rate(sf, args.baseline_docs)
                print(
                    f"ingest baseline (model alone, {args.baseline_docs} docs): {base:.1f} docs/s; "
                    f"ingest/baseline = {rate / base:.2f}x"
                )
            with daemon.client() as c:
                stats = c.call("rag.stats")
                print(
                    f"store: {stats['documents']} documents, {stats['chunks']} chunks, "
                    f"dense index {stats['dense_index_size']}, db {stats.get('db_bytes', 0) / 1e6:.1f} MB"
                )
                modes = [m for m in args.modes.split(",") if m]
                for name in modes:
                    params = MODES[name]
                    nd, r10, r100 = [], [], []
                    for q in qids:
                        res = c.call("rag.query", text=sf.queries[q], k=100, **params)
                        ranked = [Path(r["source"]).stem for r in res["results"]]
                        rel = sf.test_qrels[q]
                        nd.append(ndcg_at(ranked, rel))
                        r10.append(recall_at(ranked, rel, 10))
                        r100.append(recall_at(ranked, rel, 100))
                    print(
                        f"quality {name:8}: nDCG@10 {statistics.mean(nd):.4f}  Recall@10 {statistics.mean(r10):.4f}"
                        f"  Recall@100 {statistics.mean(r100):.4f}  ({len(qids)} test queries)"
                    )
                floor = [timed(lambda: c.call("node.status"))[0] * 1000 for _ in range(200)]
                print(f"latency baseline node.status: p50 {pct(floor, 0.5):.2f} ms  p95 {pct(floor, 0.95):.2f} ms")
                for name in modes:
                    params = MODES[name]
                    lat = [query_ms(c, sf.queries[q], params) for q in qids]
                    print(
                        f"latency {name:8}: p50 {pct(lat, 0.5):.1f} ms  p95 {pct(lat, 0.95):.1f} ms  "
                        f"(p50 {pct(lat, 0.5) / pct(floor, 0.5):.0f}x node.status)"
                    )
            peak = rss_kb(daemon.proc.pid, "VmHWM")
            print(
                f"peak RSS of the node: {peak / 1024:.0f} MiB ({peak / max(idle_rss, 1):.1f}x the idle node's "
                f"{idle_rss / 1024:.0f} MiB)"
            )
        finally:
            daemon.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
