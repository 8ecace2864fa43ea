"""`village rag ...` and the rag.* methods against a real `village run` daemon."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.control.client import ControlClient
from node.rag.cli import ProgressBar
from tests.test_cli import running_daemon, village

from .helpers import make_pdf


@pytest.fixture
def daemon() -> Iterator[Path]:
    """A running `village run` (hybrid retrieval, the real model); yields its data dir."""
    with running_daemon("[rag]\nchunk_chars = 400\nchunk_overlap_chars = 50\n", "vrag-") as (data, _proc):
        yield data


def rag(data: Path, *args: str) -> tuple[int, Any]:
    r = village("rag", *args, "--json", "--data-dir", str(data), timeout=120)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else r.stderr)


def test_rag_cli_against_a_running_node(daemon: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "tea.md").write_text("# Tea\n\nGreen tea is steeped at 80 degrees for two minutes.")
    (docs / "bread.html").write_text("<title>Bread</title><p>Sourdough bread rises with a wild yeast starter.</p>")
    (docs / "rocks.pdf").write_bytes(make_pdf("Granite is an igneous rock rich in quartz", title="Rocks"))
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")

    code, added = rag(daemon, "add", str(docs))
    assert code == 1  # one file failed, and the exit code says so
    assert (added["added"], added["failed"]) == (3, 1)
    assert "not a readable PDF" in next(o["detail"] for o in added["outcomes"] if o["status"] == "failed")

    code, res = rag(daemon, "query", "how", "long", "to", "brew", "green", "tea")
    assert code == 0
    top = res["results"][0]
    assert top["source"].endswith("tea.md") and top["title"] == "Tea"
    assert {"id", "doc_id", "score", "trust", "uncertainty", "snippet", "belief", "disbelief"} <= set(top)
    code, res = rag(daemon, "query", "quartz", "mineral", "--mode", "bm25", "-k", "1")
    assert [r["title"] for r in res["results"]] == ["Rocks"]

    code, fb = rag(daemon, "feedback", str(top["id"]), "bad")
    assert code == 0 and fb["source"]["beta"] > fb["source"]["alpha"] and fb["chunk"]["trust"] < top["trust"]
    code, res = rag(daemon, "query", "green tea")
    assert res["results"][0]["trust"] == pytest.approx(fb["chunk"]["trust"])
    code, err = rag(daemon, "feedback", "999999", "good")
    assert code == 1 and "no result with id 999999" in err

    code, st = rag(daemon, "stats")
    assert (st["documents"], st["dense_index_size"], st["mode"]) == (3, st["chunks"], "hybrid")
    code, listed = rag(daemon, "documents")
    assert sorted(Path(d["source"]).name for d in listed) == ["bread.html", "rocks.pdf", "tea.md"]

    code, shared = rag(daemon, "share", str(docs / "bread.html"))
    assert code == 0 and (shared["documents"], shared["changed"], shared["shared"]) == (1, 1, True)
    code, listed2 = rag(daemon, "documents")
    assert [Path(d["source"]).name for d in listed2 if d["shared"]] == ["bread.html"]
    code, unshared = rag(daemon, "unshare", str(shared["doc_ids"][0]))
    assert code == 0 and (unshared["changed"], unshared["shared"]) == (1, False)
    code, listed2 = rag(daemon, "documents")
    assert not any(d["shared"] for d in listed2)

    code, removed = rag(daemon, "remove", str(docs / "tea.md"))
    assert code == 0 and removed["documents"] == 1
    code, res = rag(daemon, "query", "green tea", "--mode", "bm25")
    assert all(not r["source"].endswith("tea.md") for r in res["results"])
    code, removed = rag(daemon, "remove", str(listed[1]["id"]))
    assert removed["documents"] == 1
    code, st = rag(daemon, "stats")
    assert st["documents"] == 1

    # The progress stream the terminal bar is drawn from: one notification per file, then the result.
    events: list[tuple[str, Any]] = []
    with ControlClient(daemon / "control.sock") as client:
        result = client.call_streaming("rag.add", lambda m, p: events.append((m, p)), paths=[str(docs)], progress=True)
    assert [p["done"] for _, p in events] == [1, 2, 3, 4] and {m for m, _ in events} == {"rag.progress"}
    assert result["added"] == 2 and result["unchanged"] == 1
    bar = ProgressBar(io.StringIO())
    for m, p in events:
        bar.update(m, p)
    assert "[" + "#" * 30 + "] 4/4" in bar.out.getvalue()  # type: ignore[attr-defined]
