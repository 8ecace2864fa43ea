"""Split a document's text into overlapping chunks on sentence boundaries.

Sentences (ends of ``.!?`` followed by white space, or blank lines) are packed greedily into chunks of at most
``chunk_chars`` characters; each new chunk starts with the last sentences of the previous one, up to
``overlap_chars`` characters, so a passage cut at a boundary is still whole in one chunk. A sentence longer
than ``chunk_chars`` is cut at white space. Pure functions; offsets index the input text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


@dataclass(frozen=True, slots=True)
class Chunk:
    ordinal: int
    text: str
    start_char: int
    end_char: int


def _spans(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Sentence spans (start, end) without surrounding white space, each at most max_chars long."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    out: list[tuple[int, int]] = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        while e - s > max_chars:
            cut = text.rfind(" ", s + max_chars // 2, s + max_chars)
            cut = cut if cut > s else s + max_chars
            out.append((s, cut))
            s = cut
            while s < e and text[s].isspace():
                s += 1
        if e > s:
            out.append((s, e))
    return out


def chunk_text(text: str, *, chunk_chars: int, overlap_chars: int) -> list[Chunk]:
    """Chunks of ``text``; an empty or white-space text gives none."""
    if chunk_chars < 1 or not 0 <= overlap_chars < chunk_chars:
        raise ValueError("need chunk_chars >= 1 and 0 <= overlap_chars < chunk_chars")
    spans = _spans(text, chunk_chars)
    chunks: list[Chunk] = []
    i = 0
    while i < len(spans):
        j = i
        start = spans[i][0]
        while j + 1 < len(spans) and spans[j + 1][1] - start <= chunk_chars:
            j += 1
        end = spans[j][1]
        chunks.append(Chunk(len(chunks), text[start:end], start, end))
        if j + 1 >= len(spans):
            break
        # Step back over trailing sentences that fit in the overlap, but always move forward.
        k = j + 1
        while k - 1 > i and end - spans[k - 1][0] <= overlap_chars:
            k -= 1
        # ...and only as many as leave room for the next new sentence (no chunk of overlap alone).
        while k <= j and spans[j + 1][1] - spans[k][0] > chunk_chars:
            k += 1
        i = k
    return chunks
