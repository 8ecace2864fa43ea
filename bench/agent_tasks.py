"""End-to-end task success of the agents: scripted tasks (``tests/data/agent_tasks.toml``) with checkable outcomes
on a real three-node in-process village.

    python bench/agent_tasks.py [--only ID ...] [--llm N] [--models M ...] [--heldout]

alice (knowledge base, MCP registry, agents), bob and carol run as real :class:`node.node.Node` objects over
in-memory links; each task is one ``ask`` to alice's King (routed, unless the task names the agent), then the
task's checks on what really happened (a message in the right peer's inbox, the cited document, a certificate,
a verified offer signature, a Python function that parses, ...). Latency is the ``ask`` call, wall clock.
``--llm N`` runs the first N tasks marked ``llm`` (default: all) with each shipped local model named by
``--models`` (default: Gemma 3 270M and SmolLM2-135M via llama-cpp-python, :data:`BENCH_LLM`; skipped with a
reason if absent), and with ``--heldout`` also the held-out LLM tasks of ``tests/data/agent_tasks_heldout.toml``
(the report set: never tuned on, so scored only when asked for, not on every tuning run), reported apart; then
each model's footprint in a child process (load time, peak RSS, tokens/s) and the same requests with the model
off (the latency without it, in the same run); the load average is printed at the start and the end.
``run_tasks`` is what ``tests/agents/test_tasks.py`` calls on a handful of tasks.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.agents.market import make_offer, offer_from_json, verify
from node.agents.service import AgentsService
from node.agents.settings import AgentsSettings, LlmSettings
from node.daemon import prepare_process_env
from node.inbox import InboxMessage
from node.mcp.service import McpService
from node.mcp.settings import McpSettings
from node.node import Node
from node.rag.plugin import rag_service
from node.transports.memory import MemoryNetwork
from tools.inprocess import start_node

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "tests" / "data" / "agent_tasks.toml"
HELDOUT_TASKS = ROOT / "tests" / "data" / "agent_tasks_heldout.toml"
DELIVERY_WAIT_S = 20.0  # a message to a directly linked peer arrives in milliseconds; this is a failure bound
# The bench's local model: a small context and capped answers keep a run short on a shared machine (Magi's hidden
# notes take 96 tokens and its answer up to 160; Polyglot 48; Tutor 48).
BENCH_LLM = LlmSettings(context_tokens=1024, max_answer_tokens=160)


def load_tasks(path: Path = TASKS) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    data = tomllib.loads(path.read_text())
    return list(data.get("document", [])), list(data["task"])


FOOTPRINT = """
import json, sys, time
from llama_cpp import Llama
from node.agents.llm import shipped_gguf
def kb(field):  # /proc, not ru_maxrss: that one keeps the forking parent's peak across exec
    return next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith(field + ":"))
rss0 = kb("VmRSS")
t0 = time.perf_counter()
m = Llama(model_path=str(shipped_gguf(sys.argv[1])), n_ctx=1024, n_threads=2, seed=0, verbose=False)
load_s = time.perf_counter() - t0
t0 = time.perf_counter()
out = m.create_completion("The village well", max_tokens=64, temperature=0, seed=0)
gen_s = time.perf_counter() - t0
n = out["usage"]["completion_tokens"]
print(json.dumps({"load_s": load_s, "tokens_per_s": n / gen_s, "rss_mb": kb("VmHWM") / 1024,
                  "model_rss_mb": (kb("VmRSS") - rss0) / 1024}))
