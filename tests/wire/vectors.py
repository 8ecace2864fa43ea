"""Loads BitChat's packet vectors from tests/data/ (source and licence in tests/data/README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parents[1] / "data" / "bitchat" / "packet_vectors.json"


def vector(name: str) -> dict[str, Any]:
    for v in json.loads(VECTORS.read_text())["vectors"]:
        if v["name"] == name:
            return dict(v)
    raise KeyError(name)


def all_vector_names() -> list[str]:
    return [v["name"] for v in json.loads(VECTORS.read_text())["vectors"]]
