"""chitchat-dataset (PyPI 0.9.0, MIT) split for the twin: who builds the prior, who tunes, who is reported.

* **report** senders: UUID starts with c-f and has >= 2,000 words. Never in the prior, never used to tune.
* **dev** senders (tuning): UUID starts with 0, 1 or 2 and has >= 2,000 words. Never in the prior either,
  so tuning on them sees the prior exactly as a c-f sender does.
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
    by_sender: dict[str, list[tuple[str, int, str]]] = {}
    seq = 0
    for conv_id in sorted(data):
        for turn in data[conv_id]["messages"]:
            for utt in turn:
                by_sender.setdefault(utt["sender"], []).append((utt["timestamp"], seq, utt["text"]))
                seq += 1
    return {s: Sender(s, tuple(t for _, _, t in sorted(msgs))) for s, msgs in by_sender.items()}


def is_dev(s: Sender) -> bool:
    return s.uuid.startswith(DEV_PREFIXES) and s.words >= MIN_WORDS


def is_report(s: Sender) -> bool:
    return s.uuid.startswith(REPORT_PREFIXES) and s.words >= MIN_WORDS


def prior_senders(senders: dict[str, Sender]) -> list[Sender]:
    return [s for u, s in sorted(senders.items()) if u.startswith(PRIOR_PREFIXES) and not is_dev(s)]


def dev_senders(senders: dict[str, Sender]) -> list[Sender]:
    return [s for _, s in sorted(senders.items()) if is_dev(s)]


def report_senders(senders: dict[str, Sender]) -> list[Sender]:
    return [s for _, s in sorted(senders.items()) if is_report(s)]