"""


def model_footprint(model: str) -> str:
    """Load time, peak RSS and generation speed of one shipped model, in a fresh child process (as the daemon
    loads it: OMP_WAIT_POLICY=PASSIVE is inherited from prepare_process_env)."""
    import json
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", FOOTPRINT, model], capture_output=True, text=True, timeout=600, env=env, check=False
    )
    if out.returncode != 0:
        return f"failed: {out.stderr.strip()[-200:]}"
    f = json.loads(out.stdout.strip().splitlines()[-1])
    size = shipped_gguf_size(model) / 1e6
    return (
        f"load {f['load_s']:.2f} s, peak RSS {f['rss_mb']:.0f} MB (model +{f['model_rss_mb']:.0f} MB), "
        f"{f['tokens_per_s']:.1f} tokens/s (64 tokens, 2 threads), file {size:.0f} MB"
    )


def shipped_gguf_size(model: str) -> int:
    from node.agents.llm import shipped_gguf

    return shipped_gguf(model).stat().st_size


@dataclass
class Result:
    id: str
    ok: bool
    latency_s: float
    agent: str
    failures: list[str] = field(default_factory=list)
    answer: str = ""


@dataclass
class Village:
    alice: Node
    bob: Node
    carol: Node
    agents: AgentsService
    inboxes: dict[str, trio.MemoryReceiveChannel[InboxMessage]]
    carol_offer: str


async def _node(
    nursery: trio.Nursery, net: MemoryNetwork, tmp: Path, name: str, seed: int, services: Sequence[Any] = ()
) -> Node:
    """A node of the village (tools.inprocess): the knowledge base only where it runs services (alice)."""
    return await start_node(nursery, net, tmp, name, seed, rag=bool(services), services=services)


async def build_village(nursery: trio.Nursery, tmp: Path, documents: list[dict[str, Any]], llm: LlmSettings) -> Village:
    net = MemoryNetwork(seed=7, queue_frames=4096)
    await nursery.start(net.run)
    agents = AgentsService(AgentsSettings(budget_stored_bytes_per_peer=10), llm, tmp / "alice")
    alice = await _node(nursery, net, tmp, "alice", 1, [McpService(McpSettings()), agents])
    bob = await _node(nursery, net, tmp, "bob", 2)
    carol = await _node(nursery, net, tmp, "carol", 3)
    for other in (bob, carol):
        net.connect(alice.transports[0], other.transports[0])  # type: ignore[arg-type]
    for n, peers in ((alice, ("bob", "carol")), (bob, ("alice",)), (carol, ("alice",))):
        await n.wait_until(partial(_all_reachable, n, peers))
    rag = rag_service(alice)
    assert rag is not None
    for d in documents:
        await rag.add_text(d["source"], d["text"], title=d["title"], shared=bool(d.get("shared", False)))
    inboxes = {"bob": bob.subscribe_inbox(), "carol": carol.subscribe_inbox()}
    # What the ledger and the odds start from: bob stored one message on alice; alice delivered one to bob.
    mine = alice.subscribe_inbox()
    bob.send_private(alice.identity.peer_id_hex, "hello alice, bob here")
    await mine.receive()
    alice.unsubscribe_inbox(mine)
    mid = alice.send_private(bob.identity.peer_id_hex, "hello bob")
    await alice.wait_until(lambda: alice.outgoing[mid].state == "delivered")
    await inboxes["bob"].receive()
    # An offer carol made to alice, carried to alice's node (offers are kept locally; exchange is out of band).
    offer = make_offer(
        carol.identity.signing_key,
        give="relay_frames",
        give_amount=1000,
        want="storage_bytes",
        want_amount=5_000_000,
        now_ms=carol.clock.wall_ms(),
        ttl_s=3600,
        to=alice.identity.peer_id,
    )
    agents.offers.add(offer, alice.clock.wall_ms())
    return Village(alice, bob, carol, agents, inboxes, offer.id[:8])


def _all_reachable(node: Node, nicknames: Sequence[str]) -> bool:
    seen = {p["nickname"] for p in node.peers_view() if p["reachable"]}
    return all(n in seen for n in nicknames)


async def _received(v: Village, peer: str, text: str, *, private: bool) -> bool:
    with trio.move_on_after(DELIVERY_WAIT_S):
        async for m in v.inboxes[peer]:
            if m.text == text and m.private == private:
                return True
    return False


async def run_task(v: Village, task: dict[str, Any]) -> Result:
    request = task["request"].replace("{carol_offer}", v.carol_offer)
    sent_before = set(v.alice.outgoing)
    t0 = time.perf_counter()
    out = await v.agents.ask(request, agent=task.get("to"), confirm=bool(task.get("confirm", False)))
    latency = time.perf_counter() - t0
    first = out["steps"][0]
    fail: list[str] = []
    if "agent" in task and first["agent"] != task["agent"]:
        fail.append(f"routed to {first['agent']}, not {task['agent']}")
    if "steps" in task and [s["agent"] for s in out["steps"]] != task["steps"]:
        fail.append(f"steps {[s['agent'] for s in out['steps']]}")
    if "ok" in task and first["ok"] != task["ok"]:
        fail.append(f"ok is {first['ok']}")
    low = out["answer"].lower()
    fail += [f"answer lacks {c!r}" for c in task.get("contains", []) if c.lower() not in low]
    if "cites" in task:
        cited = first["sources"][0]["source"] if first["sources"] else None
        if cited != task["cites"]:
            fail.append(f"cites {cited}")
    if task.get("certified") and not (first["data"] or {}).get("certificate"):
        fail.append("no certificate")
    if task.get("signed_offer"):
        d = first["data"]
        if not (isinstance(d, dict) and "signature" in d and verify(offer_from_json(d))):
            fail.append("no verified offer")
    if task.get("compacted"):
        d = first["data"] or {}
        if not (d.get("rag", {}).get("db_bytes_after", 0) > 0 and d.get("agents", {}).get("traces_kept", 0) > 0):
            fail.append("not compacted")
    if task.get("python_def") and not python_function(first["text"]):
        fail.append("no Python function that parses")
    if task.get("question") and "?" not in first["text"]:
        fail.append("no question asked")
    if task.get("nothing_sent") and set(v.alice.outgoing) - sent_before:
        fail.append("a message was sent")
    if "delivered" in task:
        d = task["delivered"]
        if not await _received(v, d["peer"], d["text"], private=True):
            fail.append(f"{d['peer']} did not receive {d['text']!r}")
    if "public" in task and not await _received(v, "bob", task["public"], private=False):
        fail.append(f"bob did not receive the public {task['public']!r}")
    return Result(task["id"], not fail, latency, first["agent"], fail, first["text"])


def python_function(text: str) -> bool:
    """The answer holds a Python function that parses: the first fenced block with a ``def`` (or the text) from
    that ``def`` to the first line back at its indentation (usage examples after it are not judged)."""
    if "```" in text:
        blocks = text.split("```")[1:]  # an unclosed (truncated) or oddly fenced block counts too
        text = next((b.split("\n", 1)[-1] for b in blocks if "def " in b), "")
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("def ")), None)
    if start is None:
        return False
    indent = len(lines[start]) - len(lines[start].lstrip())
    body = [lines[start][indent:]]
    for ln in lines[start + 1 :]:
        if ln.strip() and len(ln) - len(ln.lstrip()) <= indent:
            break
        body.append(ln[indent:])
    try:
        tree = ast.parse("\n".join(body))
    except SyntaxError:
        return False
    return any(isinstance(n, ast.FunctionDef) for n in tree.body)


async def run_tasks(tmp: Path, tasks: list[dict[str, Any]], *, llm: LlmSettings | None = None) -> list[Result]:
    documents, _ = load_tasks()
    results: list[Result] = []
    async with trio.open_nursery() as nursery:
        v = await build_village(nursery, tmp, documents, llm or LlmSettings(backend="off"))
        for t in tasks:
            results.append(await run_task(v, t))
        nursery.cancel_scope.cancel()
    return results


def summary(name: str, results: list[Result]) -> str:
    ok = sum(r.ok for r in results)
    p50 = statistics.median(r.latency_s for r in results) * 1000 if results else 0.0
    return (
        f"{name}: {ok}/{len(results)} = {ok / max(1, len(results)):.1%} tasks succeeded "
        f"(goal 85 %); ask latency p50 {p50:.0f} ms"
    )


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="task ids to run")
    ap.add_argument("--llm", type=int, default=100, help="tasks marked llm to run with the local model (0: none)")
    ap.add_argument("--models", nargs="*", default=["gemma3-270m", "smollm2-135m"], help="shipped local models")
    ap.add_argument("--heldout", action="store_true", help="also score the held-out LLM tasks (the report set)")
    ap.add_argument("--skip-plain", action="store_true", help="only the LLM tasks")
    ap.add_argument("--skip-off", action="store_true", help="not the LLM tasks again with the model off")
    ap.add_argument("--answers", type=Path, help="write every LLM task's answer here (JSON lines), to read by eye")
    return ap


def chosen_heldout(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The held-out LLM tasks this run scores: none unless ``--heldout`` (the report set is not for tuning)."""
    if not args.heldout:
        return []
    return [t for t in load_tasks(HELDOUT_TASKS)[1] if not args.only or t["id"] in args.only]


