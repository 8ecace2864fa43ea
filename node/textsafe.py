"""Remote-controlled text made safe for a terminal.

Nicknames, peer IDs, message texts and document names come from other peers. Printed raw, an ``ESC [ 2 J`` clears
the user's screen, an OSC sequence retitles the window or plants a hyperlink, a carriage return or a backspace
overwrites what was printed before it, and a right-to-left override (U+202E) makes ``gnp.exe`` read as ``exe.png``.
:func:`safe_text` turns every such character into a visible escape, so what the user sees is what the peer sent:

* C0 controls (U+0000-U+001F, including TAB, CR and LF: one value stays on one line), DEL and the C1 controls
  (U+0080-U+009F, which include the 8-bit CSI U+009B) → ``\\xNN``;
* bidi overrides, embeddings and isolates (U+202A-U+202E, U+2066-U+2069), the marks U+200E/U+200F/U+061C, and
  the line/paragraph separators U+2028/U+2029 → ``\\uNNNN``;
* lone surrogates (U+D800-U+DFFF, which no UTF-8 output can carry) → ``\\uNNNN``;
* a backslash → ``\\\\`` (so an escape in the output always means the peer sent that character, never the text).

An ESC sequence is thus printed as text (``\\x1b[2J``), never interpreted. Everything else (letters of every script,
emoji) passes through. :func:`safe_json` makes JSON text from ``json.dumps(..., ensure_ascii=False)`` safe the same
way while keeping it valid JSON with the same values (``\\u`` escapes). :mod:`node.logs` does it to every log line
``village run`` writes (a peer's nickname, a reason an anchor sent, a URL path a client asked for).

Imports: ``re`` only (the CLI's fast path prints through it).
"""

from __future__ import annotations

import re

# Bidi embeddings/overrides (LRE RLE PDF LRO RLO), isolates (LRI RLI FSI PDI), marks (LRM RLM ALM) and the line and
# paragraph separators (which some terminals treat as new lines).
_BIDI = "\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c\u2028\u2029"
_SURROGATES = "\ud800-\udfff"
_UNSAFE = re.compile(f"[\\\\\x00-\x1f\x7f-\x9f{_BIDI}{_SURROGATES}]")
# In JSON text, C0 controls, backslashes and quotes are already escaped; the rest of the unsafe set is not.
_UNSAFE_IN_JSON = re.compile(f"[\x7f-\x9f{_BIDI}{_SURROGATES}]")


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch == "\\":
        return "\\\\"
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe_text(value: object) -> str:
    """``str(value)`` with control characters, escape sequences and bidi controls shown as visible escapes."""
    return _UNSAFE.sub(_escape, str(value))


def safe_json(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with DEL, C1 and bidi controls as ``\\uNNNN``."""
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def has_lone_surrogate(value: object) -> bool:
    """Whether a value decoded from JSON holds a lone surrogate (``"\\ud800"`` parses, but no UTF-8 can carry it) in
    any string, key or nested item."""
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE_RE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


_SURROGATE_RE = re.compile(f"[{_SURROGATES}]")


def without_lone_surrogates(text: str) -> str:
    """``text`` with each lone surrogate (U+D800-U+DFFF: a JSON ``"\\ud83d"`` cut mid-emoji, a file name decoded
    with ``surrogateescape``) replaced by U+FFFD, so it encodes to UTF-8. Text without one is returned as is."""
    return text if text.isascii() else _SURROGATE_RE.sub("\ufffd", text)


def nested_deeper_than(value: object, limit: int) -> bool:
    """Whether a value decoded from JSON nests lists/objects more than ``limit`` levels deep (a scalar is level 0,
    ``[1]`` level 1). Iterative, so any depth is measured without recursion."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth + 1 > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False
