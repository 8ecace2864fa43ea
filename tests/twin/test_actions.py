from __future__ import annotations

import numpy as np

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
