"""docs/BOUNDS.md cannot rot (issue 13 item 3): every ``section.key`` it names is a setting of the schema, every
``path:NAME`` it names is defined in that file, and every "Key" cell of its tables names only those two forms."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from node.settings import all_sections, section_name

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "BOUNDS.md"
TICKED = re.compile(r"`([^`]+)`")
SETTING = re.compile(r"^([a-z_]+)\.([a-z_][a-z0-9_]*)$")
IN_CODE = re.compile(r"^([\w./-]+\.py):([A-Za-z_]\w*)$")


def schema() -> dict[str, set[str]]:
    return {section_name(cls): {f.name for f in dataclasses.fields(cls)} for cls in all_sections()}


def key_cells(text: str) -> list[str]:
    """The last cell of every table row whose header's last column is "Key"."""
    cells: list[str] = []
    in_keyed_table = False
    for line in text.splitlines():
        if not line.startswith("|"):
            in_keyed_table = False
            continue
        row = [c.strip() for c in line.strip().strip("|").split("|")]
        if row[-1] == "Key":
            in_keyed_table = True
        elif in_keyed_table and not set(row[-1]) <= set("-: "):
            cells.append(row[-1])
    return cells


def defined_in(path: Path, name: str) -> bool:
    source = path.read_text()
    return re.search(rf"^\s*(class\s+{name}\b|{name}\s*(:[^=\n]+)?=)", source, re.MULTILINE) is not None


def test_every_key_named_in_the_bounds_doc_exists() -> None:
    text = DOC.read_text()
    sections = schema()
    cells = key_cells(text)
    assert len(cells) >= 35, "the tables were not found"  # mailbox, gateway, MCP, control socket, federated RAG
    problems: list[str] = []
    settings_named = 0
    for cell in cells:
        ticked = TICKED.findall(cell)
        if not ticked:
            problems.append(f"a Key cell names nothing: {cell!r}")
        for token in ticked:
            if not (SETTING.match(token) or IN_CODE.match(token)):
                problems.append(f"{token!r} is neither section.key nor path.py:NAME")
    for token in TICKED.findall(text):  # anywhere on the page, not only in Key cells
        if (m := SETTING.match(token)) and m.group(1) in sections:
            settings_named += 1
            if m.group(2) not in sections[m.group(1)]:
                problems.append(f"{token}: no such key in the [{m.group(1)}] section")
        elif m and not (ROOT / token).exists():  # `node.py`-like file names are not settings
            problems.append(f"{token}: no such settings section")
        elif m := IN_CODE.match(token):
            path = ROOT / m.group(1)
            if not path.is_file():
                problems.append(f"{token}: no file {m.group(1)}")
            elif not defined_in(path, m.group(2)):
                problems.append(f"{token}: {m.group(2)} is not defined in {m.group(1)}")
    assert not problems, "\n".join(problems)
    assert settings_named >= 30


def test_the_check_catches_a_renamed_key(tmp_path: Path) -> None:
    """The checks above fail on a key that is not in the schema or a constant that is not in its file."""
    sections = schema()
    assert "max_request_bytes" in sections["control"] and "max_request_bytez" not in sections["control"]
    assert defined_in(ROOT / "node/mcp/feed.py", "MAX_LISTEN_STREAMS")
    assert not defined_in(ROOT / "node/mcp/feed.py", "MAX_LISTEN_STREAM")
    assert defined_in(ROOT / "anchor/gateway/app.py", "max_event_streams_per_key")  # a dataclass field default
    assert key_cells("| a | Key |\n|---|---|\n| x | `mcp.http_max_sessions` |\n\ntext\n") == ["`mcp.http_max_sessions`"]
