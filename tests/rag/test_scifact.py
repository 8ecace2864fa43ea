"""Retrieval on a slice of SciFact finds the documents the relevance judgments name (skips without ../shared)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from node.rag.service import RagService
from node.rag.settings import RagSection

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import scifact_data

pytestmark = pytest.mark.skipif(
    not (scifact_data.scifact_dir() / "corpus_train.csv").exists(),
    reason=f"SciFact is absent ({scifact_data.scifact_dir()}; set ${scifact_data.ENV_VAR} to the shared folder)",
)
N_QUERIES = 12
N_DISTRACTORS = 150


@pytest.mark.slow
async def test_hybrid_retrieval_finds_the_judged_documents(tmp_path: Path) -> None:
    sf = scifact_data.load()
    qids = sorted(sf.test_qrels, key=int)[:N_QUERIES]
    wanted = set().union(*(sf.test_qrels[q] for q in qids))
    distractors = [d for d in sorted(sf.docs) if d not in wanted][:N_DISTRACTORS]
    for doc_id in [*wanted, *distractors]:
        (tmp_path / f"{doc_id}.txt").write_text(sf.docs[doc_id])
    svc = RagService(RagSection(), tmp_path / "rag")
    added = await svc.add([str(tmp_path)])
    assert added["added"] == len(wanted) + N_DISTRACTORS
    found = {"bm25": 0, "hybrid": 0}
    for q in qids:
        for mode in found:
            hits = await svc.query(sf.queries[q], k=10, mode=mode)
            found[mode] += any(Path(h.source).stem in sf.test_qrels[q] for h in hits)
    await svc.aclose()
    # On this easy slice (a few hundred documents) nearly every query finds a judged document in its top 10.
    assert found["hybrid"] >= N_QUERIES - 1, found
    assert found["hybrid"] >= found["bm25"]
