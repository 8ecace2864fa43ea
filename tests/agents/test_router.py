"""The King's router learns which words single an agent out (naive Bayes over the confirmed requests' words)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from node.agents.roster import load_roster
from node.agents.router import Router, RouterSettings

ONLY_BAYES = RouterSettings(
    prototype_weight=0.0, classifier_weight=0.0, lexical_weight=0.0, bayes_weight=1.0, fallback_below=0.0, fit_steps=1
)


def flat(texts: object) -> npt.NDArray[np.float32]:
    """A constant embedding: only the words can tell the agents apart."""
    n = len(texts)  # type: ignore[arg-type]
    v = np.zeros((n, 4), np.float32)
    v[:, 0] = 1.0
    return v


def test_bayes_learns_a_word_from_feedback() -> None:
    router = Router(load_roster(), flat, ONLY_BAYES)
    q = flat(["x"])[0]
    before = router.scores("zorblat the pamphlets", q)[0].agent
    for text in ("zorblat the leaflet", "zorblat this booklet", "please zorblat the manual"):
        router.feedback(text, q, "Gardener")
    after = router.scores("zorblat the pamphlets", q)
    assert before != "Gardener" and after[0].agent == "Gardener"
    assert after[0].score > 2 * after[1].score  # a posterior: the learned word dominates


def test_bayes_prefers_the_agent_whose_words_match() -> None:
    router = Router(load_roster(), flat, ONLY_BAYES)
    q = flat(["x"])[0]
    assert router.scores("quiz me with flashcards", q)[0].agent == "Tutor"
    assert router.scores("vacuum and compact the databases", q)[0].agent == "Gardener"


def test_words_never_seen_leave_the_scores_alone() -> None:
    q = flat(["x"])[0]
    off = Router(load_roster(), flat, RouterSettings(bayes_weight=0.0, fit_steps=1)).scores("xyzzy plugh", q)
    on = Router(load_roster(), flat, RouterSettings(bayes_weight=0.6, fit_steps=1)).scores("xyzzy plugh", q)
    assert sorted(c.agent for c in on) == sorted(load_roster().names)
    assert [(c.agent, round(c.score, 9)) for c in on] == [(c.agent, round(c.score, 9)) for c in off]
