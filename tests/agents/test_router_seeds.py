"""A fresh node's router is seeded with the shipped labelled requests (node/agents/seed_requests.txt): it routes
right from its first request what the roster alone gets wrong, and the held-out routing set stays out of it."""

from __future__ import annotations

import importlib.resources
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import node.agents.router as router_mod
from node.agents.errors import AgentError
from node.agents.roster import load_roster
from node.agents.router import Router, load_seeds, shipped_seed_vectors
from node.rag.embed import MODEL_ID, Embedder

DATA = Path(__file__).resolve().parents[1] / "data"
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import agent_tasks  # noqa: E402

# A request of the tuned-on LLM task set that the roster alone sends to Horticulturist (it names a gardening
# document), and that the seeds' quiz requests teach the router is the Tutor's.
QUIZ = "ask me a quiz question about the compost guide"


def _labelled(path: Path) -> list[tuple[str, str]]:
    return load_seeds(path)


def test_seeds_are_the_labelled_requests_and_never_the_heldout_set() -> None:
    seeds = load_seeds()
    assert seeds == _labelled(DATA / "agent_requests.txt")
    assert len(seeds) == 322
    heldout = _labelled(DATA / "agent_requests_heldout.txt")
    # The held-out set was written apart; three of its requests happen to equal old ones word for word (found in
    # session 4, before its evaluation; bench/agents.py also reports the set without near-duplicates). Nothing
    # else of it may be among the seeds.
    assert len({t.lower() for _, t in heldout} & {t.lower() for _, t in seeds}) == 3
    assert [r for r in heldout if r in set(seeds)] == [
        ("Sage", "what is the boiling point of water at altitude"),
        ("Ensemble", "I want more than one opinion on this answer"),
        ("Medic", "first aid for a broken arm"),
    ]
    assert {a for a, _ in seeds} == set(load_roster().names)


def test_a_bad_seed_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "seeds.txt"
    bad.write_text("# ok\nTutor | quiz me\nno separator here\n")
    with pytest.raises(AgentError, match="line 3"):
        load_seeds(bad)
    bad.write_text("Nobody | quiz me\n")
    with pytest.raises(AgentError, match="Nobody"):
        Router(load_roster(), lambda ts: np.ones((len(ts), 4), np.float32), seeds=load_seeds(bad))


def _forged(path: Path, body: bytes) -> None:
    path.write_bytes(body)


def _npy(a: np.ndarray[Any, Any]) -> bytes:
    b = io.BytesIO()
    np.save(b, a, allow_pickle=True)
    return b.getvalue()


def _npz(a: np.ndarray[Any, Any]) -> bytes:
    b = io.BytesIO()
    np.savez(b, x=a)
    return b.getvalue()


def _huge_header(rows: int) -> bytes:
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + str(rows) + ", 1000000000), }"
    hdr += " " * (63 - (len(hdr) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr.encode()


def test_a_damaged_or_forged_seed_vector_file_is_ignored_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Review llm16 finding 4: strings raised ValueError, an npz AttributeError, a forged header asked for
    1.17 TiB, NaN and complex values were accepted. Each is now refused (the router embeds the seeds itself)."""
    seeds = load_seeds()
    n = len(seeds)
    monkeypatch.setattr(importlib.resources, "files", lambda pkg: tmp_path)
    (tmp_path / router_mod.SEED_VECTORS_KEY).write_text(
        json.dumps({"model": MODEL_ID, "seeds_sha256": router_mod.seeds_digest(seeds), "count": n})
    )
    npy = tmp_path / router_mod.SEED_VECTORS
    _forged(npy, _npy(np.full((n, 384), 0.5, np.float16)))
    good = shipped_seed_vectors(seeds, MODEL_ID)
    assert good is not None and good.dtype == np.float32 and good.shape == (n, 384)
    bad = {
        "strings": _npy(np.array([["abc"] * 384] * n)),
        "nan": _npy(np.full((n, 384), np.nan, np.float32)),
        "complex": _npy(np.ones((n, 384), np.complex64)),
        "big-endian": _npy(np.ones((n, 384), ">f4")),
        "wrong width": _npy(np.ones((n, 3), np.float32)),
        "structured": _npy(np.zeros((n, 384), dtype=[("a", "f4")])),
        "object": _npy(np.array([object()] * 3, dtype=object)),
        "npz": _npz(np.ones((n, 384), np.float32)),
        "huge header": _huge_header(n),
        "truncated": _npy(np.ones((n, 384), np.float32))[:-8],
        "garbage": b"\x00" * 100,
    }
    for name, body in bad.items():
        caplog.clear()
        _forged(npy, body)
        with caplog.at_level(logging.WARNING, logger="village.agents"):
            assert shipped_seed_vectors(seeds, MODEL_ID) is None, name
        assert any(
            "seed_vectors.npy" in r.getMessage() and "embedding the seeds" in r.getMessage() for r in caplog.records
        ), name


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def test_shipped_seed_vectors_are_the_seeds_embedded(embedder: Embedder) -> None:
    seeds = load_seeds()
    shipped = shipped_seed_vectors(seeds, MODEL_ID)
    assert shipped is not None, "rebuild them: python scripts/build_seed_vectors.py"
    fresh = embedder.embed([t for _, t in seeds])
    assert float(np.min(np.sum(shipped * fresh, axis=1))) > 0.99  # unit vectors, float16 on disk
    # other seeds or another embedder model: not used (the router embeds the seeds itself)
    assert shipped_seed_vectors(seeds[:-1], MODEL_ID) is None
    assert shipped_seed_vectors(seeds, "another-model") is None


def test_a_seeded_fresh_router_routes_what_the_roster_alone_gets_wrong(embedder: Embedder) -> None:
    roster = load_roster()
    seeds = load_seeds()
    alone = Router(roster, embedder.embed)
    seeded = Router(roster, embedder.embed, seeds=seeds, seed_vectors=shipped_seed_vectors(seeds, MODEL_ID))
    assert alone.route(QUIZ)[0].agent != "Tutor"
    assert seeded.route(QUIZ)[0].agent == "Tutor"
    assert seeded.feedback_count == 0  # seeds are not feedback: the user's own corrections keep their room


@pytest.mark.slow  # ~5 s on a quiet machine, 30 s on the shared one: the router-level test above is the fast check
@pytest.mark.timeout(300)
async def test_a_fresh_node_routes_the_quiz_to_the_tutor_end_to_end(tmp_path: Path) -> None:
    """The agents service as shipped (no feedback ever given): the request reaches Tutor, which quizzes from
    the compost guide (without the model: a fill-in-the-gap line)."""
    task = {"id": "fresh-quiz", "request": QUIZ, "agent": "Tutor", "cites": "file:///docs/compost.txt"}
    [result] = await agent_tasks.run_tasks(tmp_path, [task])
    assert result.ok, result.failures
