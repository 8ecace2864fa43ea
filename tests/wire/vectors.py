"""Loads BitChat's packet vectors from ../shared (absent in a user's clone: tests then skip)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bitchat" / "packet_vectors.json"
needs_vectors = pytest.mark.skipif(not VECTORS.exists(), reason="../shared/ is absent (a user's clone has none)")


def vector(name: str) -> dict[str, Any]:
    for v in json.loads(VECTORS.read_text())["vectors"]:
        if v["name"] == name:
            return dict(v)
    raise KeyError(name)


def all_vector_names() -> list[str]:
    if not VECTORS.exists():
        return []
    return [v["name"] for v in json.loads(VECTORS.read_text())["vectors"]]
