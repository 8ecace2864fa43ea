"""Shared helpers for the rag tests: a hand-built PDF, an embedder stand-in that refuses to run and a
deterministic hashing one."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from node.rag.embed import Embedder, Vectors


def make_pdf(text: str, *, title: str = "") -> bytes:
    """A minimal one-page PDF (PDF 1.4, Helvetica) showing ``text``, built byte by byte with a correct xref."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Title (" + title.encode("latin-1") + b") >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


class NoEmbedder(Embedder):
    """Fails the test if anything asks for a vector (BM25-only mode must never load the model)."""

    def load(self) -> None:
        raise AssertionError("the embedding model was loaded in bm25 mode")

    def embed(self, texts: Sequence[str]) -> Vectors:
        raise AssertionError(f"the embedder was called in bm25 mode with {len(texts)} texts")

    def embed_group(self, texts: Sequence[str]) -> Vectors:
        raise AssertionError(f"the embedder was called in bm25 mode with {len(texts)} texts")


class HashEmbedder(Embedder):
    """Deterministic bag-of-words vectors (hashed tokens, L2-normalised): exercises the dense path without the
    model; what the tests check is which vectors are stored and searched, not their quality. ``embed_group`` is
    one model call: a spy overrides it to see the calls the service makes."""

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return [min(len(t.split()) + 2, self.settings.max_tokens) for t in texts]

    def embed_group(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for i, t in enumerate(texts):
            for tok in t.lower().split():
                out[i, int.from_bytes(hashlib.sha256(tok.encode()).digest()[:4], "big") % 384] += 1.0
            out[i] /= max(float(np.linalg.norm(out[i])), 1e-9)
        return out
