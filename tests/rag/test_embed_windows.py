"""A large document is tokenised and planned a window at a time (review ingest2_sim10k #1): the tokenizer's
memory stays flat as the document grows, the model limiter is released between windows (a query gets in), each
chunk is tokenised twice (its window's plan, its model call), and every stored vector is the chunk's own
vector, bit for bit, whatever the sorting and grouping did (#4)."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

from node.rag.embed import COUNT_WINDOW, PLAN_WINDOW_CALLS, Embedder, EmbedderSettings, Vectors, from_blob
from node.rag.service import RagService
from node.rag.settings import RagSection

from .helpers import HashEmbedder


class CountingTokenizer:
    """Wraps the real tokenizer: how many texts each encode_batch call was given."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[int] = []

    def encode_batch(self, texts: list[str]) -> Any:
        self.calls.append(len(texts))
        return self.inner.encode_batch(texts)


def _sentences(n: int, *, words: int = 12) -> list[str]:
    return [" ".join(f"sediment{i} layer{j}" for j in range(words)) + "." for i in range(n)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model")


def test_token_counts_tokenise_a_bounded_window_at_a_time(cache: Path) -> None:
    e = Embedder(EmbedderSettings(intra_op_threads=1, cache_dir=cache))
    e.load()
    texts = _sentences(COUNT_WINDOW * 2 + 50, words=3)
    alone = [e.token_counts([t])[0] for t in texts[:20]]
    tok = CountingTokenizer(e._tokenizer)
    e._tokenizer = tok
    counts = e.token_counts(texts)
    assert counts[:20] == alone and len(counts) == len(texts)
    assert tok.calls == [COUNT_WINDOW, COUNT_WINDOW, 50]  # never the whole list in one call


PEAK_CHILD = textwrap.dedent(
    """
    import sys
    from node.rag.embed import Embedder, EmbedderSettings

    def hwm_kib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1])

    # ~1,000-character chunks (256 word pieces once truncated), distinct words so nothing is shared.
    def chunks(n, tag):
        return [" ".join(f"{tag}{i} stratum{j} basalt" for j in range(60))[:1000] for i in range(n)]

    e = Embedder(EmbedderSettings(intra_op_threads=1))
    e.load()
    e.plan(chunks(20, "warm"))
    small_doc, large_doc = chunks(int(sys.argv[1]), "small"), chunks(int(sys.argv[2]), "large")
    base = hwm_kib()
    e.plan(small_doc)
    small = hwm_kib()
    e.plan(large_doc)
    large = hwm_kib()
    print(small - base, large - small)
    """
)


def test_planning_a_growing_document_keeps_the_peak_flat(tmp_path: Path) -> None:
    """Planning 2,400 chunks peaks no higher than planning 400 (one encoding batch of them all held ~29 KiB per
    chunk: +60 MB here, linear in the document). Measured in a child process: its peak RSS (VmHWM) is its own."""
    script = tmp_path / "peak.py"
    script.write_text(PEAK_CHILD)
    r = subprocess.run(
        [sys.executable, str(script), "400", "2400"], capture_output=True, text=True, timeout=120, check=False
    )
    assert r.returncode == 0, r.stderr[-2000:]
    small_kib, more_kib = map(int, r.stdout.split())
    assert small_kib < 32 * 1024, small_kib  # about one window's encodings (~11 MB)
    assert more_kib < 16 * 1024, (small_kib, more_kib)  # six times the chunks: the peak does not move


async def test_a_large_document_is_planned_per_window_and_tokenised_twice(cache: Path) -> None:
    """The real model: every chunk goes through the tokenizer twice (its window's plan, its model call), never a
    third time, no tokenizer call sees more than a window, and there is one plan per window."""
    settings = dataclasses.replace(RagSection(), mode="hybrid", embed_batch=4, chunk_chars=200, chunk_overlap_chars=0)
    window = settings.embed_batch * PLAN_WINDOW_CALLS
    embedder = Embedder(EmbedderSettings(intra_op_threads=1, batch_size=4, cache_dir=cache))
    embedder.load()
    tok = CountingTokenizer(embedder._tokenizer)
    embedder._tokenizer = tok
    plans: list[int] = []
    plan = embedder.plan

    def spy_plan(texts: Sequence[str], **kw: Any) -> list[list[int]]:
        plans.append(len(texts))
        return plan(texts, **kw)

    embedder.plan = spy_plan  # type: ignore[method-assign]
    svc = RagService(settings, None, embedder=embedder)
    r = await svc.add_text("/long.txt", " ".join(_sentences(150, words=6)))
    await svc.aclose()
    chunks = r["chunks"]
    assert chunks > 2 * window  # at least three windows
    assert plans == [min(window, chunks - s) for s in range(0, chunks, window)]
    assert sum(tok.calls) == 2 * chunks  # the plan's count, the model call's; no third pass
    assert max(tok.calls) <= window


async def test_a_query_is_embedded_between_the_windows_of_a_large_document() -> None:
    """The model limiter is taken per plan and per call: a query queued while the first window is being planned
    is embedded before the next window's plan, not after the whole document's."""
    settings = dataclasses.replace(RagSection(), mode="hybrid", embed_batch=2)
    window = settings.embed_batch * PLAN_WINDOW_CALLS
    planning, go = threading.Event(), threading.Event()
    log: list[tuple[str, int]] = []

    class Spy(HashEmbedder):
        def plan(self, texts: Sequence[str], **kw: Any) -> list[list[int]]:
            log.append(("plan", len(texts)))
            planning.set()
            go.wait(timeout=30)
            return super().plan(texts, **kw)

        def embed_group(self, texts: Sequence[str]) -> Vectors:
            log.append(("query" if list(texts) == ["query"] else "call", len(texts)))
            return super().embed_group(texts)

    svc = RagService(settings, None, embedder=Spy())
    doc = _sentences(3 * window)
    out: dict[str, Vectors] = {}

    async def embed(name: str, texts: list[str]) -> None:
        out[name] = await svc._embed(texts)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(embed, "doc", doc)
            await trio.to_thread.run_sync(planning.wait, 30)
            nursery.start_soon(embed, "query", ["query"])
            await trio.testing.wait_all_tasks_blocked()  # the query now waits for the limiter
            go.set()
    plans = [n for kind, n in log if kind == "plan"]
    assert plans == [window] * 3
    q = log.index(("query", 1))
    assert q == 1  # right after the first window's plan, before any other step of the document
    assert out["doc"].shape == (len(doc), 384) and np.array_equal(out["doc"], Spy().embed_group(doc))


async def test_every_stored_vector_is_its_chunks_own(tmp_path: Path) -> None:
    """A document of mixed-length chunks goes through the sorted, grouped calls; each chunk's stored vector equals,
    bit for bit, the model's vector of that chunk alone (the sort was undone exactly)."""
    settings = dataclasses.replace(
        RagSection(), mode="hybrid", embed_batch=4, embed_batch_tokens=256, chunk_chars=400, chunk_overlap_chars=0
    )
    svc = RagService(settings, tmp_path / "rag", embedder=Embedder(EmbedderSettings(intra_op_threads=1)))
    paragraphs = []
    for i in range(14):  # lengths cycle long, short, medium: the plan must reorder them
        words = (60, 4, 25)[i % 3]
        paragraphs.append(" ".join(f"delta{i} silt{j}" for j in range(words // 2)) + f" Note {i}.")
    r = await svc.add_text("/mixed.txt", "\n\n".join(paragraphs))
    store = svc._store
    assert store is not None
    stored = {cid: from_blob(blob) for batch in store.embeddings() for cid, blob in batch}
    texts = {cid: row.text for cid, row in store.chunks(list(stored)).items()}
    await svc.aclose()
    assert len(stored) == len(texts) == r["chunks"] >= 10
    ids = sorted(texts)
    counts = svc.embedder.token_counts([texts[c] for c in ids])
    assert counts != sorted(counts) and len(set(counts)) > 3  # mixed lengths, out of order
    for cid in ids:
        alone = svc.embedder.embed([texts[cid]])[0]
        assert np.array_equal(stored[cid], alone), cid
    assert math.isclose(float(np.linalg.norm(stored[ids[0]])), 1.0, rel_tol=1e-5)
