"""Request text is untrusted (gateway keys, remote peers): every handler regex over it runs in linear time.

Each input below is one that took seconds to minutes on the former patterns (nested ``\\s*``/``\\s+`` pairs,
``.*?`` per keyword, a number tried from every digit of a run); the generous per-test timeout only catches that
super-linear behaviour, it is not a speed assertion."""

from __future__ import annotations

import contextlib
import re

import pytest

from node.agents import king, roles, workers
from node.agents.errors import AgentError
from node.agents.king import plan
from node.agents.roles import _PROPOSE, parse_delivery
from node.twin import ask as twin_ask
from node.twin import personal_context
from node.twin.personal_context import _SEND_TO

SPACES = "a" + " " * 3998 + "b"  # within the King's 4,000-character request bound


@pytest.mark.timeout(10)
def test_king_plan_is_linear_on_whitespace_runs() -> None:
    assert plan(SPACES) == [["a" + " " * 3998 + "b"]]
    assert plan(" \t\n" * 1333) == []
    assert plan("find seeds and then tell bob; list peers") == [["find seeds"], ["tell bob", "list peers"]]


@pytest.mark.timeout(10)
def test_strategist_clauses_are_linear_and_unchanged() -> None:
    goal = workers._SPACES.sub(" ", SPACES)
    assert [c for c in workers._CLAUSES.split(goal) if c.strip()] == ["a b"]
    text = "index the docs, and then back up the model; check peers and report. Done"
    parts = [c.strip() for c in workers._CLAUSES.split(text) if c.strip()]
    assert parts == ["index the docs", "back up the model", "check peers", "report", "Done"]
    # the Strategist bounds its goal: it only ever splits MAX_GOAL_CHARS of collapsed text
    assert workers.MAX_GOAL_CHARS <= 4000


@pytest.mark.timeout(10)
def test_merchant_amounts_are_linear_on_digit_runs() -> None:
    assert workers._AMOUNT.findall("1" * 20000 + "x") == []
    assert workers._AMOUNT.findall("offer 10 MB storage to bob for 500 relay frames") == [
        ("10", "MB"),
        ("500", "relay frames"),
    ]
    assert workers._AMOUNT.findall("1.5 GB for 2 credits") == [("1.5", "GB"), ("2", "credits")]


@pytest.mark.timeout(10)
def test_merchant_accept_is_linear_on_repeated_keywords() -> None:
    low = "accept " * 10000
    a = workers._ACCEPT.search(low)
    assert a is not None and workers._OFFER_ID.search(low, a.end()) is None
    low = "please accept the offer 3f9a2c now"
    a = workers._ACCEPT.search(low)
    m = workers._OFFER_ID.search(low, a.end()) if a else None
    assert m is not None and m.group(1) == "3f9a2c"


@pytest.mark.timeout(10)
def test_shaman_propose_is_linear_on_underscore_runs() -> None:
    assert _PROPOSE.search("propose " + "a_" * 20000) is None
    m = _PROPOSE.search("propose the policy share_health = false")
    assert m is not None and m.group("key") == "share_health" and m.group("value") == "false"
    m = _PROPOSE.search("propose setting mesh.max_hops to 5")
    assert m is not None and m.group("key") == "mesh.max_hops"


@pytest.mark.timeout(10)
def test_twin_send_to_and_delivery_are_linear_on_whitespace_runs() -> None:
    assert _SEND_TO.match("send x" + " " * 60000 + "y") is None
    m = _SEND_TO.match("send the seed list   to bob.")
    assert m is not None and m.group("body") == "the seed list" and m.group("to") == "bob"
    assert parse_delivery("tell" + " " * 60000 + "x: y") is not None


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "text",
    [
        "1" * 4000,
        SPACES,
        "send x" + " to" * 1330,
        "tell " + "a " * 1995,
        "then " * 800,
        "1." * 2000,
        "accept " * 570,
        " , " * 1333,
        " and" * 1000,
        "propose " + "a_" * 1995,
    ],
)
def test_every_handler_pattern_survives_hostile_text(text: str) -> None:
    modules = (workers, king, roles, personal_context, twin_ask)
    patterns = [v for m in modules for v in vars(m).values() if isinstance(v, re.Pattern)]
    assert len(patterns) >= 15
    for rx in patterns:
        rx.findall(text)
    with contextlib.suppress(AgentError):
        plan(text)  # at most MAX_STEPS steps: the King refuses longer plans, never hangs


@pytest.mark.timeout(10)
def test_translation_request_is_parsed_and_linear() -> None:
    t = roles.translation_request
    assert t("translate good morning into french") == ("good morning", "French")
    assert t("how do you say goodbye in spanish?") == ("goodbye", "Spanish")
    assert t('what is "friend" in spanish') == ("friend", "Spanish")
    assert t("translate this to french: the market is closed") == ("the market is closed", "French")
    assert t("what does gracias mean") is None  # no target language: the plain prompt
    assert t("go to school in town") is None  # "to"/"in" followed by no language
    assert t("Please TRANSLATE Good Morning Into French") == ("Good Morning", "French")
    # Review (cleanup_agents 6): positions found in request.lower() cut the request: "İ" lowers to two code points,
    # so this gave ('İİİİİİ translate hello into f', 'French').
    assert t("İİİİİİ translate hello into french") == ("İİİİİİ translate hello", "French")
    assert t("translate İstanbul into turkish") == ("İstanbul", "Turkish")
    for text in (SPACES, " into" * 1000, "to french" * 440, "translate " * 400):
        t(text)


@pytest.mark.timeout(10)
def test_polyglot_takes_the_translation_out_of_a_parallel_text_answer() -> None:
    """Polyglot's worked exchanges answer "English: X" / "Language: Y": the user gets Y, whatever the model wrote."""
    t = roles._translation
    assert t("English: house\nGerman: Haus", "German") == "Haus"
    assert t(" English: friend\nSpanish: amigo\nEnglish: dog", "Spanish") == "amigo"
    assert t("Haus", "German") == "Haus"  # a chat model answering the translation only
    assert t("English: house\nHaus", "German") == "Haus"
    assert t("German:\nEnglish: house", "German") == "German:"  # nothing after the label: the answer as it is
    assert t("", "German") == ""
    t(("English: x\n" * 5000) + "German: " + "y" * 10_000, "German")  # linear, bounded by the model's answer
