"""Differential conformance: our knowledge-graph memory against the reference ``@modelcontextprotocol/server-memory``
from npm. Both are driven through the SDK's ``mcp.Client`` with the same hypothesis-generated sequences of tool
calls; after every step the results (error flag, error text, structured result) and the whole graph (read_graph,
in order) must be equal. A few sequences in the default suite, 200 in the slow one.

The same runs against the anchor's Bolt backend (anchor.mcp_memory on the FalkorDB of ``scripts/services``):
there, after every step, a fresh load of what the server holds must also equal the reference's graph. Skipped,
with the reason, when no Bolt server can be started or reached."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import TextResourceContents

from node.mcp.graph import GraphStore, KnowledgeGraph, Storage
from node.mcp.memory_tools import memory_resource, memory_tools
from node.mcp.registry import Caller, Registry
from node.mcp.server import LocalBackend, build_server
from tests.mcp.helpers import mcp_settings, text_of
from tests.mcp.reference import memory_server_script

# Few names, so calls collide: duplicates, existing names, dangling relations. Case pairs and letters whose lower
# case is special (final sigma, dotted I, sharp s) exercise the case-insensitive search.
NAMES = ["Ada", "ada", "Bob", "Cy", "ΟΔΟΣ", "İz", "Straße", "x y", ""]
WORDS = ["likes trio", "LIKES", "σ", "Σ", "ß", "i", "ı", "", "obs 1", "a\nb"]
TYPES = ["person", "Person", "cat", "πόλη"]
name = st.one_of(st.sampled_from(NAMES), st.text("aAbB", max_size=3))
word = st.one_of(st.sampled_from(WORDS), st.text("aAbBσΣ ", max_size=4))
entity = st.fixed_dictionaries(
    {"name": name, "entityType": st.sampled_from(TYPES), "observations": st.lists(word, max_size=3)}
)
relation = st.fixed_dictionaries(
    {"from": name, "to": name, "relationType": st.sampled_from(["knows", "Knows", "owns"])}
)
call = st.one_of(
    st.tuples(st.just("create_entities"), st.fixed_dictionaries({"entities": st.lists(entity, max_size=4)})),
    st.tuples(st.just("create_relations"), st.fixed_dictionaries({"relations": st.lists(relation, max_size=4)})),
    st.tuples(
        st.just("add_observations"),
        st.fixed_dictionaries(
            {
                "observations": st.lists(
                    st.fixed_dictionaries({"entityName": name, "contents": st.lists(word, max_size=3)}), max_size=3
                )
            }
        ),
    ),
    st.tuples(st.just("delete_entities"), st.fixed_dictionaries({"entityNames": st.lists(name, max_size=3)})),
    st.tuples(
        st.just("delete_observations"),
        st.fixed_dictionaries(
            {
                "deletions": st.lists(
                    st.fixed_dictionaries({"entityName": name, "observations": st.lists(word, max_size=3)}),
                    max_size=3,
                )
            }
        ),
    ),
    st.tuples(st.just("delete_relations"), st.fixed_dictionaries({"relations": st.lists(relation, max_size=3)})),
    st.tuples(st.just("search_nodes"), st.fixed_dictionaries({"query": st.one_of(name, word)})),
    st.tuples(st.just("open_nodes"), st.fixed_dictionaries({"names": st.lists(name, max_size=3)})),
    st.tuples(st.just("read_graph"), st.just({})),
)
sequences = st.lists(call, min_size=1, max_size=25)


def observed(result: Any) -> dict[str, Any]:
    """What a caller can observe of one result: the error flag and text, or the structured result and the JSON
    value of the text (the reference pretty-prints with JSON.stringify; the spacing is not compared)."""
    text = text_of(result)
    if result.is_error:
        return {"error": text}
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    return {"structured": result.structured_content, "text": value}


async def compare(
    script: Path, steps: list[tuple[str, dict[str, Any]]], storage: Callable[[], Storage] | None = None
) -> None:
    graph = GraphStore(None, mcp_settings(), storage=storage)
    # A second connection to the same store: after every step, what it holds is loaded afresh through it.
    checker = await trio.to_thread.run_sync(storage) if storage is not None else None
    registry = Registry(mcp_settings(state_calls_per_min=1_000_000.0, state_calls_burst=100_000), now=trio.current_time)
    registry.extend(memory_tools(graph))
    registry.add_resource(memory_resource(graph))
    ours = build_server(LocalBackend(registry, lambda ctx: Caller("local", "conformance")))
    with tempfile.TemporaryDirectory() as tmp:
        env = {"PATH": os.environ.get("PATH", ""), "MEMORY_FILE_PATH": str(Path(tmp) / "memory.jsonl")}
        params = StdioServerParameters(command=shutil.which("node") or "node", args=[str(script)], env=env)
        async with Client(ours) as mine, Client(params) as ref:
            ref_tools = {t.name: t.input_schema for t in (await ref.list_tools()).tools}
            my_tools = {t.name: t.input_schema for t in (await mine.list_tools()).tools}
            assert my_tools == {n: {k: v for k, v in s.items() if k != "$schema"} for n, s in ref_tools.items()}
            for i, (tool, args) in enumerate(steps):
                got, want = await mine.call_tool(tool, args), await ref.call_tool(tool, args)
                assert observed(got) == observed(want), f"step {i}: {tool} {args}"
                g_got, g_want = await mine.call_tool("read_graph", {}), await ref.call_tool("read_graph", {})
                assert g_got.structured_content == g_want.structured_content, f"graph after step {i}: {tool} {args}"
                if checker is not None:  # what the store holds, loaded afresh
                    fresh = await trio.to_thread.run_sync(lambda: KnowledgeGraph(checker, mcp_settings()))
                    stored = fresh.read_graph()
                    assert stored == g_want.structured_content, f"stored graph after step {i}: {tool} {args}"
            want_res = (await ref.read_resource("memory://knowledge-graph")).contents[0]
            got_res = (await mine.read_resource("memory://knowledge-graph")).contents[0]
            assert isinstance(want_res, TextResourceContents) and isinstance(got_res, TextResourceContents)
            assert json.loads(got_res.text) == json.loads(want_res.text)
            assert got_res.mime_type == want_res.mime_type == "application/json"
    if checker is not None:
        await graph.run("forget")
        checker.close()
    await graph.aclose()


def check(steps: list[tuple[str, dict[str, Any]]], storage: Callable[[], Storage] | None = None) -> None:
    trio.run(compare, memory_server_script(), steps, storage)


@pytest.fixture(scope="module")
def bolt() -> Callable[[], Callable[[], Storage]]:
    """A factory of fresh namespaces on the Bolt server of ``scripts/services`` (started if need be, as the anchor's
    tests do); skips with the reason when there is none."""
    try:
        from anchor.mcp_memory import BoltMemoryStorage
        from anchor.services_settings import ServicesError
        from anchor.stores.errors import StoreError
        from tools.services import DEFAULT_DIR, Services
    except ImportError as exc:
        pytest.skip(f"no anchor extra / services tooling: {exc}")
    try:
        settings = Services(Path(os.environ.get("AIVILLAGE_SERVICES_DIR", DEFAULT_DIR)), fast=True).up()
    except (ServicesError, OSError) as exc:
        pytest.skip(f"no Bolt server: scripts/services up failed: {exc}")
    assert settings is not None
    url = settings.graph.bolt_url
    key = secrets.token_bytes(32)
    try:
        BoltMemoryStorage(url, namespace="probe", key=key, timeout_s=5.0).load()
    except StoreError as exc:
        pytest.skip(f"no Bolt server at {url}: {exc}")

    def fresh_namespace() -> Callable[[], Storage]:
        ns = "conformance:" + secrets.token_hex(6)
        return lambda: BoltMemoryStorage(url, namespace=ns, key=key, timeout_s=5.0)

    return fresh_namespace


HEALTH = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]


@settings(max_examples=4, deadline=None, suppress_health_check=HEALTH)
@given(sequences)
def test_memory_matches_the_reference_server(steps: list[tuple[str, dict[str, Any]]]) -> None:
    check(steps)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~1.2 s per sequence (a fresh reference process each)
@settings(max_examples=200, deadline=None, suppress_health_check=HEALTH)
@given(sequences)
def test_memory_matches_the_reference_server_at_length(steps: list[tuple[str, dict[str, Any]]]) -> None:
    check(steps)


@settings(max_examples=3, deadline=None, suppress_health_check=HEALTH)
@given(sequences)
def test_memory_on_bolt_matches_the_reference_server(
    bolt: Callable[[], Callable[[], Storage]], steps: list[tuple[str, dict[str, Any]]]
) -> None:
    check(steps, bolt())


@pytest.mark.slow
@pytest.mark.timeout(3600)
@settings(max_examples=100, deadline=None, suppress_health_check=HEALTH)
@given(sequences)
def test_memory_on_bolt_matches_the_reference_server_at_length(
    bolt: Callable[[], Callable[[], Storage]], steps: list[tuple[str, dict[str, Any]]]
) -> None:
    check(steps, bolt())


def test_the_known_tricky_cases_match() -> None:
    ada = {"name": "Ada", "entityType": "person", "observations": ["x", "x"]}
    check(
        [
            ("create_entities", {"entities": [ada, ada, {**ada, "name": "Bob"}]}),
            ("create_relations", {"relations": [{"from": "Ada", "to": "Bob", "relationType": "knows"}] * 2}),
            ("create_relations", {"relations": [{"from": "Zed", "to": "Ada", "relationType": "knows"}]}),
            ("add_observations", {"observations": [{"entityName": "Ada", "contents": ["y", "y", "x"]}]}),
            (
                "add_observations",
                {
                    "observations": [
                        {"entityName": "Bob", "contents": ["z"]},
                        {"entityName": "Nobody", "contents": ["z"]},
                    ]
                },
            ),
            ("delete_observations", {"deletions": [{"entityName": "Ada", "observations": ["x"]}]}),
            ("search_nodes", {"query": "Y"}),
            ("open_nodes", {"names": ["Ada", "Zed"]}),
            ("delete_entities", {"entityNames": ["Ada"]}),
        ]
    )
