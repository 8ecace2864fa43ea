"""Small corpora and models for the twin's tests."""

from __future__ import annotations

from node.twin import prior
from node.twin.prior import GlobalPrior
from node.twin.tokens import message_tokens

CORPUS = [
    "hello how are you",
    "i am fine thanks",
    "how are you doing today",
    "i am doing well",
    "what are you doing",
    "hello there",
    "are you there ?",
    "i think so",
    "i am not sure",
    "thanks a lot",
    "how is it going",
    "it is going well",
]


def tiny_prior(
    order: int = 3, min_count: tuple[int, ...] | None = None, corpus: list[str] | None = None
) -> GlobalPrior:
    msgs = [message_tokens(m) for m in (corpus or CORPUS)]
    settings = prior.BuildSettings(order=order, min_word_count=1, max_vocab=1000, min_count=min_count or (1,) * order)
    return GlobalPrior(prior.build(msgs, settings))
