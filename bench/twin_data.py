"""chitchat-dataset (PyPI 0.9.0, MIT) split for the twin: who builds the prior, who tunes, who is reported.

* **report** senders: UUID starts with c-f and has >= 2,000 words. Never in the prior, never used to tune.
* **dev** senders (tuning): UUID starts with 0, 1 or 2 and has >= 2,000 words. Their own messages are never in
  the prior either, but their conversations are not excluded as report senders' are: ~10.5 % of the prior's
  training messages come from conversations a dev sender takes part in (their partners' replies), so tuning on
  them sees a prior slightly closer to their topics than a report sender's (tuned figures may be a little
  optimistic against the report ones).
* **prior** senders: every other sender whose UUID starts with 0-b (all their messages).

Each utterance is one message; a sender's messages are ordered by timestamp (ties by conversation order) and
split chronologically 80/20 (first 80 % learned, last 20 % evaluated).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MIN_WORDS = 2_000
DEV_PREFIXES = ("0", "1", "2")
PRIOR_PREFIXES = tuple("0123456789ab")
REPORT_PREFIXES = tuple("cdef")
TRAIN_FRACTION = 0.8


@dataclass(frozen=True, slots=True)
class Sender:
    uuid: str
    messages: tuple[str, ...]  # chronological
    conversations: tuple[str, ...] = ()  # the conversation id of each message (same order)

    @property
    def words(self) -> int:
        return sum(len(m.split()) for m in self.messages)

    def split(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        cut = int(len(self.messages) * TRAIN_FRACTION)
        return self.messages[:cut], self.messages[cut:]


def dataset_path() -> Path:
    import chitchat_dataset  # type: ignore[import-untyped]  # the twin extra; only the bench needs it

    return Path(chitchat_dataset.__file__).with_name("dataset.json")


def load_senders(path: Path | None = None) -> dict[str, Sender]:
    data = json.loads((path or dataset_path()).read_text(encoding="utf-8"))
    by_sender: dict[str, list[tuple[str, int, str, str]]] = {}
    seq = 0
    for conv_id in sorted(data):
        for turn in data[conv_id]["messages"]:
            for utt in turn:
                by_sender.setdefault(utt["sender"], []).append((utt["timestamp"], seq, utt["text"], conv_id))
                seq += 1
    out = {}
    for s, msgs in by_sender.items():
        msgs.sort()
        out[s] = Sender(s, tuple(m[2] for m in msgs), tuple(m[3] for m in msgs))
    return out


def is_dev(s: Sender) -> bool:
    return s.uuid.startswith(DEV_PREFIXES) and s.words >= MIN_WORDS


def is_report(s: Sender) -> bool:
    return s.uuid.startswith(REPORT_PREFIXES) and s.words >= MIN_WORDS


def report_conversations(senders: dict[str, Sender]) -> frozenset[str]:
    """Every conversation in which a report sender takes part (c-f senders too small to report are evaluated
    nowhere, so their partners' text leaks nothing)."""
    return frozenset(c for s in senders.values() if is_report(s) for c in s.conversations)


def prior_senders(senders: dict[str, Sender]) -> list[Sender]:
    """The prior's (and the neural tier's) senders, each without the messages of a conversation a report sender
    takes part in: the other side of a report sender's conversation would put that sender's topics (the
    partner's replies) in the shipped models. A sender left with no message is dropped."""
    leak = report_conversations(senders)
    out = []
    for u, s in sorted(senders.items()):
        if not u.startswith(PRIOR_PREFIXES) or is_dev(s):
            continue
        kept = [(m, c) for m, c in zip(s.messages, s.conversations, strict=True) if c not in leak]
        if kept:
            out.append(Sender(u, tuple(m for m, _ in kept), tuple(c for _, c in kept)))
    return out


def dev_senders(senders: dict[str, Sender]) -> list[Sender]:
    return [s for _, s in sorted(senders.items()) if is_dev(s)]


def report_senders(senders: dict[str, Sender]) -> list[Sender]:
    return [s for _, s in sorted(senders.items()) if is_report(s)]
