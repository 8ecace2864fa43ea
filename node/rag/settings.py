"""The ``[rag]`` section: the local knowledge base."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from node.errors import ConfigError
from node.schema import setting


@dataclass(frozen=True, slots=True)
class RagSection:
    SECTION: ClassVar[str] = "rag"

    enabled: bool = setting(True, "Serve the local knowledge base (rag.* control methods, `village rag`).")
    mode: str = setting(
        "hybrid",
        "Retrieval: hybrid (BM25 + MiniLM embeddings, fused), bm25 (SQLite FTS5 only: no model needed, nothing "
        "embedded at ingest) or dense (embeddings only).",
        choices=("hybrid", "bm25", "dense"),
    )
    chunk_chars: int = setting(
        1000, "Largest chunk, in characters (MiniLM reads ~256 word pieces).", min=100, max=100_000
    )
    chunk_overlap_chars: int = setting(
        200, "Characters of the previous chunk repeated at the start of the next.", min=0, max=50_000
    )
    max_file_bytes: int = setting(
        52_428_800, "Files larger than this are refused at ingest, in bytes.", min=1024, max=1 << 34
    )
    embed_threads: int = setting(2, "onnxruntime intra-op threads for the embedding model.", min=1, max=64)
    embed_batch: int = setting(
        8,
        "Most texts embedded per model call (the vectors do not depend on it; see embed_batch_tokens).",
        min=1,
        max=1024,
    )
    embed_batch_tokens: int = setting(
        512,
        "Most padded word pieces per model call (texts x the longest one's; texts are sorted by length so a call "
        "pads little). onnxruntime's working memory grows with batch x length^2: 512 is two 256-piece chunks, "
        "~50 MB of working memory (bench/ingest_peak.py); the vectors do not depend on it.",
        min=256,
        max=1 << 20,
    )
    malloc_trim: bool = setting(
        True,
        "Give the C allocator's free pages back to the system after each group of documents an ingest embeds "
        "and writes (glibc malloc_trim, a few ms per group of ~64 chunks): the model's working memory is freed "
        "after each call but glibc keeps it otherwise. Ignored on other C libraries.",
    )
    candidates: int = setting(100, "Hits taken from each retriever (BM25, dense) before fusion.", min=10, max=10_000)
    fusion: str = setting(
        "convex",
        "How BM25 and dense lists are merged: convex (weighted sum of z-normalised scores, tuned on SciFact "
        "training claims) or rrf (reciprocal-rank fusion, k = 60).",
        choices=("convex", "rrf"),
    )
    dense_weight: float = setting(0.5, "Weight of the dense list in the fusion (BM25 gets 1 - this).", min=0, max=1)
    graph: bool = setting(False, "Expand results through the knowledge graph (personalised PageRank).")
    max_results: int = setting(100, "Most results one query may ask for.", min=1, max=10_000)
    snippet_chars: int = setting(
        240, "Length of the snippet shown with each result, in characters.", min=20, max=10_000
    )
    hnsw_m: int = setting(16, "hnswlib M (graph degree); more: better recall, more memory.", min=4, max=128)
    hnsw_ef_construction: int = setting(200, "hnswlib ef at build time.", min=10, max=4096)
    hnsw_ef_search: int = setting(
        100, "hnswlib ef at query time (raised to the number of candidates).", min=10, max=4096
    )
    trust_half_life_days: float = setting(
        90.0,
        "Trust: feedback about a source weighs half after this many days (exponential forgetting).",
        min=0.01,
        max=36500,
    )

    def __post_init__(self) -> None:
        if self.chunk_overlap_chars >= self.chunk_chars:
            raise ConfigError(f"rag.chunk_overlap_chars: expected less than rag.chunk_chars ({self.chunk_chars})")
