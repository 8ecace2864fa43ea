"""A real process killed with SIGKILL in the middle of `add` leaves a consistent store, and `add` resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from node.rag.service import RagService
from node.rag.settings import RagSection
from node.rag.store import Store

N_DOCS = 150
KILL_AFTER = 20  # documents written before the kill

CHILD = """
import sys, trio
from pathlib import Path
from node.rag.settings import RagSection
from node.rag.service import RagService

async def main() -> None:
    svc = RagService(RagSection(embed_batch=8), Path(sys.argv[1]))
    async def progress(e: dict) -> None:
        print(e["done"], e["status"], flush=True)
    await svc.add([sys.argv[2]], progress=progress)
    print("finished", flush=True)

trio.run(main)
"""


def _docs(root: Path) -> Path:
    docs = root / "docs"
    docs.mkdir()
    for i in range(N_DOCS):
        (docs / f"doc{i:04}.txt").write_text(
            f"Document {i} talks about subject{i} and widget{i % 17}. " * 3 + f"Unique marker zq{i}x."
        )
    return docs


def _check_consistent(db: Path) -> int:
    store = Store(db)
    try:
        bad = store.conn.execute(
            "SELECT d.id FROM documents d LEFT JOIN chunks c ON c.doc_id = d.id "
            "GROUP BY d.id HAVING count(c.id) != d.n_chunks"
        ).fetchall()
        assert bad == [], "a document with missing chunks"
        orphans = store.conn.execute(
            "SELECT count(*) FROM chunks WHERE doc_id NOT IN (SELECT id FROM documents)"
        ).fetchone()[0]
        assert orphans == 0
        store.conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')")  # raises if out of step
        st = store.stats()
        assert st["embedded_chunks"] == st["chunks"]
        return int(st["documents"])
    finally:
        store.close()


def _ingest_and_kill(root: Path, docs: Path) -> None:
    """Run `add` in a child process and SIGKILL it after KILL_AFTER documents."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(docs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            assert line.split()[0] != "finished"
            if int(line.split()[0]) >= KILL_AFTER:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""


async def test_kill_9_mid_ingest_leaves_a_consistent_store_and_add_resumes(tmp_path: Path) -> None:
    docs = _docs(tmp_path)
    root = tmp_path / "rag"
    _ingest_and_kill(root, docs)

    stored = _check_consistent(root / "rag.sqlite3")
    assert KILL_AFTER <= stored < N_DOCS

    svc = RagService(RagSection(), root)
    again = await svc.add([str(docs)])
    assert (again["unchanged"], again["added"], again["failed"]) == (stored, N_DOCS - stored, 0)
    st = await svc.stats()
    assert st["documents"] == N_DOCS and st["dense_index_size"] == st["chunks"]
    last = await svc.query(f"zq{N_DOCS - 1}x", mode="bm25")
    assert last[0].source.endswith(f"doc{N_DOCS - 1:04}.txt")
    first = await svc.query("Document 3 talks about subject3", mode="dense", k=3)
    assert any(h.source.endswith("doc0003.txt") for h in first)
    await svc.aclose()
    _check_consistent(root / "rag.sqlite3")
