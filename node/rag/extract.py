"""Text from files: plain text, Markdown, HTML (stdlib ``html.parser``) and PDF (``pypdf``).

:func:`extract_file` picks the format from the file suffix (``.txt .text .md .markdown .rst .csv .log .html
.htm .xhtml .pdf``); other suffixes are read as text only when the bytes decode as UTF-8 without NUL bytes.
The title is the Markdown ``# heading``, the HTML ``<title>`` or the PDF's metadata title, else the file name.
Blocking; the ingester runs it in a worker thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from node.rag.errors import ExtractError

TEXT_SUFFIXES = frozenset({".txt", ".text", ".rst", ".csv", ".log", ".tsv", ".json", ".toml", ".yaml", ".yml"})
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
PDF_SUFFIXES = frozenset({".pdf"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | MARKDOWN_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES


@dataclass(frozen=True, slots=True)
class Extracted:
    text: str
    title: str
    mime: str


class _HtmlText(HTMLParser):
    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    _BLOCK = frozenset(
        {
            "p",
            "div",
            "br",
            "li",
            "ul",
            "ol",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "tr",
            "table",
            "section",
            "article",
            "header",
            "footer",
            "pre",
            "blockquote",
            "hr",
            "dd",
            "dt",
            "title",
        }
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self._SKIP:
            self._skip += 1
        if tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self._SKIP and self._skip:
            self._skip -= 1
        if tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif not self._skip:
            self.parts.append(data)


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def html_to_text(html: str) -> tuple[str, str]:
    """(text, title) of an HTML document."""
    p = _HtmlText()
    p.feed(html)
    p.close()
    return _tidy("".join(p.parts)), " ".join("".join(p.title_parts).split())


def markdown_title(text: str) -> str:
    m = re.search(r"^#\s+(.+?)\s*#*\s*$", text, re.MULTILINE)
    return m.group(1) if m else ""


def pdf_to_text(data: bytes, name: str) -> tuple[str, str]:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
        meta = reader.metadata
        title = str(meta.title) if meta is not None and meta.title else ""
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise ExtractError(f"{name}: not a readable PDF ({exc})") from exc
    return _tidy("\n\n".join(pages)), title


def extract_bytes(data: bytes, name: str) -> Extracted:
    """Text of a file's bytes; ``name`` (a path or URI) chooses the format by its suffix."""
    suffix = Path(name).suffix.lower()
    stem = Path(name).name
    if suffix in PDF_SUFFIXES:
        text, title = pdf_to_text(data, name)
        return Extracted(text, title or stem, "application/pdf")
    try:
        decoded = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if suffix in SUPPORTED_SUFFIXES:
            raise ExtractError(f"{name}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        raise ExtractError(f"{name}: unsupported file type (binary)") from exc
    if suffix in HTML_SUFFIXES:
        text, title = html_to_text(decoded)
        return Extracted(text, title or stem, "text/html")
    if suffix in MARKDOWN_SUFFIXES:
        return Extracted(_tidy(decoded), markdown_title(decoded) or stem, "text/markdown")
    if suffix not in TEXT_SUFFIXES and "\x00" in decoded:
        raise ExtractError(f"{name}: unsupported file type (binary)")
    return Extracted(_tidy(decoded), stem, "text/plain")


def extract_file(path: Path, *, max_bytes: int) -> Extracted:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ExtractError(f"{path}: {size} bytes is larger than rag.max_file_bytes ({max_bytes})")
        data = path.read_bytes()
    except OSError as exc:
        raise ExtractError(f"{path}: cannot read ({exc.strerror})") from exc
    return extract_bytes(data, str(path))
