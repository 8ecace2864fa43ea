"""Text extraction per format, and chunking with overlap."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from node.rag.chunking import chunk_text
from node.rag.errors import ExtractError
from node.rag.extract import extract_bytes, extract_file

from .helpers import make_pdf


def test_plain_text_and_markdown(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("  Hello\t\tworld.  \n\n\n\nSecond   paragraph.")
    e = extract_file(tmp_path / "a.txt", max_bytes=1 << 20)
    assert (e.text, e.title, e.mime) == ("Hello world.\n\nSecond paragraph.", "a.txt", "text/plain")
    (tmp_path / "n.md").write_text("Intro line\n\n# Project *Notes*\n\nBody text.\n")
    e = extract_file(tmp_path / "n.md", max_bytes=1 << 20)
    assert e.title == "Project *Notes*" and "Body text." in e.text and e.mime == "text/markdown"


def test_html_drops_scripts_and_styles_and_keeps_the_title() -> None:
    html = (
        "<html><head><title> The  Title </title><style>p{color:red}</style></head><body>"
        "<script>var secret = 1;</script><h1>Heading</h1><p>First &amp; second.</p><ul><li>item one</li>"
        "<li>item two</li></ul></body></html>"
    )
    e = extract_bytes(html.encode(), "page.html")
    assert e.title == "The Title" and e.mime == "text/html"
    assert "secret" not in e.text and "color" not in e.text
    assert e.text.split("\n\n") == ["Heading", "First & second.", "item one", "item two"]


def test_pdf_text_and_metadata_title() -> None:
    e = extract_bytes(make_pdf("Mitochondria are the powerhouse of the cell", title="Cell biology"), "doc.pdf")
    assert "Mitochondria are the powerhouse of the cell" in e.text
    assert e.title == "Cell biology" and e.mime == "application/pdf"


def test_bad_inputs_raise_extract_error(tmp_path: Path) -> None:
    with pytest.raises(ExtractError, match="not a readable PDF"):
        extract_bytes(b"%PDF-1.4 garbage", "broken.pdf")
    with pytest.raises(ExtractError, match="not valid UTF-8"):
        extract_bytes(b"\xff\xfe\x00bad", "x.txt")
    with pytest.raises(ExtractError, match="unsupported file type"):
        extract_bytes(b"\x00\x01\x02\xff", "blob.bin")
    (tmp_path / "big.txt").write_text("x" * 2000)
    with pytest.raises(ExtractError, match=r"larger than rag\.max_file_bytes"):
        extract_file(tmp_path / "big.txt", max_bytes=1024)
    with pytest.raises(ExtractError, match="cannot read"):
        extract_file(tmp_path / "missing.txt", max_bytes=1024)


def test_chunks_overlap_on_sentence_boundaries_and_cover_the_text() -> None:
    sentences = [f"Sentence number {i} says something about topic {i}." for i in range(40)]
    text = " ".join(sentences)
    chunks = chunk_text(text, chunk_chars=200, overlap_chars=60)
    assert len(chunks) > 5
    for c in chunks:
        assert len(c.text) <= 200 and text[c.start_char : c.end_char] == c.text
        assert c.text.startswith("Sentence") and c.text.endswith(".")  # whole sentences
    for a, b in itertools.pairwise(chunks):
        assert b.start_char < a.end_char  # overlap...
        assert b.end_char > a.end_char  # ...and progress
    assert chunks[0].start_char == 0 and chunks[-1].end_char == len(text)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_a_sentence_longer_than_a_chunk_is_cut_at_spaces() -> None:
    text = " ".join(["word"] * 100)  # 499 characters, no sentence end
    chunks = chunk_text(text, chunk_chars=100, overlap_chars=0)
    assert all(len(c.text) <= 100 for c in chunks)
    assert " ".join(c.text for c in chunks).split() == text.split()
    assert chunk_text("   \n ", chunk_chars=100, overlap_chars=10) == []
