"""rag_add streams: one file's bytes at a time per call, a node-wide budget across concurrent calls, a file reached
twice read once, error entries capped, hard-linked files refused."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel

from node.mcp.confine import MAX_ERRORS, read_confined
from node.mcp.node_tools import ByteBudget, RagAddArgs, rag_add_confined
from node.rag.extract import SUPPORTED_SUFFIXES

MIB = 1024 * 1024


async def test_concurrent_rag_add_calls_hold_at_most_the_budget(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    for i in range(18):
        (root / f"f{i:02}.txt").write_bytes((f"file {i} " * (MIB // 8))[:MIB].encode())
    budget = ByteBudget(MIB)
    limiter = trio.CapacityLimiter(1)
    seen: list[str] = []
    held_at_add: list[int] = []

    async def add_text(source: str, text: str, title: str, mime: str, shared: bool) -> dict[str, Any]:
        seen.append(source)
        held_at_add.append(budget.held)
        await trio.lowlevel.checkpoint()  # let the other calls run while this one holds its file
        return {"source": source, "status": "added"}

    results: list[dict[str, Any]] = []

    async def call(paths: list[str]) -> None:
        args = RagAddArgs(paths=paths, shared=False)
        out = await rag_add_confined(
            args, rag_roots=[str(root)], add_text=add_text, max_file_bytes=4 * MIB, limiter=limiter, budget=budget
        )
        results.append(out)

    tracemalloc.start()
    try:
        await call([str(root / "f17.txt")])  # one file alone: what reading and extracting one file costs at peak
        _, one_file = tracemalloc.get_traced_memory()
        results.clear()
        seen.clear()
        tracemalloc.reset_peak()
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for k in range(3):  # three calls of six files each, each file also named twice
                    names = [str(root / f"f{i:02}.txt") for i in range(6 * k, 6 * k + 6)]
                    nursery.start_soon(call, names + names)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sorted(r["files"] for r in results) == [6, 6, 6]  # each file once, though named twice
    assert sorted(seen) == [str(root.resolve() / f"f{i:02}.txt") for i in range(18)]
    assert budget.peak <= MIB and max(held_at_add) <= MIB and budget.held == 0
    # 18 MiB of files went through three concurrent calls; at once they held about what one file costs
    assert peak < one_file + 3 * MIB, (peak, one_file)


async def test_a_file_over_the_budget_is_skipped_with_the_setting_named(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_bytes(b"x" * (2 * MIB))

    async def add_text(*_: Any) -> dict[str, Any]:
        raise AssertionError("not read")

    out = await rag_add_confined(
        RagAddArgs(paths=[str(tmp_path / "big.txt")], shared=False),
        rag_roots=[str(tmp_path)],
        add_text=add_text,
        max_file_bytes=4 * MIB,
        limiter=trio.CapacityLimiter(1),
        budget=ByteBudget(MIB),
    )
    assert out["files"] == 0 and "mcp.rag_add_max_held_bytes" in out["errors"][0]["error"]


def test_errors_are_capped_and_hard_links_refused(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text("the door code is 4921")
    for i in range(MAX_ERRORS + 50):
        (root / f"l{i:03}.txt").symlink_to(outside)
    os.link(outside, root / "zz-hard.txt")  # a hard link inside the root to a file outside
    out = read_confined([str(root)], [str(root)], suffixes=SUPPORTED_SUFFIXES, max_file_bytes=MIB)
    assert out.files == []
    assert len(out.errors) == MAX_ERRORS and out.errors_more == 51  # 50 more symlinks and the hard link
    named = read_confined([str(root / "zz-hard.txt")], [str(root)], suffixes=SUPPORTED_SUFFIXES, max_file_bytes=MIB)
    assert named.files == [] and "hard links" in named.errors[0]["error"]
