"""How the twin's personal context changes a request — a pure function, no I/O (sans-IO like the routing rules).

The context is what :meth:`node.twin.engine.TwinEngine.context` knows of the user, all learned on this node:
frequent contacts (peer IDs the user sent private messages to), recent topics (titles of documents they added) and
frequent words. Two uses, each visible in the outcome:

* **Recipient**: a private-send request whose recipient is ambiguous (two peers announce the same nickname) or is
  said in the twin's own short form ``send <text> to <name>`` resolves to the user's most frequent contact among
  the peers that name matches, by the routing layer's unshadowable rules (:mod:`node.routing.names`). The
  request is rewritten into the Coordinator's explicit form ``tell <peer ID>: <text>``; the body is untouched.
  A peer the user never wrote to is never chosen this way.
* **Topic**: an underspecified knowledge question ("how long does it keep?") gets the most recent topic added to
  the *local* knowledge-base query (:func:`expand_query`). Only the direct-tool path uses it, and only for a local
  query; a request handed to the agents never carries topics (an agent may one day dispatch it to another node).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from node.agents.roles import parse_delivery
from node.routing.names import PEER_ID_HEX, resolve_peer_view

# The twin's own short form of a private send: "send <body> to <recipient>" (one token, at the very end).
_SEND_TO = re.compile(r"^(?:please\s+)?send\s+(?P<body>\S.*?)(?<!\s)\s+to\s+(?P<to>[^\s:,]+?)[.!]?$", re.I | re.S)
_PRONOUN = re.compile(r"\b(it|this|that|these|those|them|they)\b", re.I)
MAX_VAGUE_WORDS = 8  # a question this short with a pronoun is "underspecified"
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Personalized:
    text: str  # the request as handed on
    recipient: dict[str, str] | None = None  # {"ref": what the user said, "peer_id": the contact chosen}


def contact_ids(context: Mapping[str, Any]) -> list[str]:
    """The frequent contacts that are peer IDs, most frequent first (older states may hold other strings)."""
    out = []
    for c in context.get("contacts", []):
        c = str(c).lower()
        if len(c) == PEER_ID_HEX and set(c) <= _HEX:
            out.append(c)
    return out


def personalize(text: str, context: Mapping[str, Any], peers: Sequence[Mapping[str, Any]]) -> Personalized:
    """The request with its recipient resolved through the user's frequent contacts, when that decides it."""
    contacts = contact_ids(context)
    if not contacts:
        return Personalized(text)
    parsed = parse_delivery(text)
    if parsed is not None:
        kind, ref, body = parsed
        if kind != "send" or ref is None:
            return Personalized(text)
        if len(resolve_peer_view(ref, peers)) == 1:
            return Personalized(text)  # the name decides by itself: nothing personal needed
    else:
        m = _SEND_TO.match(text.strip())
        if m is None:
            return Personalized(text)
        ref, body = m.group("to"), m.group("body").strip()
    chosen = _frequent_match(ref, contacts, peers)
    if chosen is None:
        return Personalized(text)
    rewritten = f"tell {chosen}: {body}"
    if parse_delivery(rewritten) != ("send", chosen, body):
        return Personalized(text)  # a body the explicit form would read differently: leave the request alone
    return Personalized(rewritten, {"ref": ref, "peer_id": chosen})


def _frequent_match(ref: str, contacts: Sequence[str], peers: Sequence[Mapping[str, Any]]) -> str | None:
    candidates = {str(p["peer_id"]).lower() for p in resolve_peer_view(ref, peers)}
    for c in contacts:  # most frequent first
        if c in candidates:
            return c
    return None


def expand_query(text: str, context: Mapping[str, Any]) -> tuple[str, str | None]:
    """(the local query, the topic added or None): a short question that only points ("it", "this") at something
    gets the most recent topic of the user's documents."""
    topics = [str(t) for t in context.get("recent_topics", []) if str(t).strip()]
    if not topics or len(text.split()) > MAX_VAGUE_WORDS or not _PRONOUN.search(text):
        return text, None
    topic = topics[-1]
    return f"{text} {topic}", topic
