"""`village rag query --mesh` between two real daemons over BetaNet on 127.0.0.1: the asking node gets the other
node's shared document, named by origin peer; the other node's unshared document never comes back."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_multiprocess import WAIT, Daemon, free_port, root

__all__ = ["root"]  # the fixture

BM25_ONLY = '[rag]\nmode = "bm25"\n'  # no embedding model needed


def test_mesh_query_between_two_daemons(root: Path) -> None:
    alice = Daemon(root, "alice", f"/ip4/127.0.0.1/tcp/{free_port()}", extra_config=BM25_ONLY)
    bob = Daemon(root, "bob", "/ip4/127.0.0.1/tcp/0", extra_config=BM25_ONLY)
    docs = root / "docs"
    docs.mkdir()
    (docs / "public.txt").write_text("Metformin lowers blood glucose through AMPK activation in the liver.\n")
    (docs / "private.txt").write_text("SECRET-4411 metformin glucose notes from my own lab book.\n")
    try:
        alice.start()
        alice_status = alice.status()
        alice_id, addrs = alice_status["peer_id"], alice_status["listen_addrs"]
        assert isinstance(alice_id, str) and isinstance(addrs, list)
        bob.bootstrap = [addrs[0]]
        bob.start()
        bob.cli("peers", "--wait", alice_id, "--timeout", WAIT)
        alice.cli("rag", "add", str(docs / "public.txt"), "--shared")
        alice.cli("rag", "add", str(docs / "private.txt"))
        (docs / "mine.txt").write_text("Bob's own note: metformin and glucose in mice.\n")
        bob.cli("rag", "add", str(docs / "mine.txt"))

        out = json.loads(bob.cli("rag", "query", "metformin", "glucose", "--mesh", "--json").stdout)
        results = {r["source"]: r for r in out["results"]}
        assert set(results) == {str(docs / "public.txt"), str(docs / "mine.txt")}
        assert results[str(docs / "public.txt")]["origin_peer"] == alice_id
        assert results[str(docs / "public.txt")]["nickname"] == "alice"
        assert results[str(docs / "mine.txt")]["origin"] == "local"
        assert [(p["peer_id"], p["status"]) for p in out["peers"]] == [(alice_id, "ok")]
        assert "SECRET-4411" not in json.dumps(out)
        human = bob.cli("rag", "query", "metformin", "--mesh").stdout
        assert f"from peer {alice_id}" in human and f"peer {alice_id} (alice): ok" in human
    finally:
        for d in (alice, bob):
            d.stop()
