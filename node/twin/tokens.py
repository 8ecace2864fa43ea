"""Tokenization of the twin's language model.

Stated once, used by the prior builder, the personal model and the benchmark:

* text is NFKC-normalised and lowercased; curly apostrophes become ``'``;
* a token is a run of word characters with inner apostrophes (``don't``, ``it's``, ``2018``) or a run of one
  repeated punctuation/symbol character (``...``, ``!!``, ``?``, an emoji);
* a word longer than :data:`MAX_TOKEN_CHARS` is cut to that length (a pasted hash stays one bounded token);
* every message ends with :data:`EOS` (``</s>``), which is predicted like a word; the context of a message's
  first word is ``<s> <s>`` (:data:`BOS`).

Targets for accuracy and surprisal are every token a message produces, ``</s>`` included.
"""

from __future__ import annotations

import re
import unicodedata

BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"
MAX_TOKEN_CHARS = 32  # longer runs are cut: a token's bytes in the model are bounded
MAX_MESSAGE_TOKENS = 512  # a longer text is learned from its first 512 tokens only

_TOKEN = re.compile(r"\w+(?:'\w+)*|([^\w\s])\1*")


def tokenize(text: str) -> list[str]:
    """The tokens of one message, without BOS/EOS."""
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'").replace("\u2018", "'")
    out: list[str] = []
    for m in _TOKEN.finditer(text):
        out.append(m.group(0)[:MAX_TOKEN_CHARS])
        if len(out) >= MAX_MESSAGE_TOKENS:
            break
    return out


def message_tokens(text: str) -> list[str]:
    """The tokens of one message followed by EOS (what the model learns and is scored on)."""
    return [*tokenize(text), EOS]


def is_word(token: str) -> bool:
    """A word (typed letter by letter) rather than punctuation or EOS: keystroke savings count these."""
    return token != EOS and (token[0].isalnum() or token[0] == "_")
