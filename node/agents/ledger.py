"""The Banker's ledger of this node's resources, per peer, from the node's real records (sans-IO).

What a peer costs this node and what this node asks of the network, from the stores that hold it:

* ``stored_messages`` / ``stored_bytes``: the peer's messages this node keeps in its inbox (disk it spends);
* ``sent_delivered`` / ``sent_bytes``: our private messages the peer acknowledged (its work for us);
* ``queued`` / ``queued_bytes``: our messages to it still pending in the outbox (the network's work owed);
* ``failed``: ours that failed.

Budgets (:class:`Budgets`, from ``[agents]``) cap what one peer may hold here (``stored_bytes_per_peer``) and
what this node may queue for one peer (``queued_per_peer``); the ledger marks who is over. ``balance_bytes`` =
bytes this node stores for the peer minus bytes the peer accepted from us: positive means we give more than we
take. The node has no per-peer relay counter (relay work is counted in total only), so relay appears as the
node-wide ``relayed`` total, said so in the answer rather than invented per peer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_PEERS_REPORTED = 200


@dataclass(frozen=True, slots=True)
class Budgets:
    stored_bytes_per_peer: int = 1_000_000
    queued_per_peer: int = 64


@dataclass
class Account:
    peer: str
    nickname: str = ""
    stored_messages: int = 0
    stored_bytes: int = 0
    sent_delivered: int = 0
    sent_bytes: int = 0
    queued: int = 0
    queued_bytes: int = 0
    failed: int = 0
    over: list[str] = field(default_factory=list)

    @property
    def balance_bytes(self) -> int:
        return self.stored_bytes - self.sent_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "peer": self.peer,
            "nickname": self.nickname,
            "stored_messages": self.stored_messages,
            "stored_bytes": self.stored_bytes,
            "sent_delivered": self.sent_delivered,
            "sent_bytes": self.sent_bytes,
            "queued": self.queued,
            "queued_bytes": self.queued_bytes,
            "failed": self.failed,
            "balance_bytes": self.balance_bytes,
            "over_budget": list(self.over),
        }


def build_ledger(
    inbox: Iterable[Mapping[str, Any]],
    outbox: Iterable[Mapping[str, Any]],
    budgets: Budgets,
    nicknames: Mapping[str, str] | None = None,
) -> list[Account]:
    """Accounts per peer, the most expensive (stored + queued bytes) first. ``inbox`` rows have ``sender`` and
    ``text`` (private messages only count: public ones are the village's), ``outbox`` rows ``to``, ``state`` and
    ``text``."""
    names = dict(nicknames or {})
    acc: dict[str, Account] = {}

    def get(peer: str) -> Account:
        a = acc.get(peer)
        if a is None:
            a = acc[peer] = Account(peer, names.get(peer, ""))
        return a

    for m in inbox:
        if not m.get("private", True):
            continue
        a = get(str(m["sender"]))
        a.stored_messages += 1
        a.stored_bytes += len(str(m["text"]).encode())
        if not a.nickname and m.get("nickname"):
            a.nickname = str(m["nickname"])
    for m in outbox:
        a = get(str(m["to"]))
        size = len(str(m["text"]).encode())
        if m["state"] == "delivered":
            a.sent_delivered += 1
            a.sent_bytes += size
        elif m["state"] == "pending":
            a.queued += 1
            a.queued_bytes += size
        elif m["state"] == "failed":
            a.failed += 1
    for a in acc.values():
        if a.stored_bytes > budgets.stored_bytes_per_peer:
            a.over.append(f"stores {a.stored_bytes} bytes here, budget {budgets.stored_bytes_per_peer}")
        if a.queued > budgets.queued_per_peer:
            a.over.append(f"{a.queued} of our messages queued for it, budget {budgets.queued_per_peer}")
    out = sorted(acc.values(), key=lambda a: (-(a.stored_bytes + a.queued_bytes), a.peer))
    return out[:MAX_PEERS_REPORTED]
