"""Build node/agents/seed_vectors.npy (+ .json key): the MiniLM vectors of the King's router seeds
(node/agents/seed_requests.txt), shipped so a fresh node's router need not embed ~320 requests at its first
request. Run after changing the seeds or the embedder model; tests/agents/test_router_seeds.py checks they match.

    python scripts/build_seed_vectors.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.agents.router import SEED_VECTORS, SEED_VECTORS_KEY, load_seeds, seeds_digest  # noqa: E402
from node.rag.embed import MODEL_ID, Embedder  # noqa: E402


def main() -> None:
    seeds = load_seeds()
    vecs = Embedder().embed([t for _, t in seeds]).astype(np.float16)
    out = ROOT / "node" / "agents"
    with (out / SEED_VECTORS).open("wb") as f:
        np.save(f, vecs, allow_pickle=False)
    key = {"model": MODEL_ID, "seeds_sha256": seeds_digest(seeds), "count": len(seeds)}
    (out / SEED_VECTORS_KEY).write_text(json.dumps(key, indent=1) + "\n")
    print(f"{len(seeds)} seed vectors ({vecs.nbytes} bytes) -> {out / SEED_VECTORS}")


if __name__ == "__main__":
    main()