def main() -> None:
    args = parser().parse_args()
    prepare_process_env()  # as the daemon does (OMP_WAIT_POLICY for the local model), before any thread starts
    print(f"tasks.load_average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the start (2 cores)", flush=True)
    _, tasks = load_tasks()
    chosen = [t for t in tasks if not args.only or t["id"] in args.only]
    plain = [] if args.skip_plain else [t for t in chosen if not t.get("llm")]
    if plain:
        with tempfile.TemporaryDirectory() as tmp:
            results = trio.run(run_tasks, Path(tmp) / "plain", plain)
        for r in results:
            if not r.ok:
                print(f"  FAILED {r.id} ({r.agent}): {'; '.join(r.failures)}", flush=True)
        print(summary("tasks.success_without_llm", results), flush=True)
    with_llm = [t for t in chosen if t.get("llm")][: args.llm]
    heldout = chosen_heldout(args)
    if not with_llm and not heldout:
        return
    from node.agents.llm import llama_available

    for model in args.models:
        why = llama_available(model)
        if why is not None:
            print(f"tasks.{model}: skipped ({why})", flush=True)
            continue
        settings = dataclasses.replace(BENCH_LLM, model=model)
        with tempfile.TemporaryDirectory() as tmp:
            llm_results = trio.run(partial(run_tasks, Path(tmp) / "llm", [*with_llm, *heldout], llm=settings))
        for r in llm_results:
            if not r.ok:
                print(f"  FAILED {r.id} ({r.agent}): {'; '.join(r.failures)} -- answered {r.answer[:80]!r}", flush=True)
        if args.answers:
            import json

            with args.answers.open("a") as f:
                for r in llm_results:
                    f.write(json.dumps({"model": model, "id": r.id, "ok": r.ok, "answer": r.answer}) + "\n")
        dev = llm_results[: len(with_llm)]
        held = llm_results[len(with_llm) :]
        if dev:
            print(summary(f"tasks.{model}.success_with_llm (tuned-on set)", dev), flush=True)
        if held:
            print(summary(f"tasks.{model}.heldout_success_with_llm (report set, never tuned on)", held), flush=True)
        lat = [r.latency_s * 1000 for r in llm_results]
        print(f"tasks.{model}.llm_latency: p50 {statistics.median(lat):.0f} ms, max {max(lat):.0f} ms", flush=True)
        print(f"tasks.{model}.footprint: {model_footprint(model)}", flush=True)
    # The same requests without the model, in the same run: what the LLM costs per ask (answers fall back or
    # refuse, so success here is not the point).
    if not args.skip_off:
        with tempfile.TemporaryDirectory() as tmp:
            off = trio.run(run_tasks, Path(tmp) / "off", [*with_llm, *heldout])
        print(summary("tasks.same_requests_without_llm", off).replace("(goal 85 %)", "(fallbacks)"), flush=True)
    print(f"tasks.load_average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end", flush=True)


if __name__ == "__main__":
    main()
