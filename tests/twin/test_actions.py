from __future__ import annotations

import numpy as np

from node.rag.errors import ModelMissing
from node.twin.actions import ActionHead


def test_head_learns_what_follows_what() -> None:
    rng = np.random.default_rng(0)
    head = ActionHead(dim=16, max_actions=8)
    topic = {"rag.query": rng.standard_normal(16), "messages.send": rng.standard_normal(16)}
    # The user always checks the status after sending, and adds documents after querying.
    seq = ["messages.send", "node.status", "rag.query", "rag.add"] * 30
    prev, vec = None, np.zeros(16)
    bits = []
    for a in seq:
        b = head.learn(vec, prev, a)
        if b is not None:
            bits.append(b)
        prev, vec = a, topic.get(a, np.zeros(16))
    assert np.mean(bits[-20:]) < 0.5 < np.mean(bits[:6])
    assert head.predict(topic["messages.send"], "messages.send", 1)[0][0] == "node.status"
    assert head.predict(topic["rag.query"], "rag.query", 1)[0][0] == "rag.add"


def test_head_is_bounded_and_round_trips() -> None:
    head = ActionHead(dim=4, max_actions=3)
    v = np.ones(4)
    for a in ["a", "b", "c", "d", "e"]:
        head.learn(v, None, a)
    assert head.actions == ["a", "b", "c"]
    back = ActionHead(dim=4, max_actions=3)
    back.load_state(head.state())
    assert back.predict(v, "a", 3) == head.predict(v, "a", 3)


def test_engine_next_action_over_the_real_minilm_embeddings() -> None:
    import pytest

    from node.rag.embed import Embedder, model_files
    from node.twin.engine import Event, TwinEngine
    from node.twin.prior import GlobalPrior

    try:
        model_files()
    except ModelMissing:  # the model package is part of the node's dependencies; absent only in odd installs
        pytest.skip("MiniLM model not installed")
    eng = TwinEngine(GlobalPrior.load_packaged(), embed=Embedder().embed)
    # This user adds a document after every question about cooking, and sends a message after any other.
    for i in range(12):
        eng.observe(Event("query", f"how long to bake bread number {i}", "rag.query", i))
        eng.observe(Event("document", f"bread recipe {i}", "rag.add", i))
        eng.observe(Event("query", f"when does the train to paris leave {i}", "rag.query", i))
        eng.observe(Event("message", "on my way", "messages.send", i))
    eng.observe(Event("query", "how long should sourdough rise", "rag.query", 99))
    assert eng.next_actions(1)[0]["action"] == "rag.add"
    eng.observe(Event("document", "sourdough", "rag.add", 99))
    eng.observe(Event("query", "next train to lyon", "rag.query", 100))
    assert eng.next_actions(1)[0]["action"] == "messages.send"
