"""The knowledge-graph memory's semantics (those of the reference memory server), persistence and bounds."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from node.errors import NodeError
from node.mcp.errors import MemoryFull, ToolError
from node.mcp.graph import Changes, KnowledgeGraph, SqliteStorage
from tests.mcp.helpers import mcp_settings


def ent(name: str, etype: str = "person", *obs: str) -> dict[str, object]:
    return {"name": name, "entityType": etype, "observations": list(obs)}


def rel(a: str, b: str, t: str = "knows") -> dict[str, str]:
    return {"from": a, "to": b, "relationType": t}


def test_deleting_an_entity_removes_its_relations_both_ways(tmp_path: Path) -> None:
    g = KnowledgeGraph(tmp_path / "m.sqlite3", mcp_settings())
    g.create_entities([ent("Ada"), ent("Bob"), ent("Cy")])
    g.create_relations([rel("Ada", "Bob"), rel("Cy", "Ada", "admires"), rel("Bob", "Cy")])
    g.delete_entities(["Ada"])
    assert g.read_graph() == {"entities": [ent("Bob"), ent("Cy")], "relations": [rel("Bob", "Cy")]}


def test_create_skips_existing_names_but_not_duplicates_within_one_call(tmp_path: Path) -> None:
    g = KnowledgeGraph(None, mcp_settings())
    assert g.create_entities([ent("A")]) == [ent("A")]
    assert g.create_entities([ent("A", "other"), ent("B"), ent("B", "again")]) == [ent("B"), ent("B", "again")]
    assert [e["name"] for e in g.read_graph()["entities"]] == ["A", "B", "B"]
    assert g.create_relations([rel("A", "B"), rel("A", "B")]) == [rel("A", "B"), rel("A", "B")]
    assert g.create_relations([rel("A", "B"), rel("A", "Z")]) == [rel("A", "Z")]  # dangling ends are accepted


def test_add_observations_is_all_or_nothing_and_skips_known_contents(tmp_path: Path) -> None:
    g = KnowledgeGraph(None, mcp_settings())
    g.create_entities([ent("A", "t", "x")])
    with pytest.raises(ToolError, match="Entity with name Nope not found"):
        g.add_observations([{"entityName": "A", "contents": ["y"]}, {"entityName": "Nope", "contents": ["z"]}])
    assert g.read_graph()["entities"] == [ent("A", "t", "x")]
    out = g.add_observations([{"entityName": "A", "contents": ["x", "y", "y"]}, {"entityName": "A", "contents": ["y"]}])
    assert out == [{"entityName": "A", "addedObservations": ["y", "y"]}, {"entityName": "A", "addedObservations": []}]


def test_search_is_a_case_insensitive_substring_match_and_brings_touching_relations(tmp_path: Path) -> None:
    g = KnowledgeGraph(None, mcp_settings())
    g.create_entities([ent("Ada Lovelace", "Mathematician", "wrote the first PROGRAM"), ent("Bob", "cat"), ent("Cy")])
    g.create_relations([rel("Bob", "Ada Lovelace"), rel("Bob", "Cy")])
    assert [e["name"] for e in g.search_nodes("program")["entities"]] == ["Ada Lovelace"]
    assert g.search_nodes("program")["relations"] == [rel("Bob", "Ada Lovelace")]
    assert [e["name"] for e in g.search_nodes("MATHEM")["entities"]] == ["Ada Lovelace"]
    assert [e["name"] for e in g.search_nodes("CAT")["entities"]] == ["Bob"]
    assert g.search_nodes("")["entities"] == g.read_graph()["entities"]  # the empty string is in every name
    opened = g.open_nodes(["Cy", "nobody"])
    assert opened == {"entities": [ent("Cy")], "relations": [rel("Bob", "Cy")]}


def test_memory_survives_a_reopen_and_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "mcp" / "memory.sqlite3"
    g = KnowledgeGraph(path, mcp_settings())
    g.create_entities([ent("A", "t", "1"), ent("B")])
    g.create_relations([rel("A", "B")])
    g.add_observations([{"entityName": "B", "contents": ["2"]}])
    g.delete_observations([{"entityName": "A", "observations": ["1"]}])
    before = g.read_graph()
    g.close()
    again = KnowledgeGraph(path, mcp_settings())
    assert again.read_graph() == before
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert again.forget() == {"entities": 2, "relations": 1}
    assert KnowledgeGraph(path, mcp_settings()).read_graph() == {"entities": [], "relations": []}


def test_bounds_in_entries_and_bytes_refuse_without_changing_anything(tmp_path: Path) -> None:
    g = KnowledgeGraph(None, mcp_settings(memory_max_entities=10, memory_max_bytes=4096, memory_max_string_bytes=64))
    g.create_entities([ent(f"e{i}") for i in range(10)])
    with pytest.raises(MemoryFull, match="memory_max_entities"):
        g.create_entities([ent("one too many")])
    with pytest.raises(MemoryFull, match="memory_max_string_bytes"):
        g.add_observations([{"entityName": "e1", "contents": ["x" * 65]}])
    with pytest.raises(MemoryFull, match="memory_max_bytes"):
        g.add_observations([{"entityName": "e1", "contents": [f"{i:063d}" for i in range(70)]}])
    assert g.read_graph()["entities"][1] == ent("e1")
    g.delete_entities(["e0", "e1"])
    assert g.stats()["entities"] == 8
    assert g.bytes == sum(len(f"e{i}") + len("person") for i in range(2, 10))


def test_a_query_never_matches_across_two_fields(tmp_path: Path) -> None:
    g = KnowledgeGraph(None, mcp_settings())
    g.create_entities([ent("a", "b", "c")])
    assert g.search_nodes("a\0b")["entities"] == []
    assert g.search_nodes("b\0c")["entities"] == []
    g.create_entities([ent("x\0y", "t")])
    assert [e["name"] for e in g.search_nodes("X\0Y")["entities"]] == ["x\0y"]


class FailingStorage(SqliteStorage):
    """The real SQLite storage, whose writes can be made to fail (a full disk, a store that went away)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.fail = False

    def apply(self, changes: Changes) -> None:
        if self.fail:
            raise NodeError("the store refused the write")
        super().apply(changes)


def test_a_failed_write_changes_nothing_in_memory_either() -> None:
    storage = FailingStorage()
    g = KnowledgeGraph(storage, mcp_settings())
    g.create_entities([ent("A", "t", "x"), ent("B")])
    g.create_relations([rel("A", "B")])
    before, size = g.read_graph(), g.bytes
    storage.fail = True
    ops: list[tuple[Any, Any]] = [
        (g.create_entities, [ent("C")]),
        (g.create_relations, [rel("B", "A")]),
        (g.add_observations, [{"entityName": "A", "contents": ["y"]}]),
        (g.delete_observations, [{"entityName": "A", "observations": ["x"]}]),
        (g.delete_relations, [rel("A", "B")]),
        (g.delete_entities, ["A"]),
    ]
    for op, arg in ops:
        with pytest.raises(NodeError):
            op(arg)
        assert g.read_graph() == before and g.bytes == size, op
    with pytest.raises(NodeError):
        g.forget()
    assert g.read_graph() == before
    storage.fail = False
    g.add_observations([{"entityName": "A", "contents": ["y"]}])
    assert KnowledgeGraph(storage, mcp_settings()).read_graph()["entities"][0] == ent("A", "t", "x", "y")
